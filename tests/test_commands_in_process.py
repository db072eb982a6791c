"""The commands' entry points run in this process, as their console scripts do, on tiny data: the quick
tier's end-to-end run of lightcycle-train, lightcycle-export and lightcycle-serve's start-up checks.
The slow tier runs the same commands in a subprocess, as a user's shell does."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.helpers import command_here

TINY = ["data=folder", "data.size=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=test_resnet",
        "model.pretrained=false", "trainer.accelerator=cpu", "~logger"]


def run_command(main: Callable[[], None], argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`main()` with `argv` as the command line; its exit status (0 when it returns)."""
    return command_here(main, argv, monkeypatch)


def test_lightcycle_train_writes_its_outputs(image_folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from lightcycle.cli.train import main

    run_dir = tmp_path / "run"
    code = run_command(main, ["lightcycle-train", *TINY, f"data.root={image_folder}", "trainer.max_epochs=1",
                              f"hydra.run.dir={run_dir}"], monkeypatch)
    assert code == 0, capsys.readouterr().err[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val_accuracy", "val_error_rate", "val_loss"} <= set(metrics)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()  # the run's record, written once it was accepted
    assert not (run_dir / "lightcycle.lock").exists()


def test_lightcycle_train_user_error_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from lightcycle.cli.train import main

    missing = tmp_path / "nowhere"
    code = run_command(main, ["lightcycle-train", *TINY, f"data.root={missing}", f"hydra.run.dir={tmp_path / 'run'}"],
                       monkeypatch)
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("lightcycle-train: error:")]
    assert len(lines) == 1 and str(missing) in lines[0], err[-2000:]
    assert "Traceback" not in err


def test_lightcycle_export_writes_a_parity_checked_onnx(demo_checkpoints, tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from lightcycle.cli.export import main

    ckpt, _ = demo_checkpoints["classification"]
    out = tmp_path / "model.onnx"
    argv = ["lightcycle-export", f"ckpt={ckpt}", "format=onnx", f"output={out}", f"hydra.run.dir={tmp_path / 'job'}"]
    assert run_command(main, argv, monkeypatch) == 0, capsys.readouterr().err[-3000:]
    assert out.is_file() and out.stat().st_size > 0
    again = run_command(main, argv, monkeypatch)  # an existing output is kept unless overwrite=true
    assert again == 1 and "overwrite=true" in capsys.readouterr().err


@pytest.mark.parametrize("ckpt, message", [(None, "ckpt"), ("missing.ckpt", "checkpoint not found")])
def test_lightcycle_serve_refuses_a_missing_checkpoint_at_once(ckpt, message, tmp_path: Path, monkeypatch, capsys) -> None:
    from lightcycle.cli.serve import main

    argv = ["lightcycle-serve", f"hydra.run.dir={tmp_path / 'job'}"] + ([f"ckpt={tmp_path / ckpt}"] if ckpt else [])
    assert run_command(main, argv, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("lightcycle-serve: error:") and message in err and "Traceback" not in err


def test_serve_settings_are_the_apps_keywords() -> None:
    """Every setting conf/serve.yaml gives the server is one of `lightcycle.serve.app`'s keywords."""
    import inspect

    from hydra import compose, initialize_config_dir

    from lightcycle.cli.serve import settings
    from lightcycle.run import config_dir
    from lightcycle.serve import app

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("serve", overrides=["ckpt=x.ckpt"])
    keywords = set(inspect.signature(app).parameters)
    assert set(settings(cfg)) <= keywords, set(settings(cfg)) - keywords


@pytest.mark.parametrize("task", ["classification", "points"])
def test_the_served_api_answers_as_predict_in_both_runtimes(task, demo_checkpoints, tmp_path: Path) -> None:
    """`PredictorAPI` (what LitServe's workers run) in this process: ONNX Runtime and torch give the same
    record for the same image, numbers equal up to float rounding."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from lightcycle.digest import file_sha256
    from lightcycle.serve.api import PredictorAPI
    from lightcycle.serve.runtime import onnx_model

    ckpt, root = demo_checkpoints[task]
    image_path = next(p for p in sorted(Path(root).rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg")
                      and "labels" not in p.parts)
    image = np.asarray(Image.open(image_path).convert("RGB"))
    onnx = onnx_model(Path(ckpt), file_sha256(ckpt), cache_dir=tmp_path)
    answers = {}
    for runtime, path in (("torch", None), ("onnx", str(onnx))):
        api = PredictorAPI(str(ckpt), onnx=path)
        api.setup("cpu")
        request = api.decode_request({"name": image_path.name, "image": image})
        answers[runtime] = api.encode_response(api.predict(request))
    assert answers["torch"]  # the task's served record, not an empty answer
    assert_same(answers["onnx"], answers["torch"])


def assert_same(got, expected, where: str = "record") -> None:
    """Equal structure and text; numbers within float rounding."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-3), where
    else:
        assert got == expected, where


@pytest.mark.parametrize("program, module", [("serve", "litserve"), ("clean", "fastapi"), ("clean", "uvicorn")])
def test_the_web_pages_name_the_extra_they_need(program, module, demo_checkpoints, tmp_path: Path, monkeypatch,
                                                capsys) -> None:
    """After `pip install -e .` alone, lightcycle-serve and lightcycle-clean say in one line what to install."""
    import importlib

    main = importlib.import_module(f"lightcycle.cli.{program}").main
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    ckpt, _ = demo_checkpoints["classification"]
    argv = [f"lightcycle-{program}", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'job'}"]
    assert run_command(main, argv, monkeypatch) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"lightcycle-{program}: error:")]
    assert len(lines) == 1 and module in lines[0] and "lightcycle[serve]" in lines[0], err[-2000:]
    assert "Traceback" not in err
