"""Small arrays against the same pictures as upscaled files: scikit-learn's 8x8 handwritten digits.

The 1,797 digits (real scans, 8x8 grey, 0-16) are written twice with the same split (seeded, 20 %
validation): as an .npz of 8x8x1 uint8 arrays for `data=arrays`, and as 32x32 PNGs (PIL's bicubic
enlargement) in an ImageFolder for `data=folder`. Each is trained by `lightcycle-train` with the same
settings (efficientnet_lite0 with the bundled weights, `data.size=64`, EPOCHS epochs, seed 0) and the
final validation error rate is printed.

    python bench/small_arrays.py [--epochs 8] [--out /tmp/digits] [--only arrays|folder] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(out: Path, side: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """(the .npz, the ImageFolder) of the same digits and split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # N x 8 x 8, 0-16 -> 0-255
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_valid = len(labels) // 5
    valid, train = order[:n_valid], order[n_valid:]
    npz = out / "digits8.npz"
    folder = out / f"digits{side}"
    if not npz.is_file():
        out.mkdir(parents=True, exist_ok=True)
        np.savez(npz, x_train=images[train][..., None], y_train=labels[train], x_valid=images[valid][..., None],
                 y_valid=labels[valid], classes=np.array([str(i) for i in range(10)]))
    if not (folder / "done").is_file():
        for split, indices in (("train", train), ("valid", valid)):
            for i in indices:
                path = folder / split / str(labels[i]) / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).resize((side, side), Image.Resampling.BICUBIC).save(path)
        (folder / "done").write_text("ok")
    return npz, folder


def train(data: list[str], run_dir: Path, epochs: int, extra: list[str]) -> dict[str, float]:
    cmd = ["lightcycle-train", *data, "data.size=64", f"trainer.max_epochs={epochs}", "seed=0", "tta.n=0",
           "interpret.top_k=0", f"hydra.run.dir={run_dir}", "overwrite=true", *extra]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"val_error_rate": round(1 - metrics["val_accuracy"], 4), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("/tmp/digits"))
    parser.add_argument("--only", choices=("arrays", "folder"))
    parser.add_argument("extra", nargs="*", help="more lightcycle-train overrides for both runs")
    args = parser.parse_args()
    npz, folder = write_digits(args.out)
    runs = {"arrays": ["data=arrays", f"data.path={npz}"], "folder": ["data=folder", f"data.root={folder}"]}
    for name, data in runs.items():
        if args.only in (None, name):
            result = train(data, args.out / f"run-{name}", args.epochs, args.extra)
            print(json.dumps({"data": name, "epochs": args.epochs, **result}), flush=True)


if __name__ == "__main__":
    main()
