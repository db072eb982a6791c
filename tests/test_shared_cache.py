"""One cache folder shared by several processes (DDP ranks, nodes on a shared filesystem): one builds, the others wait.

These start real, separate Python processes on one folder at the same moment, as two nodes that
share `$LIGHTCYCLE_CACHE` would, and check that exactly one of them builds, that the others return
the complete folder and never see a half-written one, and that a builder killed half-way is taken over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lightcycle.publish import lock_path, publish_once
from tests.nodes import node_env

# Waits for the start signal, then builds `target` through publish_once: the build writes its
# files slowly, so a waiter that read too early would see them half-written.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from lightcycle.publish import publish_once

    target, go, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    build_seconds = float(sys.argv[4])

    def build(tmp):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        for i in range(5):
            (tmp / f"part{i}.txt").write_text(str(os.getpid()) * 1000)
            time.sleep(build_seconds / 5)
        (tmp / "done").write_text(str(os.getpid()))

    (go.parent / f"ready-{os.getpid()}").write_text("")
    while not go.exists():
        time.sleep(0.01)
    out = publish_once(target, build, is_complete=lambda p: (p / "done").is_file(), poll=0.05)
    print(json.dumps({"pid": os.getpid(), "files": {p.name: p.read_text() for p in sorted(out.iterdir())}}))
    """
)


def _start_workers(tmp_path: Path, n: int, build_seconds: float = 1.0) -> tuple[list[subprocess.Popen], Path, Path]:
    target, go, log = tmp_path / "cache" / "thing", tmp_path / "go", tmp_path / "builders.log"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(target), str(go), str(log), str(build_seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node_env())
        for _ in range(n)
    ]
    _wait_ready(tmp_path, procs)
    go.write_text("go")
    return procs, target, log


def _wait_ready(folder: Path, procs: list[subprocess.Popen]) -> None:
    """Until every process has imported everything and polls for the start signal."""
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < len(procs):
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.05)


def _finish(procs: list[subprocess.Popen], timeout: float = 60) -> list[dict]:
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    return results


@pytest.mark.slow
def test_three_processes_one_builder_and_nobody_reads_a_half_written_folder(tmp_path):
    procs, target, log = _start_workers(tmp_path, 3)
    results = _finish(procs)
    builders = log.read_text().split()
    assert len(builders) == 1  # one process built; the other two waited
    expected = {"done": builders[0], **{f"part{i}.txt": builders[0] * 1000 for i in range(5)}}
    for result in results:  # every process returned the complete folder, all of it from the one builder
        assert result["files"] == expected
    leftovers = sorted(p.name for p in target.parent.iterdir())
    assert leftovers == ["thing"]  # no lock, no temp folder


@pytest.mark.slow
def test_a_builder_killed_half_way_is_taken_over(tmp_path):
    procs, target, log = _start_workers(tmp_path, 2, build_seconds=60.0)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().split()):
            assert time.monotonic() < deadline, "no process started building"
            time.sleep(0.05)
        first = int(log.read_text().split()[0])
        victim = next(p for p in procs if p.pid == first)
        victim.send_signal(signal.SIGKILL)  # killed mid-build: the lock stays behind, naming a dead pid
        victim.wait(timeout=30)
        survivor = next(p for p in procs if p.pid != first)
        deadline = time.monotonic() + 30
        while len(log.read_text().split()) < 2:  # the survivor sees the dead pid and builds in its turn
            assert time.monotonic() < deadline, "the waiting process did not take over"
            assert survivor.poll() is None, survivor.communicate()[1][-3000:]
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
    assert [int(x) for x in log.read_text().split()] == [first, survivor.pid]
    assert not (target / "done").exists() or (target / "done").read_text() == str(survivor.pid)


def test_a_stale_lock_from_another_machine_is_broken_after_its_heartbeat_stops(tmp_path):
    target = tmp_path / "thing"
    lock = lock_path(target)
    lock.write_text(json.dumps({"host": "another-node", "pid": 12345, "token": "abc"}))  # never touched again
    built = []
    start = time.monotonic()
    publish_once(target, lambda tmp: built.append((tmp / "x").write_text("1")), stale_after=1.0, poll=0.05)
    assert built and (target / "x").read_text() == "1"
    assert 1.0 <= time.monotonic() - start < 10
    assert not lock.exists()


@pytest.mark.slow
def test_a_waiter_keeps_waiting_while_the_heartbeat_goes_on(tmp_path, monkeypatch):
    import lightcycle.publish as publish

    monkeypatch.setattr(publish, "HEARTBEAT_S", 0.2)
    target = tmp_path / "thing"
    code = textwrap.dedent(
        f"""
        import time
        import lightcycle.publish as publish
        publish.HEARTBEAT_S = 0.2
        def build(tmp):
            time.sleep(3.0)  # longer than the waiter's stale_after: only the heartbeat keeps the lock alive
            (tmp / "x").write_text("builder")
        publish.publish_once({str(target)!r}, build)
        """
    )
    builder = subprocess.Popen([sys.executable, "-c", code], env=node_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not lock_path(target).exists():
            assert builder.poll() is None, builder.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # a waiter on another "machine" cannot check the pid: only the heartbeat says the builder lives
        monkeypatch.setattr(publish, "_owner_exited", lambda owner: False)
        publish_once(target, lambda tmp: pytest.fail("the waiter built although the builder was alive"),
                     stale_after=1.0, poll=0.05)
        assert (target / "x").read_text() == "builder"
    finally:
        builder.kill()
        builder.wait(timeout=30)


def test_a_failing_builder_lets_the_next_process_try(tmp_path):
    target = tmp_path / "thing"
    with pytest.raises(RuntimeError, match="disk full"):
        publish_once(target, lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert not lock_path(target).exists() and not target.exists()
    assert sorted(os.listdir(tmp_path)) == []  # the temp folder is gone too
    publish_once(target, lambda tmp: (tmp / "x").write_text("1"))
    assert (target / "x").read_text() == "1"


@pytest.mark.slow
def test_demo_data_from_two_processes_on_one_fresh_cache_is_generated_once(tmp_path):
    """Two ranks (or nodes) asking for the demo data at once: one generates it, the other waits for it."""
    cache, go = tmp_path / "cache", tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import logging, os, time
        from pathlib import Path
        from lightcycle.data import demo
        logging.basicConfig(level=logging.INFO)
        demo.CLASSIFICATION_COUNTS = (4, 2)  # small: the race, not the drawing, is under test
        Path({str(tmp_path)!r}, f"ready-{{os.getpid()}}").write_text("")
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        root = demo.demo_root("classification", {str(cache)!r})
        print(len(list(root.rglob("*.jpg"))))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=node_env()) for _ in range(2)]
    _wait_ready(tmp_path, procs)
    go.write_text("go")
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            outputs.append((out, err))
    finally:
        for p in procs:
            p.kill()
    assert [out.strip() for out, _ in outputs] == ["36", "36"]  # 6 classes x (4 + 2), complete for both
    logs = "".join(err for _, err in outputs)
    assert logs.count("generating the classification demo data") == 1
    assert "waiting for the classification demo data" in logs
    assert sorted(p.name for p in (cache / "demo").iterdir()) == ["classification-v1-seed0"]
