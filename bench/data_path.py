"""Data path per DataLoader worker at 224 px from 480x360 JPEGs: lightcycle vs torchvision transforms v2.

What feeds a GPU is JPEG decoding and augmentation in the workers, so this measures images/s through a
DataLoader with a fixed number of workers (default 1, the per-worker figure), batch 64, no model, over
real photographs (bench/photos.py crops, written as 480x360 JPEGs once into the cache). Every
contender's timing includes what happens after the loader until the batch is a normalised float
tensor (on this machine the "device" is the CPU of the main process):

- `lightcycle`: `FolderDataModule(size=224, augment="side_on", device_transforms=True)` — PIL decode,
  albumentations Resize (area) + flip + Affine(rotate +-10, zoom 1-1.1, p=0.75) + brightness/contrast
  0.2 (p=0.75) on uint8 in the workers, uint8 batches, `batch_transform` (normalisation) after the loader;
- `lightcycle_float`: the same with `device_transforms=False` (normalised float32 from the workers,
  lightcycle's path before uint8 batches);
- `torchvision_uint8`: `ImageFolder` + v2 `Resize((224, 224))` + `RandomHorizontalFlip` +
  `RandomApply([RandomAffine(10, scale=(1, 1.1))], 0.75)` + `RandomApply([ColorJitter(0.2, 0.2)], 0.75)`
  yielding uint8, `ToDtype(float32, scale=True)` + `Normalize` after the loader: the same augmentation;
- `torchvision_float`: the same with `ToDtype` + `Normalize` in the workers;
- `torchvision_rrc`: `RandomResizedCrop(224)` + flip, uint8 (torchvision's ImageNet recipe: less
  augmentation work, a reference point).

`--large` adds 1600x1200 JPEGs (phone-photo sized), where lightcycle decodes at a reduced scale
(PIL `draft`, 1/4 here) and torchvision decodes in full.

    python bench/data_path.py --quick     # 2 repeats, 3 passes over 440 images (~2 min on 2 cores)
    python bench/data_path.py             # 5 repeats, 4 passes over 1100 images
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import common
import torch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo_folder(width: int, height: int, per_class: int) -> Path:
    """bench/photos.py's ImageFolder at width x height (written once into the lightcycle cache)."""
    import photos

    from lightcycle.cache import cache_root

    out = cache_root() / "bench" / f"photos-{width}x{height}-{per_class}"
    return photos.write_folder(out, per_class, max(2, per_class // 5), width, height, seed=0)


def images_per_s(loader: Iterable[Any], passes: int, prepare: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Median images/s of passes 2.. (pass 1 starts the workers)."""
    rates = []
    for _ in range(passes):
        start, n = time.perf_counter(), 0
        for x, _y in loader:
            x = prepare(x)
            n += len(x)
        if n == 0:
            raise SystemExit("data_path: a pass yielded no batch (fewer training images than --batch-size)")
        rates.append(n / (time.perf_counter() - start))
    return common.median(rates[1:])


def lightcycle_loader(root: Path, args: argparse.Namespace, device_transforms: bool) -> tuple[Any, Callable]:
    from lightcycle.data import FolderDataModule

    dm = FolderDataModule(root, size=args.size, batch_size=args.batch_size, num_workers=args.workers,
                          augment="side_on", backbone="resnet50", device_transforms=device_transforms,
                          check_images=False)
    dm.setup("fit")
    dm.train_samples = dm.train_samples * getattr(args, "repeat", 1)
    return dm.train_dataloader(), dm.batch_transform


def torchvision_loader(root: Path, args: argparse.Namespace, kind: str) -> tuple[Any, Callable]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    size = args.size
    if kind == "rrc":
        steps: list[Any] = [v2.PILToTensor(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.PILToTensor(), v2.Resize((size, size), antialias=True), v2.RandomHorizontalFlip(),
                 v2.RandomApply([v2.RandomAffine(degrees=10, scale=(1.0, 1.1))], p=0.75),
                 v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.75)]
    normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    if kind == "float":
        steps.append(normalize)
    dataset = ImageFolder(str(root / "train"), transform=v2.Compose(steps))
    dataset.samples = dataset.samples * getattr(args, "repeat", 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         pin_memory=torch.cuda.is_available())
    return loader, (lambda x: x) if kind == "float" else normalize


CONTENDERS: dict[str, Callable[[Path, argparse.Namespace], tuple[Any, Callable]]] = {
    "lightcycle": lambda root, args: lightcycle_loader(root, args, True),
    "lightcycle_float": lambda root, args: lightcycle_loader(root, args, False),
    "torchvision_uint8": lambda root, args: torchvision_loader(root, args, "uint8"),
    "torchvision_float": lambda root, args: torchvision_loader(root, args, "float"),
    "torchvision_rrc": lambda root, args: torchvision_loader(root, args, "rrc"),
}


def run(name: str, root: Path, args: argparse.Namespace) -> float:
    loader, prepare = CONTENDERS[name](root, args)
    rate = images_per_s(loader, args.passes, prepare)
    del loader
    return round(rate, 1)


def measure(root: Path, args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    results = common.interleaved({n: (lambda n=n: run(n, root, args)) for n in names}, args.repeats)
    medians = {k: common.median(v) for k, v in results.items()}
    out: dict[str, Any] = {"images_per_s_median": {k: round(v, 1) for k, v in medians.items()},
                           "images_per_s_all": results}
    if "torchvision_uint8" in results:
        ref = results["torchvision_uint8"]
        out["vs_torchvision_uint8_paired"] = {k: round(common.paired_ratio(v, ref), 3) for k, v in results.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, 3 passes over 40 images a class")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1: the per-worker figure)")
    parser.add_argument("--per-class", type=int, default=None, help="training images per class (11 classes)")
    parser.add_argument("--only", nargs="*", default=None, help=f"contenders (default all: {', '.join(CONTENDERS)})")
    parser.add_argument("--large", action="store_true", help="also 1600x1200 JPEGs: reduced-scale decoding")
    args = parser.parse_args()
    common.quiet()
    common.use_all_cores()
    args.repeats, args.passes = (2, 3) if args.quick else (5, 4)
    per_class = args.per_class or (40 if args.quick else 100)
    names = args.only or list(CONTENDERS)
    data: dict[str, Any] = {"size": args.size, "batch_size": args.batch_size, "workers": args.workers,
                            "repeats": args.repeats, "passes": args.passes}
    root = photo_folder(480, 360, per_class)
    data["jpeg_480x360"] = {"train_images": sum(1 for _ in (root / "train").rglob("*.jpg")), **measure(root, args, names)}
    if args.large:
        large = photo_folder(1600, 1200, max(8, per_class // 4))
        data["jpeg_1600x1200"] = {"train_images": sum(1 for _ in (large / "train").rglob("*.jpg")),
                                  **measure(large, args, [n for n in names if n in ("lightcycle", "torchvision_uint8")])}
    common.report("data_path", data)


if __name__ == "__main__":
    main()
