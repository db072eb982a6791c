"""`lightcycle-train` and friends as a careless user runs them: a reused run dir, two runs in one dir,
Ctrl-C, bad checkpoints and run dirs, a run that would train nothing. Each answer is one line
(never a traceback, never torch's advice to load unsafely), and no run is lost."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import RunsCode, make_camvid, run_train, train_here, write_files

TINY = ["data=folder", "data.size=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=test_resnet",
        "model.pretrained=false", "trainer.accelerator=cpu"]
REPO = str(Path(__file__).resolve().parents[1])
ENV = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1",
           PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_error_line(result: subprocess.CompletedProcess, program: str = "lightcycle-train") -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "weights_only=False" not in output, output[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_a_reused_run_dir_is_refused_untouched_or_moved_aside_with_overwrite(image_folder, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    # one step, no end-of-run report: the runs' outputs matter here, not their quality
    args = [*TINY, f"data.root={image_folder}", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
            "interpret.top_k=0", "show_batch.n=0"]
    assert train_here(args, run_dir, monkeypatch) == 0  # the run to reuse; the commands under test run as a shell does
    before = _tree(run_dir)
    assert {"metrics.json", "checkpoints/last.ckpt", "train.log", ".hydra/config.yaml"} <= set(before)

    again = run_train([*args, "model.lr=1e-2"], run_dir)
    assert again.returncode == 1
    line = _one_error_line(again)
    assert f"hydra.run.dir={run_dir} holds another run" in line
    assert "resume=true" in line and "new hydra.run.dir" in line and "overwrite=true" in line
    assert _tree(run_dir) == before  # not a byte changed: metrics, checkpoints, train.log, .hydra, events

    third = run_train([*args, "model.lr=1e-2", "overwrite=true"], run_dir)
    assert third.returncode == 0, third.stderr[-3000:]
    assert _tree(run_dir / "previous-1") == before  # the first run, whole
    assert f"moved the previous run in {run_dir} to {run_dir / 'previous-1'}/" in (run_dir / "train.log").read_text()
    assert "model.lr=1e-2" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())
    assert not (run_dir / "lightcycle.lock").exists()


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_and_a_second_process_is_refused_meanwhile(image_folder, tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    args = [*TINY, f"data.root={image_folder}", "trainer.max_epochs=3", "checkpoint_every_n_steps=1", "~logger",
            "+callbacks.killpoint._target_=tests.killpoint.PauseOnce", "+callbacks.killpoint.step=6",
            f"+callbacks.killpoint.marker={marker}"]
    command = [sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={run_dir}", *args]
    # a shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the child the terminal's default, as a user's Ctrl-C finds it
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended before step 6: {proc.stderr.read()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("training did not reach step 6 within 240 s")
            time.sleep(0.1)
        second = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)
        assert second.returncode == 1
        assert f"is in use by another run (pid {proc.pid} on " in _one_error_line(second)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"the last checkpoint is {last}, saved after step 6; continue with:" in stderr
    assert "Traceback" not in stderr
    assert not (run_dir / "lightcycle.lock").exists()  # released on Ctrl-C
    resume = [line for line in stderr.splitlines() if line.startswith("lightcycle-train ")]
    assert len(resume) == 1 and resume[0].endswith(f"hydra.run.dir={run_dir} resume=true")
    resumed = subprocess.run([sys.executable, "-m", "lightcycle.cli.train", *shlex.split(resume[0])[1:]],
                             capture_output=True, text=True, env=ENV, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 12  # 3 epochs of 4 steps: continued, not restarted
    assert (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_max_epochs_zero_is_refused_before_training(image_folder, tmp_path):
    result = run_train([*TINY, f"data.root={image_folder}", "trainer.max_epochs=0"], tmp_path / "run", timeout=120)
    assert result.returncode == 1
    assert "trainer.max_epochs=0 trains nothing" in _one_error_line(result)
    assert "final metrics (" not in result.stdout + result.stderr  # the final report of a finished run
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_resume_from_a_checkpoint_of_another_task_and_backbone_names_both(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "hyper_parameters": {
        "task": {"name": "classification", "class_names": ["cat", "dog"]}, "backbone": "resnet18"}}, foreign)
    result = run_train([*TINY, "data=segmentation", f"data.root={make_camvid(tmp_path / 'camvid')}",
                        f"resume={foreign}", "~logger"], tmp_path / "run", timeout=180)
    assert result.returncode == 1, result.stderr[-3000:]
    line = _one_error_line(result)
    assert f"checkpoint {foreign} was trained for classification with resnet18; this run is segmentation with test_resnet" in line


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_a_run_dir_that_cannot_be_created_or_written_is_one_line(image_folder, tmp_path, where):
    parent = tmp_path / "parent"
    if where == "under_a_file":
        parent.write_text("a file, not a folder")
        expected = f"cannot create the run dir: {parent} is a file, not a folder"
    else:
        parent.mkdir()
        frozen = _make_read_only(parent)
        expected = "cannot create the run dir"
    try:
        result = run_train([*TINY, f"data.root={image_folder}"], parent / "run", timeout=120)
    finally:
        if where == "read_only":
            frozen()
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"hydra.run.dir={parent / 'run'}: {expected}" in line


def _make_read_only(folder: Path):
    """Make `folder` unwritable even for root (the immutable flag), else by its mode; returns the undo."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: no folder is read-only")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    truncated = folder / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:600])
    carrying = folder / "carrying.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": RunsCode(folder / "executed")}}, carrying)
    return {"truncated": truncated, "carrying": carrying}


@pytest.mark.slow
@pytest.mark.parametrize("program", ["predict", "interpret", "export"])
@pytest.mark.parametrize("kind", ["truncated", "carrying"])
def test_bad_checkpoints_are_one_line_without_unsafe_advice(program, kind, bad_checkpoints, image_folder, tmp_path):
    ckpt = bad_checkpoints[kind]
    extra = {"predict": [f"inputs={image_folder / 'valid'}", f"output={tmp_path / 'p.csv'}"],
             "interpret": [f"output_dir={tmp_path / 'interp'}"], "export": [f"output={tmp_path / 'm.onnx'}"]}[program]
    result = subprocess.run([sys.executable, "-m", f"lightcycle.cli.{program}", f"ckpt={ckpt}", *extra],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 1
    line = _one_error_line(result, f"lightcycle-{program}")
    assert f"cannot load checkpoint {ckpt} with weights_only=True" in line
    assert not (ckpt.parent / "executed").exists()


def _planted_run(run_dir: Path, marker: Path) -> dict[str, bytes]:
    """A finished run (test_resnet, 3 classes in run_dir/data) whose record was tampered with; returns its record."""
    from tests.helpers import train_checkpoint

    train_checkpoint("classification", run_dir)
    (run_dir / "metrics.json").write_text('{"val_loss": 1.0}\n')
    record = {
        ".hydra/config.yaml": ("data:\n  _target_: pathlib.Path.write_text\n  _args_: ['%s', ran]\n" % marker).encode(),
        ".hydra/overrides.yaml": b"- model.backbone=test_resnet\n",
    }
    return write_files(run_dir, record)


def _record(run_dir: Path) -> dict[str, bytes]:
    return {rel: (run_dir / rel).read_bytes() for rel in (".hydra/config.yaml", ".hydra/overrides.yaml")}


@pytest.mark.slow
def test_a_refused_run_leaves_the_runs_record_and_runs_nothing_from_it(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    record = _planted_run(run_dir, marker)
    args = [*TINY, f"data.root={run_dir / 'data'}", "~logger", "interpret.top_k=0", "show_batch.n=0"]

    other_backbone = run_train([*args, "model.backbone=test_efficientnet", "resume=true"], run_dir, timeout=180)
    assert other_backbone.returncode == 1
    assert "was trained for classification with test_resnet; this run is classification with test_efficientnet" in (
        _one_error_line(other_backbone))
    assert _record(run_dir) == record and not marker.exists()

    (run_dir / "lightcycle.lock").write_text(json.dumps(
        {"pid": 99999999999999999999, "host": os.uname().nodename, "since": "x", "token": "t"}))
    damaged_lock = run_train([*args, "resume=true", "trainer.max_epochs=2"], run_dir, timeout=180)
    assert damaged_lock.returncode == 1
    assert f"hydra.run.dir={run_dir} has a lock file {run_dir / 'lightcycle.lock'} that cannot be read" in (
        _one_error_line(damaged_lock))
    assert _record(run_dir) == record and not marker.exists()

    (run_dir / "lightcycle.lock").unlink()
    accepted = run_train([*args, "resume=true", "trainer.max_epochs=2"], run_dir, timeout=240)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert not marker.exists()
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "resume=true" in overrides and "trainer.max_epochs=2" in overrides  # the accepted run's record
    assert "lightcycle.data.FolderDataModule" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert (run_dir / ".hydra" / "hydra.yaml").is_file()
