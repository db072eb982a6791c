"""Two nodes on one machine, for tests: launched as users launch them, on loopback, with a timeout.

Each "node" is its own process tree with its own environment, talking to the other over
127.0.0.1 (gloo), one training process per node. `shell_nodes` runs a documented command line
verbatim through bash once per node, each with its own variables (MASTER_ADDR and MASTER_PORT for
torchrun's rendezvous; NODE_RANK and WORLD_SIZE too for Lightning's own launcher; SLURM_* as srun
sets them).

Every launch records, through tests/write_audit/sitecustomize.py, which process wrote which file
under the run dir and the cache (`writes`). Ports are picked free at run time; `wait` kills every
node when one fails or the timeout passes, so a test never leaves a process behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUDIT = Path(__file__).resolve().parent / "write_audit"
# Variables of a launcher or scheduler that must not leak from the test's own environment into a
# node (a test suite started inside a SLURM allocation or under torchrun would otherwise confuse
# Lightning's cluster detection).
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
TINY = ["model.backbone=test_resnet", "model.pretrained=false", "data.size=32", "data.num_workers=0"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(extra: dict[str, str] | None = None, audit: Path | None = None, watch: list[Path] = ()) -> dict[str, str]:
    """The environment of one node: the test's, minus launcher variables, plus the write audit."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARS and not k.startswith(("SLURM_", "TORCHELASTIC_", "PET_"))}
    paths = [str(REPO), *(p for p in (env.get("PYTHONPATH"),) if p)]
    if audit is not None:
        paths.insert(0, str(AUDIT))
        env["LIGHTCYCLE_TEST_WRITE_LOG"] = str(audit)
        env["LIGHTCYCLE_TEST_WRITE_UNDER"] = os.pathsep.join(str(p) for p in watch)
    env.update(PYTHONPATH=os.pathsep.join(paths), NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    env.update(extra or {})
    return env


@dataclass
class Node:
    rank: int
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, rank: int) -> Node:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # a file, not a pipe: a chatty node can never block on a full pipe
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Node(rank, proc, log)


def shell_nodes(command: str, cwd: Path, logs: Path, envs: list[dict[str, str]]) -> list[Node]:
    """A shell command line (a documented line, verbatim) once per node, each with its own environment."""
    return [_start(["bash", "-c", command], env, cwd, logs / f"node{rank}.log", rank) for rank, env in enumerate(envs)]


def kill(nodes: list[Node]) -> None:
    """SIGKILL every node's whole process group (torchrun and its workers, Lightning and its children)."""
    for node in nodes:
        if node.proc.poll() is None:
            try:
                os.killpg(node.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for node in nodes:
        node.proc.wait(timeout=60)


def wait(nodes: list[Node], timeout: float) -> list[int]:
    """Wait for every node; the first failure or the timeout kills them all. Returns the exit codes."""
    deadline = time.monotonic() + timeout
    try:
        while any(n.proc.poll() is None for n in nodes):
            if any(n.proc.returncode not in (None, 0) for n in nodes):
                break  # one node failed: the others would wait for it forever
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes still running after {timeout:.0f} s:\n" + report(nodes))
            time.sleep(0.2)
        time.sleep(0.5)  # let a failing node's peers notice and exit by themselves
    finally:
        kill(nodes)
    return [n.proc.returncode for n in nodes]


def report(nodes: list[Node], tail: int = 3000) -> str:
    return "\n".join(f"--- node {n.rank} (exit {n.proc.returncode}):\n{n.output()[-tail:]}" for n in nodes)


def run_nodes(nodes: list[Node], timeout: float = 300) -> None:
    """Wait for `nodes` and fail the test with every node's output when one did not exit 0."""
    codes = wait(nodes, timeout)
    assert codes == [0] * len(nodes), report(nodes)


def writes(audit: Path) -> list[dict]:
    """Every write recorded by tests/write_audit, each with `global_rank` (None: a launcher, not a rank)."""
    records = []
    for path in sorted(audit.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            record["global_rank"] = _global_rank(record)
            records.append(record)
    return records


def _global_rank(record: dict) -> int | None:
    if record["dist_rank"] is not None:
        return record["dist_rank"]
    argv0 = record["argv"][0] if record["argv"] else ""
    if argv0.endswith(("torchrun", os.path.join("torch", "distributed", "run.py"))):
        return None  # torchrun's agent, not a training process
    env = record["env"]
    if "RANK" in env:
        return int(env["RANK"])
    # Lightning's launcher with one process per node (as in these tests): node rank + local rank
    return int(env.get("NODE_RANK", 0)) + int(env.get("LOCAL_RANK", 0))
