"""The run folder: a folder holding another run is refused or moved aside, one live process per
folder (a lock file), stale locks taken over, and only global rank 0 of a launch claims the folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightcycle.errors import LightcycleError
from lightcycle.ranks import is_global_zero, process_rank
from lightcycle.run.folder import LOCK_NAME, LockHolder, claim_run_dir, previous_run_outputs, run_folder
from lightcycle.run.train import RunInterrupted
from tests.helpers import write_files


def _old_run(run_dir: Path) -> dict[str, bytes]:
    """What a finished run leaves, as {relative path: bytes}."""
    files = {
        "metrics.json": b'{"val_loss": 0.5}\n',
        "checkpoints/last.ckpt": b"last",
        "checkpoints/best-epoch01.ckpt": b"best",
        "tensorboard/events.out.tfevents.1.host.1.0": b"events",
        "train.log": b"[12:00:00][INFO] epoch 1/1\n",
        ".hydra/config.yaml": b"seed: 42\n",
    }
    return write_files(run_dir, files)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_folder_with_another_run_is_refused_untouched_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    files = _old_run(run_dir)
    assert len(previous_run_outputs(run_dir)) == 4  # metrics, 2 checkpoints, events: not Hydra's files
    with pytest.raises(LightcycleError) as info:
        claim_run_dir(run_dir)
    message = str(info.value)
    assert "\n" not in message and str(run_dir) in message
    assert "resume=true" in message and "new hydra.run.dir" in message and "overwrite=true" in message
    assert _tree(run_dir) == files  # nothing moved, nothing written, no lock left behind


def test_only_hydras_files_are_not_a_run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "train.log").write_text("a run that failed before training\n")
    with run_folder(run_dir) as folder:
        assert folder is not None and (run_dir / LOCK_NAME).is_file()
    assert not (run_dir / LOCK_NAME).exists()


@pytest.mark.parametrize("resume", [True, "CKPT"])
def test_resume_continues_the_run_in_the_folder(tmp_path, resume):
    run_dir = tmp_path / "run"
    files = _old_run(run_dir)
    resume = str(run_dir / "checkpoints" / "last.ckpt") if resume == "CKPT" else resume
    with run_folder(run_dir, resume=resume) as folder:
        assert folder is not None
    assert _tree(run_dir) == files


def test_resume_from_another_folder_does_not_license_reusing_this_one(tmp_path):
    _old_run(tmp_path / "run")
    elsewhere = tmp_path / "other.ckpt"
    elsewhere.write_bytes(b"x")
    with pytest.raises(LightcycleError, match="holds another run"):
        claim_run_dir(tmp_path / "run", resume=str(elsewhere))


def test_overwrite_moves_the_old_run_aside_and_says_where(tmp_path, caplog):
    run_dir = tmp_path / "run"
    files = _old_run(run_dir)
    with run_folder(run_dir, overwrite=True) as folder:
        assert previous_run_outputs(run_dir) == []
        assert _tree(run_dir / "previous-1") == files  # the whole old run, .hydra and train.log included
        with caplog.at_level("INFO", logger="lightcycle"):
            folder.log_notes()
    assert f"moved the previous run in {run_dir} to {run_dir / 'previous-1'}/" in caplog.text
    _old_run(run_dir)
    with run_folder(run_dir, overwrite=True):
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME, "previous-1", "previous-2"]
    with pytest.raises(LightcycleError, match="not both"):
        claim_run_dir(run_dir, resume=True, overwrite=True)


def test_overwrite_keeps_what_hydra_wrote_for_this_job(tmp_path):
    run_dir = tmp_path / "run"
    _old_run(run_dir)
    with run_folder(run_dir, overwrite=True, keep=(".hydra", "train.log")):
        assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
        assert not (run_dir / "previous-1" / "train.log").exists()


HOLD = textwrap.dedent(
    """
    import sys, time
    from lightcycle.run.folder import claim_run_dir
    claim_run_dir(sys.argv[1])
    print("claimed", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.slow
def test_a_live_lock_refuses_a_second_process_and_a_dead_ones_is_taken_over(tmp_path, caplog):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        lock = json.loads((run_dir / LOCK_NAME).read_text())
        assert lock["pid"] == holder.pid and lock["host"]
        with pytest.raises(LightcycleError) as info:
            claim_run_dir(run_dir, resume=True)  # resuming does not license a second process either
        assert f"is in use by another run (pid {holder.pid} on {lock['host']}" in str(info.value)
        assert "\n" not in str(info.value)
        holder.send_signal(signal.SIGKILL)  # no chance to remove its lock
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert (run_dir / LOCK_NAME).is_file()
    folder = claim_run_dir(run_dir)
    assert folder is not None and json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    with caplog.at_level("INFO", logger="lightcycle"):
        folder.log_notes()
    assert f"took over the lock {run_dir / LOCK_NAME} of pid {holder.pid}" in caplog.text
    assert claim_run_dir(run_dir) is folder  # this process holds it: claiming again is no conflict
    assert claim_run_dir(tmp_path / "x" / ".." / "run") is folder  # however the folder is spelt
    folder.release()
    assert not (run_dir / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_lock_is_released_when_the_process_exits(tmp_path):
    run_dir = tmp_path / "run"
    code = "import sys; from lightcycle.run.folder import claim_run_dir; claim_run_dir(sys.argv[1]); raise SystemExit(3)"
    assert subprocess.run([sys.executable, "-c", code, str(run_dir)], timeout=120).returncode == 3
    assert run_dir.is_dir() and not (run_dir / LOCK_NAME).exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(LockHolder(12345, "some-other-node", "2024-01-01 00:00:00", "t").to_json())
    with pytest.raises(LightcycleError, match=r"pid 12345 on some-other-node .*another host.*delete .*lightcycle.lock"):
        claim_run_dir(run_dir)


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    me = LockHolder.this_process()
    if me.start_ticks is None:
        pytest.skip("process start times need /proc")
    stale = LockHolder(os.getppid(), me.host, "2024-01-01 00:00:00", "old", start_ticks=1)  # alive, but not the holder
    (run_dir / LOCK_NAME).write_text(stale.to_json())
    with run_folder(run_dir) as folder:
        assert folder is not None and "took over" in folder.notes[0]


@pytest.mark.parametrize(
    "env, rank",
    [
        ({}, 0),
        ({"LOCAL_RANK": "1"}, 1),  # Lightning's DDP launcher: the re-run script
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, 0),  # Lightning's launching process
        ({"NODE_RANK": "1"}, 1),  # Lightning multi-node: node 1's launching process
        ({"NODE_RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}, 5),
        ({"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1"}, 3),  # torchrun
        ({"RANK": "0", "LOCAL_RANK": "0", "SLURM_PROCID": "2"}, 0),  # torchrun inside a SLURM allocation
        ({"SLURM_PROCID": "2", "SLURM_LOCALID": "0"}, 2),  # srun
        ({"OMPI_COMM_WORLD_RANK": "1"}, 1),
    ],
)
def test_process_rank_reads_every_launcher(env, rank):
    assert process_rank(env) == rank
    assert is_global_zero(env) == (rank == 0)


def test_other_ranks_neither_take_nor_are_refused_by_the_folder(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    files = _old_run(run_dir)
    with run_folder(run_dir, resume=True):  # rank 0 holds it for the whole run
        lock = (run_dir / LOCK_NAME).read_bytes()
        monkeypatch.setenv("LOCAL_RANK", "1")
        with run_folder(run_dir) as other:  # a DDP process of the same run: no lock, no refusal
            assert other is None
        assert (run_dir / LOCK_NAME).read_bytes() == lock
        monkeypatch.delenv("LOCAL_RANK")
    assert _tree(run_dir) == files


def test_a_run_dir_that_cannot_be_created_or_written_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(LightcycleError, match=rf"hydra.run.dir={blocker}/run: cannot create the run dir: {blocker} is a file"):
        claim_run_dir(blocker / "run")


def test_interrupted_run_says_where_to_resume_from(tmp_path):
    stop = RunInterrupted(tmp_path / "run")
    assert stop.checkpoint is None and isinstance(stop, KeyboardInterrupt)
    assert "before the first checkpoint" in stop.describe() and "overwrite=true" in stop.describe()
    import torch

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 7, "state_dict": {}}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    stop = RunInterrupted(tmp_path / "run")
    assert stop.checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt" and stop.step == 7
    assert stop.describe() == f"interrupted; the last checkpoint is {stop.checkpoint}, saved after step 7"


def test_a_lock_naming_no_possible_process_is_refused_as_unreadable(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / LOCK_NAME
    import socket

    lock.write_text(json.dumps({"pid": 99999999999999999999, "host": socket.gethostname(), "since": "x", "token": "t"}))
    with pytest.raises(LightcycleError, match=f"has a lock file {lock} that cannot be read"):
        claim_run_dir(run_dir)
    assert lock.is_file()


def test_a_read_only_run_dir_is_one_line_even_when_cleaning_up_fails(tmp_path, monkeypatch):
    import errno

    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(LightcycleError, match=rf"hydra.run.dir={run_dir}: cannot write into the run dir \(Read-only file system\)"):
        claim_run_dir(run_dir)


def test_the_guard_stops_the_run_in_one_line_on_any_failure(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    import lightcycle.cli.run_dir as guard_module

    def broken(*args, **kwargs):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(guard_module, "claim_run_dir", broken)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "run")}, "output_subdir": ".hydra"}})
    with pytest.raises(SystemExit) as info:
        guard_module.RunDirGuard().on_run_start(config)
    assert info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"lightcycle-train: error: hydra.run.dir={tmp_path / 'run'}: cannot claim the run dir (RuntimeError: something unexpected)"
    ]
    assert config.hydra.output_subdir == ".hydra"  # nothing deferred for a refused run


def test_the_guard_defers_the_record_until_the_run_writes_it(tmp_path):
    from omegaconf import OmegaConf

    from lightcycle.cli.run_dir import RunDirGuard

    run_dir = tmp_path / "run"
    config = OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}, "output_subdir": ".hydra"}})
    guard = RunDirGuard()
    guard.on_run_start(config)
    try:
        assert config.hydra.output_subdir is None and (run_dir / LOCK_NAME).is_file()  # Hydra writes no record
    finally:
        guard.on_run_end(config)
    assert not (run_dir / LOCK_NAME).exists()
