"""What a full disk, a killed save and an odd run folder leave behind: one line, nothing lost, no debris."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from lightcycle.atomic import atomic_path, atomic_write, remove_stale_temps, temp_name
from lightcycle.checkpoint_io import AtomicCheckpointIO, save_atomic
from tests.helpers import run_train
from tests.test_cli_reliability import TINY, _one_error_line


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
