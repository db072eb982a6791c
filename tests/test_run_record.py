"""A run folder's record (`.hydra/`) is data: no command that reads a shared run folder runs what its
config says, and no command writes over the files it reads.

Each planted config would create `marker` if anything instantiated it (Hydra's `_target_`, at the
top of `data:` or nested in a setting); every reader must leave it absent and answer in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from lightcycle.cli.interpret import interpret
from lightcycle.cli.predict import predict
from lightcycle.cli.summary import write_summary
from lightcycle.errors import LightcycleError
from lightcycle.export import export
from lightcycle.run.record import constructor_settings, data_settings, load_datamodule
from lightcycle.data import FolderDataModule
from tests.helpers import train_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1",
           PYTHONPATH=os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder: checkpoints/last.ckpt of a 3-class classifier and the data it was trained on (data/)."""
    root = tmp_path_factory.mktemp("run")
    train_checkpoint("classification", root)
    return root


def honest_config(run: Path) -> dict:
    """What lightcycle-train records for such a run (unresolved interpolations, `batch_size: auto`)."""
    return {
        "seed": 42,
        "model": {"backbone": "test_resnet"},
        "data": {"_target_": "lightcycle.data.FolderDataModule", "root": str(run / "data"), "size": 32,
                 "batch_size": "auto", "num_workers": 0, "seed": "${seed}", "backbone": "${model.backbone}"},
        "interpret": {"seed": "${seed}"},
    }


def attacks(marker: Path, run: Path) -> dict[str, tuple[dict, str]]:
    """name -> (the planted config's data section, the key the one-line refusal must name)."""
    writes = {"_target_": "pathlib.Path.write_text", "_args_": [str(marker), "ran"]}
    honest = honest_config(run)["data"]
    return {
        "foreign_target": (writes, "data._target_='pathlib.Path.write_text'"),
        "torch_load": ({"_target_": "torch.load", "f": str(marker), "weights_only": False}, "data._target_='torch.load'"),
        "nested_target": ({**honest, "cache_dir": writes}, "data.cache_dir._target_"),
        "unknown_key": ({**honest, "evil": 1}, "data.evil is not a setting of FolderDataModule"),
        "hydra_key": ({**honest, "_args_": [str(marker)]}, "data._args_ is not a setting of FolderDataModule"),
        "nested_in_list": ({**honest, "root": [writes]}, "data.root[0]._target_"),
    }


def plant(run: Path, data: dict) -> Path:
    path = run / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**honest_config(run), "data": data}))
    return path


def interpret_cfg(run: Path, **extra) -> OmegaConf:
    return OmegaConf.create({
        "ckpt": str(run / "checkpoints" / "last.ckpt"), "run_dir": None, "output_dir": str(run / "interpret"),
        "top_k": 2, "views": False, "device": "cpu", "data": {"root": None, "num_workers": None}, **extra})


def test_an_honest_record_with_batch_size_auto_builds_lightcycles_datamodule(run, tmp_path):
    plant(run, honest_config(run)["data"])
    cls, settings = data_settings(run, {"num_workers": 0})
    assert cls is FolderDataModule and settings["seed"] == 42 and settings["backbone"] == "test_resnet"
    assert set(settings) <= constructor_settings(FolderDataModule) and "min_scale" in constructor_settings(FolderDataModule)
    datamodule = load_datamodule(run)
    assert datamodule.state_dict()["batch_size"] == "auto"  # not chosen before setup, and not an error
    written = interpret(interpret_cfg(run))  # a run that kept data.batch_size=auto
    assert written["top_losses"].is_file()


@pytest.mark.parametrize("attack", ["foreign_target", "torch_load", "nested_target", "unknown_key", "hydra_key",
                                    "nested_in_list"])
def test_interpret_never_runs_a_planted_data_config(attack, run, tmp_path):
    marker = tmp_path / "marker"
    data, key = attacks(marker, run)[attack]
    path = plant(run, data)
    with pytest.raises(LightcycleError) as info:
        interpret(interpret_cfg(run, output_dir=str(tmp_path / "out")))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and key in message, message
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_interpret_cli_refuses_a_planted_config_in_one_line(run, tmp_path):
    marker = tmp_path / "marker"
    path = plant(run, attacks(marker, run)["foreign_target"][0])
    result = subprocess.run([sys.executable, "-m", "lightcycle.cli.interpret", f"ckpt={run}/checkpoints/last.ckpt",
                             "device=cpu"], capture_output=True, text=True, timeout=240, env=ENV)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightcycle-interpret: error:")]
    assert len(errors) == 1 and f"{path}: data._target_='pathlib.Path.write_text' is not one of" in errors[0]
    assert not marker.exists()


def test_run_settings_are_read_as_plain_values(run, tmp_path):
    from lightcycle.run.record import run_setting

    marker = tmp_path / "marker"
    plant(run, honest_config(run)["data"])
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text() + yaml.safe_dump(
        {"interpret": {"seed": {"_target_": "pathlib.Path.write_text", "_args_": [str(marker), "ran"]}}}))
    assert run_setting(run, "interpret.seed", 0) == 0 and not marker.exists()


def test_predict_and_export_run_nothing_from_a_planted_run_folder(run, tmp_path):
    marker = tmp_path / "marker"
    plant(run, attacks(marker, run)["foreign_target"][0])
    output = tmp_path / "preds.csv"
    predict(OmegaConf.create({
        "ckpt": str(run / "checkpoints" / "last.ckpt"), "inputs": str(run / "data" / "valid"), "output": str(output),
        "folder": None, "column": None, "masks": None, "tta": {"n": 0}, "ensemble": False, "batch_size": 4,
        "num_workers": 0, "device": "cpu", "size": None, "resize": None, "on_bad": "error"}))
    assert output.is_file()
    result = export(run / "checkpoints" / "last.ckpt", "torchscript", tmp_path / "m.pt")
    assert result.model.is_file() and not marker.exists()


def test_summary_reads_a_planted_job_as_data(tmp_path):
    marker = tmp_path / "marker"
    sweep = tmp_path / "sweep"
    good, planted = sweep / "0", sweep / "1"
    for job, metric in ((good, 0.5), (planted, 0.4)):
        (job / ".hydra").mkdir(parents=True)
        (job / "metrics.json").write_text(f'{{"val_loss": {metric}}}')
    (good / ".hydra" / "overrides.yaml").write_text("- model.lr=0.01\n")
    (planted / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"_target_": "pathlib.Path.write_text", "_args_": [str(marker), "ran"]}}))
    (planted / ".hydra" / "overrides.yaml").write_text(f"!!python/object/apply:pathlib.Path.touch ['{marker}']\n")
    rows = write_summary(sweep, sort_by="val_loss")
    assert not marker.exists()
    assert rows[1]["job"] == "0" and rows[1]["overrides"] == "model.lr=0.01"
    assert rows[0]["job"] == "1" and rows[0]["overrides"] == "" and rows[0]["status"].startswith("unreadable .hydra/overrides.yaml (invalid YAML")


def test_predict_and_interpret_never_write_over_what_they_read(run, tmp_path):
    plant(run, honest_config(run)["data"])
    ckpt = run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    names = tmp_path / "names.csv"
    names.write_text("file\n" + str(next((run / "data" / "valid").rglob("*.jpg"))) + "\n")
    base = {"ckpt": str(ckpt), "inputs": str(names), "folder": None, "column": None, "masks": None, "tta": {"n": 0},
            "ensemble": False, "batch_size": 4, "num_workers": 0, "device": "cpu", "size": None, "resize": None,
            "on_bad": "error"}
    with pytest.raises(LightcycleError, match=f"output={names} is the file this command reads \\(inputs={names}\\)"):
        predict(OmegaConf.create({**base, "output": str(names)}))
    link = tmp_path / "preds.csv"
    link.symlink_to(ckpt)  # another name for the checkpoint
    with pytest.raises(LightcycleError, match=f"output={link} is the file this command reads \\(ckpt={ckpt}\\)"):
        predict(OmegaConf.create({**base, "output": str(link)}))
    assert names.read_text().startswith("file\n") and ckpt.read_bytes() == before

    renamed = run / "checkpoints" / "top_losses.csv"  # a checkpoint named like a report file, in output_dir
    os.link(ckpt, renamed)
    try:
        with pytest.raises(LightcycleError, match="would write over the checkpoint"):
            interpret(interpret_cfg(run, ckpt=str(renamed), run_dir=str(run), output_dir=str(run / "checkpoints")))
    finally:
        renamed.unlink()
    assert ckpt.read_bytes() == before
