"""Data-pipeline throughput (images/s): decode + augment + collate through the DataLoader, no model.

lightcycle's `FolderDataModule.train_dataloader()` (albumentations in the workers, persistent workers, uint8
batches normalised after the loader by `batch_transform`) vs
fastai's `dls.train` (PIL decode + Resize in the workers, aug_transforms + Normalize per batch in the main
process), over the same demo JPEGs, 64 px, batch 64, same workers, same augmentation (setups.py).
Each repeat builds fresh loaders and iterates `passes` epochs; the first (worker start-up) is excluded
and the median of the rest is that repeat's number. fastai starts its workers every epoch, which is
part of its per-epoch cost and therefore counted.

    python bench/data_pipeline.py --quick   # 3 repeats of 3 passes over the 1440 training images (~1 min)
    python bench/data_pipeline.py           # 5 repeats of 5 passes
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from typing import Any

import common
import setups


def images_per_s(loader: Iterable[Any], passes: int, prepare: Any = None) -> float:
    rates = []
    for _ in range(passes):
        start, n = time.perf_counter(), 0
        for x, _y in loader:
            if prepare is not None:
                x = prepare(x)  # lightcycle: uint8 batches normalised after the loader, as on the device
            n += len(x)
        rates.append(n / (time.perf_counter() - start))
    return common.median(rates[1:])


def run_lightcycle(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, None, None)
    return images_per_s(dm.train_dataloader(), args.passes, dm.batch_transform)


def run_fastai(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, None, None)
    return images_per_s(setups.fastai_dls(dm).train, args.passes)


def main() -> None:
    parser = common.image_parser(__doc__, "3 repeats of 3 passes")
    args = parser.parse_args()
    common.prepare(args)
    args.repeats, args.passes = (3, 3) if args.quick else (5, 5)
    results = common.interleaved({"lightcycle": lambda: run_lightcycle(args), "fastai": lambda: run_fastai(args)},
                                 args.repeats)
    medians = {k: round(common.median(v), 1) for k, v in results.items()}
    common.report("data_pipeline", {
        "size": args.size, "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
        "passes": args.passes, "images_per_s_median": medians,
        "images_per_s_all": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "speedup_vs_fastai": round(medians["lightcycle"] / medians["fastai"], 3),
    })


if __name__ == "__main__":
    main()
