"""What a full disk, a killed save and an odd run folder leave behind: one line, nothing lost, no debris."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lightcycle.atomic import atomic_path, atomic_write, remove_stale_temps, temp_name
from lightcycle.checkpoint_io import AtomicCheckpointIO, save_atomic
from tests.helpers import run_train
from tests.test_cli_reliability import TINY, _one_error_line


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_the_last_one_is_kept(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, f"data.root={image_folder}", "trainer.max_epochs=2", "~logger",
            "+callbacks.disk_full._target_=tests.killpoint.DiskFull", "+callbacks.disk_full.epoch=1"]
    result = run_train(args, run_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    line = _one_error_line(result)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert line.startswith(f"lightcycle-train: error: cannot save checkpoint {run_dir / 'checkpoints'}/"), line
    assert "No space left on device" in line and "free some space, then continue with resume=true" in line
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the first epoch's save, whole
    assert not list(last.parent.glob(".*.partial"))


def _killed_save(target: Path) -> Path:
    """A process SIGKILLed in the middle of saving `target`; returns the temp file it left."""
    code = textwrap.dedent(f"""
        import os, signal, torch
        from lightcycle.checkpoint_io import save_atomic
        def dies(obj, f, *a, **k):
            f.write(b"PK half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dies
        save_atomic({{"step": 1}}, {str(target)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = list(target.parent.glob(f".{target.name}.*.partial"))
    assert len(left) == 1
    return left[0]


@pytest.mark.slow
def test_the_temp_file_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "checkpoints" / "epoch=0.ckpt"
    left = _killed_save(target)
    mine = temp_name(tmp_path / "checkpoints" / "last.ckpt")  # a live writer's temp file: this process's
    mine.write_bytes(b"being written")
    old = time.time() - 3600
    for p in (left, mine):
        os.utime(p, (old, old))
    young = _killed_save(tmp_path / "checkpoints" / "epoch=1.ckpt")  # killed a moment ago: kept for now
    AtomicCheckpointIO().save_checkpoint({"step": 2}, tmp_path / "checkpoints" / "last.ckpt")
    assert not left.exists() and mine.exists() and young.exists()
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True) == {"step": 2}
    os.utime(young, (old, old))
    assert remove_stale_temps(tmp_path / "checkpoints") == [young]


def test_atomic_writers_never_write_through_a_planted_symlink(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "shared" / "out.csv"
    target.parent.mkdir()
    planted = target.with_name(".out.csv.1234-deadbeef.partial")
    planted.symlink_to(victim)
    names = iter([planted, temp_name(target)])  # the first name an attacker guessed right, the next not
    monkeypatch.setattr("lightcycle.atomic.temp_name", lambda path: next(names))
    with atomic_write(target, "w") as f:
        f.write("a,b\n")
    assert victim.read_text() == "precious" and target.read_text() == "a,b\n"
    names = iter([planted, temp_name(target)])
    with atomic_path(target) as tmp:
        tmp.write_text("c,d\n")
    assert victim.read_text() == "precious" and target.read_text() == "c,d\n"
    names = iter([planted, temp_name(target)])
    save_atomic({"x": 1}, target.with_name("x.ckpt"))
    assert victim.read_text() == "precious"


# --- lightcycle-summary over jobs with damaged records -----------------------------------------------------
def test_summary_lists_jobs_with_damaged_records_instead_of_failing(tmp_path, capsys):
    from lightcycle.cli.summary import main

    jobs = {
        "0": ("- model.lr=0.1\n", b'{"val_loss": 0.5}'),
        "1": ("- model.lr: [unclosed\n", b'{"val_loss": 0.2}'),  # invalid YAML
        "2": (b"- model.lr=\xff\xfe\n", b'{"val_loss": 0.3}'),  # not UTF-8
        "3": ("- model.lr=0.3\n", b"[1, 2, 3]"),  # a list, not metrics
        "4": ("- model.lr=0.4\n", b"\xff not json"),
        "5": ("{a: 1}\n", b'{"val_loss": 0.1, "job": "hijacked", "cat\\u001b[31m": 1}'),
    }
    for job, (overrides, metrics) in jobs.items():
        (tmp_path / job / ".hydra").mkdir(parents=True)
        data = overrides if isinstance(overrides, bytes) else overrides.encode()
        (tmp_path / job / ".hydra" / "overrides.yaml").write_bytes(data)
        (tmp_path / job / "metrics.json").write_bytes(metrics)
    main([str(tmp_path), "--sort", "val_loss"])  # returns: no traceback, no exit code
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 2 + len(jobs) and "\x1b" not in out
    header = [c.strip() for c in lines[0].split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.split("|")))) for line in lines[2:]]
    status = {r["job"]: r["status"] for r in rows}
    assert status["1"].startswith("unreadable .hydra/overrides.yaml (invalid YAML at line ")
    assert status["2"] == "unreadable .hydra/overrides.yaml (not UTF-8 text)"
    assert status["3"] == "unreadable metrics.json (a JSON list, not an object of metrics)"
    assert status["4"] == "unreadable metrics.json (not UTF-8 text)"
    assert status["5"] == "unreadable .hydra/overrides.yaml (a YAML dict, not a list of overrides)"
    assert "cat\\x1b[31m" in header  # a metric name from the file, escaped
    assert [r["job"] for r in rows] == ["5", "1", "2", "0", "3", "4"]  # by val_loss; job 5's name not hijacked
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "summary.md").is_file()


# --- the refusal of a reused run dir gives advice that works ------------------------------------------------
def test_a_run_that_died_before_its_first_checkpoint_is_not_offered_resume(tmp_path):
    from lightcycle.errors import LightcycleError
    from lightcycle.run.folder import claim_run_dir

    run_dir = tmp_path / "run"
    (run_dir / "tensorboard" / "version_0").mkdir(parents=True)
    (run_dir / "tensorboard" / "version_0" / "events.out.tfevents.1.host").write_bytes(b"x")
    with pytest.raises(LightcycleError) as info:
        claim_run_dir(run_dir)
    message = str(info.value)
    assert "resume=true" not in message and "no checkpoints/last.ckpt to resume from" in message
    assert "overwrite=true" in message
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(LightcycleError, match="continue it with resume=true"):
        claim_run_dir(run_dir)


# --- data=folder: image links out of data.root ----------------------------------------------------------------
def test_folder_layout_refuses_image_links_out_of_the_root_like_the_csv_layouts(image_folder, tmp_path):
    from lightcycle.data import FolderDataModule
    from lightcycle.errors import LightcycleError

    secret = tmp_path / "secret.png"
    shutil.copy(next((image_folder / "train" / "red").iterdir()), secret)
    (image_folder / "train" / "red" / "leak.png").symlink_to(secret)
    dm = FolderDataModule(image_folder, size=32, batch_size=4, num_workers=0)
    with pytest.raises(LightcycleError, match=r"leak.png: resolves outside data.root \(to .*secret.png\); "
                                              r"data.allow_outside_root=true allows it"):
        dm.setup("fit")
    allowed = FolderDataModule(image_folder, size=32, batch_size=4, num_workers=0, allow_outside_root=True)
    allowed.setup("fit")
    assert any(s.path.name == "leak.png" for s in allowed.train_samples)


# --- console output escapes what came from the data -------------------------------------------------------------
def test_names_from_the_data_cannot_send_escape_sequences_or_fake_lines():
    from lightcycle.errors import for_console

    assert for_console("cat\x1b[2J\nlightcycle-train: error: fake\u202e") == \
        "cat\\x1b[2J\\nlightcycle-train: error: fake\\u202e"
    assert for_console("chat noir é") == "chat noir é"


# --- lightcycle-predict: an output it cannot write, hundreds of bad inputs ------------------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from tests.helpers import train_checkpoint

    return train_checkpoint("classification", tmp_path_factory.mktemp("cls"))


@pytest.mark.slow
def test_predict_refuses_an_output_it_cannot_write_before_reading_any_image(classifier, tmp_path):
    ckpt, dm = classifier
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"not a jpeg")  # vetting it would be the first work: the output comes first
    cmd = [sys.executable, "-m", "lightcycle.cli.predict", f"ckpt={ckpt}", f"inputs={photos}",
           f"output={blocker / 'preds.csv'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                            env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    assert result.returncode == 1
    line = _one_error_line(result, "lightcycle-predict")
    assert line == f"lightcycle-predict: error: output={blocker / 'preds.csv'}: cannot write into {blocker} (File exists)"
    assert "broken.jpg" not in result.stderr


def test_predict_names_20_of_300_bad_inputs_and_lists_all_in_a_file(classifier, tmp_path):
    from lightcycle.errors import LightcycleError
    from lightcycle.predict import list_inputs, vet_inputs

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(300):
        (photos / f"bad{i:03d}.jpg").write_bytes(b"not a jpeg")
    report = tmp_path / "preds_bad_items.csv"
    with pytest.raises(LightcycleError) as info:
        vet_inputs(list_inputs(photos), "error", str(photos), report)
    message = str(info.value)
    assert message.startswith(f"300 bad image(s) in {photos}:")
    assert len(message.splitlines()) == 1 + 20 + 1 + 1
    assert f"... and 280 more; the full list is in {report}" in message
    assert "pass on_bad=skip to predict without them" in message
    assert len(report.read_text().splitlines()) == 301
