"""lightcycle-export: ONNX / TorchScript parity, the preprocessing JSON, and a runner without lightcycle or torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightcycle.export as export_module
from lightcycle import Predictor
from lightcycle.errors import LightcycleError
from lightcycle.export import export
from tests.helpers import command_here, train_checkpoint

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "src" / "lightcycle" / "onnx_predict.py"

# The runner's interpreter: no site processing (-S), so the editable install's .pth never runs; the
# package's sources and site-packages are put on sys.path by hand; torch and friends, and every module of
# lightcycle but the package itself, its errors and the runner, are refused outright, proving that
# `python -m lightcycle.onnx_predict` needs only onnxruntime, numpy and Pillow.
SANDBOX = """
import runpy, sys
sys.path[:0] = [{src!r}]
sys.path.append({site!r})
LIGHT = ("lightcycle", "lightcycle.errors", "lightcycle.onnx_predict")
class Refuse:
    def find_spec(self, name, path=None, target=None):
        heavy = name.split(".")[0] in ("torch", "torchvision", "timm", "lightning", "albumentations", "cv2", "hydra")
        if heavy or (name.startswith("lightcycle") and name not in LIGHT):
            raise ImportError("not available to the standalone runner: " + name)
sys.meta_path.insert(0, Refuse())
sys.argv = ["onnx_predict"] + {args!r}
runpy.run_module("lightcycle.onnx_predict", run_name="__main__", alter_sys=True)
"""


def run_standalone(args: list[str], cwd: Path) -> list[dict]:
    """`python -m lightcycle.onnx_predict ARGS` from `cwd` (not the repository), with only the light modules."""
    code = SANDBOX.format(src=str(REPO / "src"), site=sysconfig.get_paths()["purelib"], args=args)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_the_runner_is_a_module_callable_from_anywhere(tmp_path):
    """The documented `python -m lightcycle.onnx_predict` works outside the repository (installed package)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "lightcycle.onnx_predict", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime" in done.stdout and "--resize" in done.stdout
    page = (REPO / "docs" / "using-a-model.md").read_text()
    assert "python -m lightcycle.onnx_predict outputs/demo/checkpoints/last.onnx" in page
    assert "docs/onnx_predict.py" not in page


def square_images(paths: list[Path], folder: Path, size: int = 32) -> list[Path]:
    """Lossless copies at the model's input size: both pipelines then see identical pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        target = folder / f"{p.stem}.png"
        Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BOX).save(target)
        out.append(target)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "multilabel", "segmentation", "points"])
def test_onnx_parity_and_a_runner_without_lightcycle(task, tmp_path):
    ckpt, dm = train_checkpoint(task, tmp_path)
    result = export(ckpt, "onnx")
    assert result.model == ckpt.with_suffix(".onnx") and result.config == tmp_path / "checkpoints" / "last.onnx.json"
    assert result.max_abs_diff < 1e-4
    config = json.loads(result.config.read_text())
    predictor = Predictor.from_checkpoint(ckpt)
    assert config["task"] == task and config["input"]["size"] == 32
    assert config["input"]["mean"] == list(dm.normalization.mean) and config["input"]["std"] == list(dm.normalization.std)
    if task == "multilabel":
        assert len(config["thresholds"]) == len(config["class_names"]) == predictor.task.num_classes

    images = square_images([s.path for s in dm.valid_samples[:3]], tmp_path / "in")
    answers = run_standalone([str(result.model), *map(str, images)], cwd=tmp_path)
    assert len(answers) == len(images)
    for answer, image in zip(answers, images):
        ours = predictor.predict(image)
        if task in ("classification", "multilabel"):
            np.testing.assert_allclose(list(answer["probabilities"].values()), ours.probs.numpy(), atol=1e-4)
            assert answer.get("label", answer.get("tags")) == ours.label
        elif task == "segmentation":
            counts = [int((ours.label == i).sum()) for i in range(len(config["class_names"]))]
            assert list(answer["pixels"].values()) == counts
        else:
            np.testing.assert_allclose(answer["points"], ours.label.numpy(), atol=1e-3)
    if task == "classification":  # larger, non-square originals: the runner shrinks them like OpenCV's INTER_AREA
        originals = [s.path for s in dm.valid_samples[:3]]
        answers = run_standalone([str(result.model), *map(str, originals)], cwd=tmp_path)
        runner = np.array([list(a["probabilities"].values()) for a in answers])
        ours = np.stack([predictor.predict(p).probs.numpy() for p in originals])
        print("runner vs lightcycle on originals: max abs diff", float(np.abs(runner - ours).max()))
        np.testing.assert_allclose(runner, ours, atol=1e-3)


@pytest.mark.slow
def test_torchscript_cli_and_one_line_errors(tmp_path, monkeypatch, capsys):
    ckpt, _ = train_checkpoint("classification", tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lightcycle.cli.export", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )

    done = cli(f"ckpt={ckpt}", "format=torchscript", "output=model/net.pt")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert output.count("max abs diff on logits") == 1, output  # the parity, said once
    traced = torch.jit.load(str(tmp_path / "model" / "net.pt"))
    assert traced(torch.zeros(3, 3, 32, 32)).shape == (3, 3)
    assert json.loads((tmp_path / "model" / "net.pt.json").read_text())["format"] == "torchscript"
    failed = cli(f"ckpt={tmp_path / 'nope.ckpt'}")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert [line for line in failed.stderr.splitlines() if line.startswith("lightcycle-export: error:")] == [
        f"lightcycle-export: error: checkpoint {tmp_path / 'nope.ckpt'} not found"
    ]

    # the refusals and the replacement: the same entry point in this process (one interpreter start-up
    # each spared), its exit status and stderr checked as the subprocess's above
    from lightcycle.cli.export import main as export_main

    monkeypatch.chdir(tmp_path)  # output=model/net.pt is relative to the working folder, as in the shell

    def here(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = command_here(export_main, ["lightcycle-export", *args], monkeypatch)
        return code, capsys.readouterr().err

    # the checkpoint itself is never an output (overwrite=true or not, however the path is spelt)
    before = ckpt.read_bytes()
    spelt = tmp_path / "checkpoints" / ".." / "checkpoints" / "last.ckpt"
    for args in ([f"output={ckpt}"], [f"output={spelt}", "overwrite=true"]):
        code, err = here(f"ckpt={ckpt}", "format=torchscript", *args)
        assert code == 1 and "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("lightcycle-export: error:")]
        assert len(errors) == 1 and f"is the file this command reads (ckpt={ckpt})" in errors[0], err
    assert ckpt.read_bytes() == before and sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]
    # an existing output is replaced only with overwrite=true
    model_file = tmp_path / "model" / "net.pt"
    model_file.write_bytes(b"keep me")
    code, err = here(f"ckpt={ckpt}", "format=torchscript", "output=model/net.pt")
    assert code == 1 and model_file.read_bytes() == b"keep me"
    assert [line for line in err.splitlines() if line.startswith("lightcycle-export: error:")] == [
        "lightcycle-export: error: output=model/net.pt exists; pass overwrite=true to replace it, or choose another output="
    ]
    code, err = here(f"ckpt={ckpt}", "format=torchscript", "output=model/net.pt", "overwrite=true")
    assert code == 0, err
    assert torch.jit.load(str(model_file))(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_parity_failure_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    ckpt, _ = train_checkpoint("classification", tmp_path)
    real = export_module._run_onnx
    monkeypatch.setattr(export_module, "_run_onnx", lambda path, x: real(path, x) + 1e-3)
    with pytest.raises(LightcycleError, match=r"last.onnx: parity check failed: .* up to 0.001"):
        export(ckpt, "onnx")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]
    with pytest.raises(LightcycleError, match="format must be one of onnx, torchscript"):
        export(ckpt, "tflite")
