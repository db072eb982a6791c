"""`lightcycle-clean` as a command: undo's exit status and one-line errors for a bad checkpoint or journal."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightcycle.clean import Change, apply
from lightcycle.data import FolderDataModule
from tests.helpers import make_classification

COMMON = {"size": 32, "batch_size": 2, "num_workers": 0, "backbone": "test_resnet"}


def clean_cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run([sys.executable, "-m", "lightcycle.cli.clean", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_undo_command_and_its_errors(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    before = tree(root)
    applied = apply([Change("train/red/red_0.jpg", "remove"), Change("train/red/red_1.jpg", "relabel", "blue")],
                    FolderDataModule(root, **COMMON), journal_dir=tmp_path / "run" / "cleaning")
    assert tree(root) != before

    done = clean_cli(f"undo={applied.journal}")
    assert done.returncode == 0, done.stderr
    assert f"restored 2 file(s) from {applied.journal}" in done.stdout
    assert tree(root) == before

    (root / "train/red/red_0.jpg").write_bytes(b"a new file where the removed one was")
    again = apply([Change("train/red/red_2.jpg", "remove")], FolderDataModule(root, **COMMON),
                  journal_dir=tmp_path / "run" / "cleaning")
    (root / "train/red/red_2.jpg").write_bytes(b"someone put a file back by hand")
    left = clean_cli(f"undo={again.journal}")
    assert left.returncode == 1
    assert "left alone: train/red/red_2.jpg" in left.stdout or "left alone: .lightcycle-removed" in left.stdout
    assert left.stderr.strip().splitlines() == [
        f"lightcycle-clean: error: 1 file(s) of {again.journal} were left alone (listed above)"]

    (tmp_path / "notes.jsonl").write_text("apply went fine\n{}\n")
    for args, message in (
        (["undo=" + str(tmp_path / "notes.jsonl")], f"journal {tmp_path / 'notes.jsonl'} line 1: not a JSON line"),
        (["undo=" + str(root / "train/red/red_3.jpg")], "not a cleaning journal"),
        (["ckpt=" + str(tmp_path / "missing.ckpt")], f"lightcycle-clean: error: ckpt={tmp_path / 'missing.ckpt'}: checkpoint not found"),
    ):
        failed = clean_cli(*args)
        assert failed.returncode == 1, (args, failed.stderr)
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, failed.stderr)
        assert "Traceback" not in failed.stderr


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    from lightcycle.cli.clean import check_address
    from lightcycle.errors import LightcycleError

    with pytest.raises(LightcycleError, match="port must be between 1024 and 65535, got 80"):
        check_address("127.0.0.1", 80)
