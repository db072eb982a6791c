"""The demo's wall time with lightcycle's thread rule against torch's default threads, quiet and beside
one competing busy process.

Each run is `lightcycle-train` (the demo, `trainer.max_epochs=EPOCHS`) in its own process, timed from
start to exit. "rule": no OMP_NUM_THREADS, so lightcycle sets the training process's threads from the
cores the DataLoader workers leave (lightcycle.run.threads); "torch default": OMP_NUM_THREADS=<cores>,
torch's own default, which lightcycle leaves alone. "busy": one `while True: pass` process runs beside
the training (another user's job on the machine). Run it under the benchmark lock:

    flock /tmp/lightcycle-bench.lock python bench/threads.py --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common


def run_demo(epochs: int, threads_env: str | None, busy: bool, timeout: float) -> float | None:
    """Seconds of one demo run (None when it passed `timeout`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads_env is not None:
        env["OMP_NUM_THREADS"] = threads_env
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = ["lightcycle-train", f"hydra.run.dir={tmp}/run", f"trainer.max_epochs={epochs}", "tta.n=0"]
            start = time.perf_counter()
            try:
                subprocess.run(cmd, env=env, check=True, timeout=timeout, capture_output=True)
            except subprocess.TimeoutExpired:
                return None
            return time.perf_counter() - start
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a run counts as '> timeout'")
    args = parser.parse_args()
    print(json.dumps(common.machine()), flush=True)
    run_demo(1, None, False, args.timeout)  # warm the demo data cache and the imports
    for busy in (False, True):
        for label, env in (("rule", None), ("torch default", str(common.cores()))):
            seconds = run_demo(args.epochs, env, busy, args.timeout)
            shown = f"> {args.timeout:.0f}" if seconds is None else f"{seconds:.1f}"
            print(json.dumps({"threads": label, "busy_process": busy, "seconds": shown}), flush=True)


if __name__ == "__main__":
    main()
