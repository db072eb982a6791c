"""The documented flows after a default run, as a new user types them: the first training command, then
every documented command on its run (interpret, clean, predict, export, the ONNX runner, serve, resume), read
verbatim from the README and the "Using a model" and "Runs and reliability" pages (docs/using-a-model.md,
docs/reliability.md), so the documentation cannot drift from what works.

One tiny training serves them all: the documented `lightcycle-train hydra.run.dir=outputs/demo`,
shortened by overrides appended to it (one epoch of two batches, no end-of-run report). Everything
else runs exactly as written, in a fresh working folder whose $HOME is a temporary one, so
`$HOME/.cache/lightcycle` is the default cache the pages name; only the resume line's example run
dir (`outputs/myrun`) is replaced by the demo's.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib
import pytest
import torch

from tests import documented
from tests.serving import free_port

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = "outputs/demo"
FIRST = f"lightcycle-train hydra.run.dir={RUN_DIR}"
# appended to every lightcycle-train line: a run of seconds instead of minutes, everything else default
SHORTEN = "trainer.max_epochs={epochs} +trainer.limit_train_batches=2 +trainer.limit_val_batches=2 interpret.top_k=0 show_batch.n=0"


def documented_flow() -> tuple[str, list[str]]:
    """(the first training command, the follow-up commands on its run) as the README and the pages write them."""
    lines = documented.commands("using-a-model.md") + documented.commands("README.md")
    assert FIRST in lines, f"docs/using-a-model.md no longer trains with {FIRST!r}"
    follow_ups = [line for line in dict.fromkeys(lines) if RUN_DIR in line and line != FIRST]
    resume = re.findall(r"`(lightcycle-train hydra\.run\.dir=(\S+) resume=true)`", documented.section("reliability.md", "Resuming"))
    assert len(resume) == 1, resume
    line, example_dir = resume[0]
    follow_ups.append(line.replace(f"hydra.run.dir={example_dir}", f"hydra.run.dir={RUN_DIR}"))
    return FIRST, follow_ups


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A working folder (with the repository's docs/, as in a checkout) and the environment of a new user."""
    work = tmp_path_factory.mktemp("work")
    (work / "docs").symlink_to(REPO / "docs")
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if k != "LIGHTCYCLE_CACHE"}
    env.update(HOME=str(home), MPLCONFIGDIR=matplotlib.get_configdir(), NO_ALBUMENTATIONS_UPDATE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p))
    return work, env


def shell(line: str, work: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def started(line: str, work: Path, env: dict[str, str], ready: str) -> tuple[subprocess.Popen, str]:
    """Start a documented server line on a free port; (the process, its URL) once `ready` answers 200."""
    port = free_port()
    line = line.replace("port=8000", f"port={port}") if "port=8000" in line else f"{line} port={port}"
    proc = subprocess.Popen(["bash", "-c", "exec " + line], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 240
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"{line.split()[0]} never answered {ready}"
        try:
            with urllib.request.urlopen(url + ready, timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)


def get_json(url: str, data: bytes | None = None, content_type: str = "application/json") -> dict:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if data else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def stopped(proc: subprocess.Popen) -> None:
    """Stop a server as a container runtime would (SIGTERM): no traceback on the way out."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    assert "Traceback" not in out, out[-3000:]


def serve_and_ask(line: str, work: Path, env: dict[str, str], image: Path) -> dict:
    """Run the documented lightcycle-serve line (on a free port instead of 8000) until /health answers,
    POST one image, then stop it."""
    assert "port=8000" in line, line
    proc, url = started(f"{line} threads=1", work, env, "/health")
    try:
        return get_json(url + "/predict", image.read_bytes(), "application/octet-stream")
    finally:
        stopped(proc)


def clean_and_look(line: str, work: Path, env: dict[str, str]) -> tuple[dict, dict, str]:
    """Run the documented lightcycle-clean line until its page answers; (/info, the worst page of
    /images, what Apply answers for one removal) — the demo's generated files are refused, in words."""
    proc, url = started(line, work, env, "/info")
    try:
        info, worst = get_json(url + "/info"), get_json(url + "/images?limit=5")
        request = urllib.request.Request(url + "/apply", method="POST", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"changes": [{"key": worst["rows"][0]["key"],
                                                                       "action": "remove"}]}).encode())
        try:
            urllib.request.urlopen(request, timeout=60)
            refusal = ""
        except urllib.error.HTTPError as error:
            refusal = json.loads(error.read())["error"]
        return info, worst, refusal
    finally:
        stopped(proc)


@pytest.mark.slow
def test_every_documented_command_works_on_a_default_run(workspace):
    work, env = workspace
    first, follow_ups = documented_flow()
    assert {"lightcycle-interpret", "lightcycle-clean", "lightcycle-predict", "lightcycle-export", "lightcycle-serve",
            "python"} <= {
        line.split()[0] for line in follow_ups}, follow_ups
    shell(f"{first} {SHORTEN.format(epochs=1)}", work, env)
    run = work / RUN_DIR
    assert "batch_size: auto" in (run / ".hydra" / "config.yaml").read_text()  # the default the readers must handle
    valid = Path(env["HOME"]) / ".cache" / "lightcycle" / "demo" / "classification-v1-seed0" / "valid"
    n_valid = sum(1 for p in valid.rglob("*.jpg"))
    assert n_valid > 0

    def check(line: str) -> None:
        """Run one documented command on the run and check what it gave."""
        program = line.split()[0]
        if program == "lightcycle-serve":  # a server: start it, ask it about one picture, stop it
            image = next(valid.rglob("*.jpg"))
            answer = serve_and_ask(line, work, env, image)
            assert answer["label"] in {p.parent.name for p in valid.rglob("*.jpg")}, answer
            return
        if program == "lightcycle-clean":  # a page: both splits scored, the demo's generated files refused on Apply
            info, worst, refusal = clean_and_look(line, work, env)
            assert info["counts"]["valid"] == n_valid and info["counts"]["train"] > 0, info
            losses = [row["loss"] for row in worst["rows"]]
            assert losses == sorted(losses, reverse=True), losses
            assert "demo data" in refusal and "copy it" in refusal, refusal
            return
        result = shell(line, work, env)
        if program == "lightcycle-interpret":
            with open(run / "interpret" / "top_losses.csv", newline="") as f:
                assert len(list(csv.DictReader(f))) == n_valid
        elif program == "lightcycle-predict":
            with open(run / "predictions.csv", newline="") as f:
                assert len(list(csv.DictReader(f))) == n_valid
        elif program == "lightcycle-export":
            assert (run / "checkpoints" / "last.onnx").is_file() and (run / "checkpoints" / "last.onnx.json").is_file()
        elif program == "python":
            assert "circle" in result.stdout or "circle" in result.stderr, result.stdout[-2000:]

    # the commands that only read the run run two at a time (each an interpreter start-up that would
    # otherwise leave a core idle); the ONNX runner follows the export it reads, in documented order
    readers = [line for line in follow_ups if line.split()[0] != "lightcycle-train"]
    chains: list[list[str]] = []
    for line in readers:
        if line.split()[0] == "python" and chains and chains[-1][-1].split()[0] in ("lightcycle-export", "python"):
            chains[-1].append(line)
        else:
            chains.append([line])
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(lambda chain: [check(line) for line in chain], chain) for chain in chains]:
            done.result()

    for line in follow_ups:  # resume last: it changes the run the readers read
        if line.split()[0] == "lightcycle-train":  # the same shortening, one more epoch
            shell(f"{line} {SHORTEN.format(epochs=2)}", work, env)
            assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
