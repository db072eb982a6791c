"""Serving under load: `lightcycle-serve` (LitServe, dynamic batching on and off) beside the course's way
of serving (fastai's `load_learner` + `learn.predict` per request in a plain web handler).

Both serve the same architecture at the same input size on the same CPU: timm's efficientnet_lite0 with
the bundled ImageNet weights and a 6-class head for the demo classification data, centre-cropped to
`--size`. lightcycle's checkpoint is saved after one training step (enough to record the framing and
normalisation it serves with); fastai's learner is `vision_learner` on the same folder, exported with
`learn.export` and loaded with `load_learner`, as the course deploys. Each server runs in its own
process on 127.0.0.1 and is driven by `--clients` concurrent keep-alive clients that POST the demo
validation JPEGs as raw bytes (`--requests` per level, each level bounded by `--level-seconds`),
reporting requests/s and p50/p95/p99 latency, and counting every non-200 answer as an error.

Then the memory check: lightcycle-serve's resident memory (the whole process tree: web process,
inference worker, LitServe's queue manager) after `--rss-first` requests and again after
`--rss-total` (10^3 and 10^4 by default).

`--runtime torch onnx` serves lightcycle's checkpoint once per runtime (the model's forward pass in
torch or in ONNX Runtime); `--no-fastai` and `--rss-total 0` leave out fastai's server and the memory check.

    flock /tmp/lightcycle-bench.lock python bench/serve.py                      # docs/benchmarks.md
    flock /tmp/lightcycle-bench.lock python bench/serve.py --runtime torch onnx --no-fastai --rss-total 0
    python bench/serve.py --quick                                               # a smoke run
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: the handlers' annotations are resolved in this module

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HOST = "127.0.0.1"


# --- the two models ---------------------------------------------------------------------------------------
def demo_folder() -> Path:
    from lightcycle.data.demo import demo_root

    return demo_root("classification")


def lightcycle_checkpoint(work: Path, size: int) -> Path:
    """efficientnet_lite0 (bundled weights) after one training step on the demo classes, saved as lightcycle-train saves."""
    from lightcycle.data import FolderDataModule
    from lightcycle.module import VisionModule
    from lightning import Trainer

    dm = FolderDataModule(demo_folder(), size=size, batch_size=16, num_workers=0, backbone=common.BACKBONE)
    model = VisionModule(dm.make_task(), backbone=common.BACKBONE, pretrained="bundled", lr=1e-3)
    trainer = Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    path = work / "lightcycle.ckpt"
    trainer.save_checkpoint(path)
    return path


def fastai_export(work: Path, size: int) -> Path:
    """fastai's learner for the same folder and architecture (bundled weights in its timm body), exported."""
    from fastai.vision.all import ImageDataLoaders, Resize, vision_learner

    dls = ImageDataLoaders.from_folder(demo_folder(), train="train", valid="valid", item_tfms=Resize(size), bs=16,
                                       num_workers=0, device="cpu")
    learn = vision_learner(dls, common.BACKBONE, pretrained=False)
    common.load_bundled(common.fastai_timm_body(learn))
    path = work / "fastai.pkl"
    learn.export(path)
    return path


def fastai_server(pkl: str, port: int, threads: int) -> None:
    """The course's deployment: load_learner once, learn.predict on each request's image in the handler."""
    import torch
    import uvicorn
    from fastai.vision.all import PILImage, load_learner
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    torch.set_num_threads(threads)
    learn = load_learner(pkl)
    app = FastAPI()

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse("ok")

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        image = PILImage.create(await request.body())
        with learn.no_bar():
            label, _, probs = learn.predict(image)
        return JSONResponse({"label": str(label), "probabilities": dict(zip(map(str, learn.dls.vocab), probs.tolist()))})

    uvicorn.run(app, host=HOST, port=port, log_level="warning")


# --- servers, clients, memory -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log: Path, threads: int) -> subprocess.Popen:
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS=str(threads)))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{cmd[:4]} not ready: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tree_pss_mb(pid: int) -> float:
    """Memory of `pid` and every process below it, in MiB: the proportional set size (from /proc), so
    pages the forked web process shares with its parent count once, not once per process."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def drive(port: int, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """`clients` keep-alive clients POST images until `requests` were sent or `seconds` passed."""
    lock = threading.Lock()
    latencies: list[float] = []
    state = {"sent": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        while True:
            with lock:
                if state["sent"] >= requests or time.monotonic() > deadline:
                    break
                n = state["sent"]
                state["sent"] += 1
            began = time.perf_counter()
            try:
                conn.request("POST", "/predict", bodies[n % len(bodies)], {"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                ok = response.status == 200 and "label" in json.loads(response.read())
            except (OSError, ValueError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=120)
            with lock:
                latencies.append(time.perf_counter() - began)
                state["errors"] += 0 if ok else 1
        conn.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"clients": clients, "requests": len(latencies), "errors": state["errors"],
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * q[49], 1), "p95_ms": round(1000 * q[94], 1), "p99_ms": round(1000 * q[98], 1)}


def contenders(ckpt: Path, pkl: Path | None, threads: int, runtimes: tuple[str, ...] = ("auto",)) -> dict[str, list[str]]:
    """The servers to drive: lightcycle-serve per runtime, batching on and off, then fastai's (unless `pkl` is None)."""
    out: dict[str, list[str]] = {}
    for runtime in runtimes:
        serve = [sys.executable, "-m", "lightcycle.cli.serve", f"ckpt={ckpt}", "device=cpu", f"threads={threads}",
                 f"runtime={runtime}"]
        tag = "" if runtime == "auto" else f" runtime={runtime},"
        out[f"lightcycle-serve,{tag} batching on (max_batch_size=8)"] = [*serve, "max_batch_size=8", "batch_timeout=0.005"]
        out[f"lightcycle-serve,{tag} batching off (max_batch_size=1)"] = [*serve, "max_batch_size=1"]
    if pkl is not None:
        out["fastai load_learner + learn.predict"] = [sys.executable, __file__, "--fastai-server", str(pkl), "--threads", str(threads)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few requests: check that it runs")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    parser.add_argument("--level-seconds", type=float, default=120, help="time bound of one level")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each model process (1: on a shared machine more threads only spin)")
    parser.add_argument("--runtime", nargs="+", default=["auto"], choices=["auto", "torch", "onnx"],
                        help="lightcycle-serve's runtime= (several: one server each, side by side)")
    parser.add_argument("--no-fastai", action="store_true", help="leave out fastai's server")
    parser.add_argument("--rss-first", type=int, default=1000)
    parser.add_argument("--rss-total", type=int, default=10000)
    parser.add_argument("--fastai-server", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fastai_server:
        common.quiet()
        return fastai_server(args.fastai_server, int(args.port), int(args.threads))
    if args.quick:
        args.requests, args.rss_first, args.rss_total, args.clients = 40, 50, 200, [1, 8]
    common.quiet()
    threads = int(args.threads)
    import torch

    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="lightcycle-bench-serve-"))
    ckpt = lightcycle_checkpoint(work, args.size)
    pkl = None if args.no_fastai else fastai_export(work, args.size)
    runtimes = tuple(args.runtime)
    bodies = [p.read_bytes() for p in sorted((demo_folder() / "valid").rglob("*.jpg"))]
    results: dict[str, list[dict[str, Any]]] = {}
    for name, cmd in contenders(ckpt, pkl, threads, runtimes).items():
        port = free_port()
        cmd = [*cmd, f"port={port}"] if "lightcycle.cli.serve" in cmd else [*cmd, "--port", str(port)]
        proc = start(cmd, port, work / f"{len(results)}.log", threads)
        try:
            drive(port, bodies, 4, 40, 60)  # warm-up
            results[name] = []
            for clients in args.clients:
                row = drive(port, bodies, clients, args.requests, args.level_seconds)
                print(f"{name}: {row}", flush=True)
                results[name].append(row)
        finally:
            stop(proc)
    if args.rss_total <= 0:
        common.report("serve", {"size": args.size, "threads": threads, "results": results})
        return
    port = free_port()
    proc = start([*next(iter(contenders(ckpt, None, threads, runtimes[:1]).values())), f"port={port}"],
                 port, work / "rss.log", threads)
    try:
        first = drive(port, bodies, 8, args.rss_first, 3600)
        rss_first = tree_pss_mb(proc.pid)
        rest = drive(port, bodies, 8, args.rss_total - args.rss_first, 3600)
        rss_total = tree_pss_mb(proc.pid)
    finally:
        stop(proc)
    memory = {"requests_first": first["requests"], "pss_mb_first": round(rss_first, 1),
              "requests_total": first["requests"] + rest["requests"], "pss_mb_total": round(rss_total, 1),
              "growth_pct": round(100 * (rss_total / rss_first - 1), 1), "errors": first["errors"] + rest["errors"]}
    print(f"memory: {memory}", flush=True)
    common.report("serve", {"size": args.size, "threads": threads, "results": results, "memory": memory})


if __name__ == "__main__":
    main()
