"""Wall time of the LR range test and of test-time augmentation: lightcycle vs fastai.

Both start from the same network and bundled ImageNet weights on the same demo files (setups.py).

- LR range test: lightcycle's `lr_find(model, datamodule, num_it=N)` vs fastai's `learn.lr_find(num_it=N)`,
  both sweeping 1e-7 -> 10 exponentially with divergence stopping off (`stop_div=False`), so both run
  exactly N iterations, and neither draws a plot. Both restore the weights afterwards (part of the time).
- TTA: lightcycle's `evaluate_tta(model, task, dm, n)` (original + n augmented views per image, the
  training transform, beta merge, scored) vs fastai's `learn.tta(n=n)` (n passes with the training
  transforms + one plain pass, beta merge) over the same validation images, same workers and batch size.

    python bench/lr_find_tta.py --quick   # 256 train / 128 valid images, num_it 12, n 2, 3 repeats (~1.5 min)
    python bench/lr_find_tta.py           # the whole demo, num_it 100, n 4, 3 repeats
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common
import setups
from lightcycle.callbacks.lr_finder import lr_find
from lightcycle.tta import evaluate_tta


def lightcycle_lr_find(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    model = setups.lightcycle_model(dm)
    start = time.perf_counter()
    result = lr_find(model, datamodule=dm, num_it=args.num_it, stop_div=False, trainer_kwargs={"accelerator": "cpu"})
    seconds = time.perf_counter() - start
    if len(result.lrs) != args.num_it:
        raise RuntimeError(f"lightcycle ran {len(result.lrs)} iterations, expected {args.num_it}")
    return seconds


def fastai_lr_find(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    learn = setups.fastai_learner(setups.fastai_dls(dm))
    start = time.perf_counter()
    with learn.no_bar():
        learn.lr_find(num_it=args.num_it, stop_div=False, show_plot=False)
    seconds = time.perf_counter() - start
    if len(learn.recorder.lrs) != args.num_it:
        raise RuntimeError(f"fastai ran {len(learn.recorder.lrs)} iterations, expected {args.num_it}")
    return seconds


def lightcycle_tta(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    model = setups.lightcycle_model(dm).eval()
    start = time.perf_counter()
    evaluate_tta(model, model.task, dm, n=args.n)
    return time.perf_counter() - start


def fastai_tta(args: argparse.Namespace) -> float:
    dm = setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, args.valid_images)
    learn = setups.fastai_learner(setups.fastai_dls(dm))
    start = time.perf_counter()
    with learn.no_bar():
        learn.tta(n=args.n)
    return time.perf_counter() - start


def main() -> None:
    parser = common.image_parser(__doc__, "256/128 images, num_it 12, n 2, 3 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common.prepare(args)
    args.train_images, args.valid_images, args.num_it, args.n = (256, 128, 12, 2) if args.quick else (None, None, 100, 4)
    runners = {"lightcycle_lr_find": lambda: lightcycle_lr_find(args), "fastai_lr_find": lambda: fastai_lr_find(args),
               "lightcycle_tta": lambda: lightcycle_tta(args), "fastai_tta": lambda: fastai_tta(args)}
    results = common.interleaved(runners, args.repeats)
    medians = {k: round(common.median(v), 2) for k, v in results.items()}
    data: dict[str, Any] = {
        "size": args.size, "batch_size": args.batch_size, "workers": args.workers, "num_it": args.num_it,
        "tta_n": args.n, "train_images": args.train_images or "all", "valid_images": args.valid_images or "all",
        "repeats": args.repeats, "seconds_median": medians,
        "seconds_all": {k: [round(x, 2) for x in v] for k, v in results.items()},
        "speedup_vs_fastai": {
            "lr_find": round(medians["fastai_lr_find"] / medians["lightcycle_lr_find"], 3),
            "tta": round(medians["fastai_tta"] / medians["lightcycle_tta"], 3),
        },
    }
    common.report("lr_find_tta", data)


if __name__ == "__main__":
    main()
