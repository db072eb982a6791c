"""A crafted checkpoint cannot make prediction, interpretation or export allocate without bound: every
field they read is checked before anything is built, and one out of bounds is one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.predict import Predictor
from tests.helpers import make_image, train_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path, _ = train_checkpoint("classification", tmp_path_factory.mktemp("ck"))
    return path


def _crafted(source: Path, folder: Path, change) -> Path:
    ck = torch.load(source, map_location="cpu", weights_only=True)
    change(ck)
    out = folder / "crafted.ckpt"
    torch.save(ck, out)
    return out


def _set(*keys, value):
    def change(ck):
        node = ck
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


CRAFTED = {
    "lightcycle_inference.size is 12000, outside 8..4096": _set("lightcycle_inference", "size", value=12000),
    "lightcycle_inference.size must be a whole number, got str": _set("lightcycle_inference", "size", value="224"),
    "lightcycle_inference.std entry 1 is 0, outside (0, 10]": _set("lightcycle_inference", "std", value=[0.2, 0.0, 0.2]),
    "lightcycle_inference.mean has 1,000,000 entries, outside 3..3": _set("lightcycle_inference", "mean", value=[0.5] * 10**6),
    "lightcycle_inference.resize is 'zoom', not one of crop, pad, squish": _set("lightcycle_inference", "resize", value="zoom"),
    "lightcycle_inference.min_scale must be a finite number, got nan": _set("lightcycle_inference", "min_scale", value=float("nan")),
    "hyper_parameters.task.class_names has 200,000 entries, outside 1..10,000":
        _set("hyper_parameters", "task", "class_names", value=[f"c{i}" for i in range(200_000)]),
    "hyper_parameters.task.class_names entry 1 is 5,000 characters long (at most 1,000)":
        _set("hyper_parameters", "task", "class_names", value=["a", "b" * 5000]),
    "hyper_parameters.task.label_smoothing is 7, outside [0, 1]": _set("hyper_parameters", "task", "label_smoothing", value=7.0),
    "hyper_parameters.task.num_points is 1000000000, outside 1..10000":
        _set("hyper_parameters", "task", "num_points", value=10**9),
    "hyper_parameters.dropout must be a finite number, got 'x'": _set("hyper_parameters", "dropout", value="x"),
    "FolderDataModule.size is 100000, outside 8..4096":
        lambda ck: (ck.pop("lightcycle_inference"), ck.__setitem__("FolderDataModule", {"size": 100000})),
}


@pytest.mark.parametrize("expected", list(CRAFTED))
def test_a_checkpoint_field_out_of_bounds_is_refused_naming_the_field(expected, checkpoint, tmp_path):
    crafted = _crafted(checkpoint, tmp_path, CRAFTED[expected])
    with pytest.raises(LightcycleError) as info:
        VisionModule.load(crafted)
    message = str(info.value)
    assert message.startswith(f"checkpoint {crafted}: {expected}"), message
    assert len(message.splitlines()) == 1 and len(message) < 300


def test_an_unknown_task_setting_is_one_line(checkpoint, tmp_path):
    crafted = _crafted(checkpoint, tmp_path, _set("hyper_parameters", "task", "exec", value="os.system"))
    with pytest.raises(LightcycleError, match="task classification: .*unexpected keyword argument 'exec'"):
        VisionModule.load(crafted)


@pytest.mark.slow
def test_predicting_with_a_huge_recorded_size_is_refused_before_any_allocation(checkpoint, tmp_path):
    """`lightcycle_inference.size=12000` made predicting one 40x40 picture take 4.7 GB: now the CLI
    answers in one line, with the process's peak memory that of loading a tiny model."""
    crafted = _crafted(checkpoint, tmp_path, _set("lightcycle_inference", "size", value=12000))
    import numpy as np

    make_image(tmp_path / "x.png", 0, np.random.default_rng(0), size=(40, 40))
    result = subprocess.run(
        [sys.executable, "-c",
         "import resource, sys; from lightcycle.cli.predict import main; "
         "sys.argv = ['lightcycle-predict', *sys.argv[1:]]\n"
         "try:\n    main()\nfinally:\n"
         "    print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
         f"ckpt={crafted}", f"inputs={tmp_path / 'x.png'}", f"output={tmp_path / 'p.csv'}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightcycle-predict: error:")]
    assert errors == [f"lightcycle-predict: error: checkpoint {crafted}: lightcycle_inference.size is 12000, "
                      "outside 8..4096; the checkpoint is damaged or crafted"], result.stderr[-3000:]
    peak_mb = int(result.stderr.split("peak_kb")[-1].split()[0]) / 1024
    assert peak_mb < 1500, peak_mb
    assert not (tmp_path / "p.csv").exists()


def test_a_user_given_size_is_bounded_too(checkpoint):
    with pytest.raises(LightcycleError, match=r"size=20000: the model input must be 8..4096 pixels a side"):
        Predictor.from_checkpoint(checkpoint, size=20000)
    assert Predictor.from_checkpoint(checkpoint, size=48).size == 48


def test_resuming_from_a_crafted_checkpoint_is_refused_the_same_way(checkpoint, tmp_path):
    from lightcycle.run.trainer import resume_checkpoint

    crafted = _crafted(checkpoint, tmp_path, _set("lightcycle_inference", "size", value=12000))
    with pytest.raises(LightcycleError, match=r"lightcycle_inference.size is 12000, outside 8..4096"):
        resume_checkpoint(str(crafted), tmp_path)
    assert resume_checkpoint(str(checkpoint), tmp_path) == str(checkpoint)
