"""The LR range test bounded by a small fit: does the shortened test suggest what fastai's 100 iterations do?

`model.lr=auto` on a small dataset ran fastai's 100 iterations before a fit of a few dozen steps and
cost several times the training. lightcycle now bounds the test (`lr_find.max_share`, with the floor
`lr_find.min_num_it`), so on such a fit it runs the floor's iterations with a loss average that spans
the same share of the shorter sweep. Measured like world_class's second range test: the same model
state (one model, restored exactly after every test), several seeds (each seed shuffles and augments
the batches; every contender of a round gets the same seed), the valley suggestion compared with the
100-iteration test's of the same seed.

Contenders (all 1e-7 -> 10, fastai's divergence stop):
  fastai_100       fastai's test: 100 iterations, beta 0.98 (what model.lr=auto ran before it was bounded)
  bounded_<floor>  what lightcycle runs on this fit: lr_find(max_share=0.5, min_num_it=<floor>, fit_steps=the
                   fit's steps), one contender per --floors value
  --explore adds variants at the first floor's iterations (docs/benchmarks.md, 10):
  floor_beta98     fastai's beta 0.98 unchanged (why the average is rescaled)
  floor_from_1e-5  the rescaled beta, swept from 1e-5 (skipping the flat first decades)
  40_from_1e-5, 40_from_1e-6   40 iterations from 1e-5 / 1e-6 (world_class's second test's length)

    python bench/lr_find_budget.py --quick                           # classification, 2 seeds, floor 50 (~4 min)
    python bench/lr_find_budget.py --task classification --floors 50 # 160 demo images, 64 px, batch 64, 3 seeds
    python bench/lr_find_budget.py --task segmentation --batch-size 32 --floors 30
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common
import lightning as L
import setups
import torch

from lightcycle.callbacks.lr_finder import bounded_num_it, lr_find, shortened_beta

FIT_EPOCHS = 6  # the small run that motivated the bound: 160 images, 6 epochs


def data(args: argparse.Namespace) -> Any:
    if args.task == "classification":
        return setups.lightcycle_data(args.size, args.batch_size, args.workers, args.train_images, None)
    from lightcycle.data import SegmentationDataModule

    dm = SegmentationDataModule(demo="segmentation", size=args.size, batch_size=args.batch_size, num_workers=args.workers,
                                backbone=common.BACKBONE, void_code="void", seed=0)
    dm.prepare_data()
    dm.setup("fit")
    dm.train_samples = setups.subset(dm.train_samples, args.train_images)
    return dm


def fit_steps(dm: Any) -> int:
    """Optimizer steps of the small fit: FIT_EPOCHS epochs of the train loader (ragged last batch dropped)."""
    return FIT_EPOCHS * len(dm.train_dataloader())


def run(model: Any, dm: Any, seed: int, **kwargs: Any) -> dict[str, Any]:
    L.seed_everything(seed, workers=True, verbose=False)
    start = time.perf_counter()
    result = lr_find(model, dm, trainer_kwargs={"accelerator": "cpu"}, **kwargs)
    return {"valley": result.suggestions["valley"], "iterations": len(result.lrs),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = common.image_parser(__doc__, "classification, 2 seeds")
    parser.add_argument("--task", choices=("classification", "segmentation"), default="classification")
    parser.add_argument("--train-images", type=int, default=160)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-share", type=float, default=0.5)
    parser.add_argument("--floors", type=int, nargs="+", default=[50], help="lr_find.min_num_it values to measure")
    parser.add_argument("--explore", nargs="*", default=[], help="also: floor_beta98 floor_from_1e-5 40_from_1e-5 40_from_1e-6")
    args = parser.parse_args()
    common.prepare(args)
    if args.quick:
        args.seeds = 2
    dm = data(args)
    torch.manual_seed(0)
    from lightcycle.module import VisionModule

    model = VisionModule(dm.make_task(), backbone=common.BACKBONE, pretrained="bundled", lr=setups.LR)
    steps = fit_steps(dm)
    num_it = bounded_num_it(100, steps, args.max_share, args.floors[0])
    contenders: dict[str, dict[str, Any]] = {"fastai_100": dict(num_it=100)}
    for floor in args.floors:  # lightcycle's own path: LRFinder bounded by the fit's steps, this floor
        contenders[f"bounded_{floor}"] = dict(num_it=100, max_share=args.max_share, min_num_it=floor, fit_steps=steps)
    explored = {  # variants measured once, kept so the table in docs/benchmarks.md can be re-run
        "floor_beta98": dict(num_it=num_it, beta=0.98),
        "floor_from_1e-5": dict(num_it=num_it, beta=shortened_beta(0.98, num_it, 100), start_lr=1e-5),
        "40_from_1e-5": dict(num_it=40, beta=shortened_beta(0.98, 40, 100), start_lr=1e-5),
        "40_from_1e-6": dict(num_it=40, beta=shortened_beta(0.98, 40, 100), start_lr=1e-6),
    }
    contenders.update({k: v for k, v in explored.items() if k in args.explore})
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for seed in range(args.seeds):
        for name, kwargs in contenders.items():
            rounds[name].append(run(model, dm, seed, **kwargs))
            print(f"  seed {seed} {name}: {rounds[name][-1]}", flush=True)
    reference = [r["valley"] for r in rounds["fastai_100"]]
    ratios = {name: [float(f"{r['valley'] / ref:.3g}") for r, ref in zip(results, reference)]
              for name, results in rounds.items() if name != "fastai_100"}
    common.report("lr_find_budget", {
        "task": args.task, "train_images": len(dm.train_samples), "size": args.size, "batch_size": args.batch_size,
        "fit": {"epochs": FIT_EPOCHS, "optimizer_steps": steps},
        "bounded": {f"bounded_{f}": {"num_it": bounded_num_it(100, steps, args.max_share, f),
                                     "beta": round(shortened_beta(0.98, bounded_num_it(100, steps, args.max_share, f), 100), 4)}
                    for f in args.floors},
        "max_share": args.max_share,
        "seeds": args.seeds, "rounds": rounds,
        "valley_ratio_to_fastai_100": ratios,
        "within_2x": {name: all(0.5 <= r <= 2.0 for r in values) for name, values in ratios.items()},
        "seconds_median": {name: common.median([r["seconds"] for r in results]) for name, results in rounds.items()},
    })


if __name__ == "__main__":
    main()
