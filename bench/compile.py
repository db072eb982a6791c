"""`model.compile=true` on the CPU: compile time and steady-state training step, eager vs torch.compile.

lightcycle's VisionModule in the Trainer lightcycle-train builds (fp32, `trainer=cpu`), in-memory
tensors at the demo's 64 px and batch 64, all layers training. Each measurement is a fresh process
(a compiled module is cached per process): `eager`, `compiled_cold` (an empty inductor cache: what a
first run pays) and `compiled_warm` (the cache the cold run left: a second run of the same model and
shapes on the same machine). Per run: seconds from `trainer.fit` to the end of the first step
(compilation happens there), and the median of the steps after `--warmup` more.

    python bench/compile.py --quick     # efficientnet_lite0 only, 1 repeat
    python bench/compile.py             # efficientnet_lite0 and resnet18, 2 repeats (interleaved)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

MODELS = ("efficientnet_lite0", "resnet18")


def measure(backbone: str, compile: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One fit in this process: seconds to the end of step 1, and the median later step."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lightcycle.module import VisionModule
    from lightcycle.tasks import ClassificationTask
    from setups import lightcycle_trainer

    starts: list[float] = []

    class Times(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            starts.append(time.perf_counter())

    n = 1 + args.warmup + args.steps + 1
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n * args.batch_size, 3, args.size, args.size, generator=g),
                       torch.randint(0, 6, (n * args.batch_size,), generator=g))
    torch.manual_seed(0)
    pretrained = "bundled" if backbone == "efficientnet_lite0" else False
    model = VisionModule(ClassificationTask(class_names=[f"c{i}" for i in range(6)]), backbone=backbone,
                         pretrained=pretrained, compile=compile)
    with tempfile.TemporaryDirectory() as out:
        trainer = lightcycle_trainer(out, [Times()], max_epochs=1, limit_train_batches=n, limit_val_batches=0,
                                     num_sanity_val_steps=0)
        begin = time.perf_counter()
        trainer.fit(model, train_dataloaders=DataLoader(ds, batch_size=args.batch_size, num_workers=0))
    steps = [1e3 * (b - a) for a, b in zip(starts, starts[1:])][1 + args.warmup:]
    return {"first_step_s": round(starts[1] - begin, 2), "step_ms": round(common.median(steps), 1)}


def run_child(kind: str, backbone: str, args: argparse.Namespace, cache: str) -> dict[str, Any]:
    """`kind` of `backbone` in a fresh process whose inductor cache is `cache`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--model", backbone,
           "--size", str(args.size), "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
           "--steps", str(args.steps)]
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1100)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="efficientnet_lite0 only, 1 repeat")
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--child", choices=("eager", "compiled_cold", "compiled_warm"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.quiet()
    common.use_all_cores()
    if args.child:
        print(json.dumps(measure(args.model, args.child != "eager", args)))
        return
    models = args.models or (["efficientnet_lite0"] if args.quick else list(MODELS))
    repeats = args.repeats or (1 if args.quick else 2)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {m: {} for m in models}
    for r in range(repeats):
        for backbone in models:
            with tempfile.TemporaryDirectory() as cache:
                for kind in ("eager", "compiled_cold", "compiled_warm"):
                    value = run_child(kind, backbone, args, cache)
                    results[backbone].setdefault(kind, []).append(value)
                    print(f"  repeat {r + 1}/{repeats} {backbone} {kind}: {value}", flush=True)
    summary: dict[str, Any] = {}
    for backbone, kinds in results.items():
        summary[backbone] = {}
        for kind, runs in kinds.items():
            ok = [x for x in runs if "error" not in x]
            summary[backbone][kind] = {k: round(common.median([x[k] for x in ok]), 2) for k in ("first_step_s", "step_ms")} \
                if ok else runs[-1]
        eager, cold = summary[backbone].get("eager", {}), summary[backbone].get("compiled_cold", {})
        if "step_ms" in eager and "step_ms" in cold and eager["step_ms"] > cold["step_ms"]:
            saved = (eager["step_ms"] - cold["step_ms"]) / 1e3
            summary[backbone]["break_even_steps_cold"] = round((cold["first_step_s"] - eager["first_step_s"]) / saved)
    common.report("compile", {"size": args.size, "batch_size": args.batch_size, "warmup": args.warmup,
                              "steps": args.steps, "repeats": repeats, "median": summary, "all": results})


if __name__ == "__main__":
    main()
