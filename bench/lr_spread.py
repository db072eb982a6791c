"""fastai's 2 parameter groups against timm's finer layer groups for the unfrozen stage's discriminative
learning rates: `recipe.lr_spread=body` (every body group at lr / lr_mult, fastai's `fine_tune` on a timm
model) against `recipe.lr_spread=geometric` (lr / lr_mult at the stem rising geometrically to lr at the
head over efficientnet_lite0's 9 groups), in `experiment=fine_tune` and `experiment=world_class`.

Every run: `lightcycle-train experiment=EXP recipe.lr_spread=SPREAD recipe.epochs=EPOCHS data=folder
data.root=DATA data.size=SIZE seed=SEED` with the bundled ImageNet weights; prints one JSON line each with
the final validation error rate (and world_class's TTA and snapshot-ensemble errors).

    python bench/photos.py /tmp/photos --train 24 --valid 20
    python bench/lr_spread.py --data /tmp/photos --size 96 --epochs 4 --experiments fine_tune world_class
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(experiment: str, spread: str, args: argparse.Namespace, seed: int) -> dict[str, object]:
    run_dir = args.out / f"{experiment}-{spread}-{args.epochs}-s{seed}"
    cmd = ["lightcycle-train", f"experiment={experiment}", f"recipe.lr_spread={spread}", f"recipe.epochs={args.epochs}",
           "data=folder", f"data.root={args.data}", f"data.size={args.size}", f"seed={seed}", "interpret.top_k=0",
           f"hydra.run.dir={run_dir}", "overwrite=true", *args.extra]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    errors = {f"{k[:-len('accuracy')]}error": round(1 - v, 4) for k, v in metrics.items() if k.endswith("accuracy")}
    return {"experiment": experiment, "lr_spread": spread, "epochs": args.epochs, "seed": seed, **errors,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=4, help="recipe.epochs")
    parser.add_argument("--experiments", nargs="+", default=["fine_tune", "world_class"])
    parser.add_argument("--spreads", nargs="+", default=["body", "geometric"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lr-spread"))
    parser.add_argument("extra", nargs="*", help="more lightcycle-train overrides for every run")
    args = parser.parse_args()
    for experiment in args.experiments:
        for seed in args.seeds:
            for spread in args.spreads:
                print(json.dumps(run(experiment, spread, args, seed)), flush=True)


if __name__ == "__main__":
    main()
