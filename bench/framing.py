"""Framing benchmark: data.resize=squish|crop|pad (and the random-resized crop) on non-square pictures, per task.

fastai 0.7's course prefers cropping a square to squeezing, because squishing distorts the picture;
cropping cuts the ends of the long side away, padding wastes input pixels on border. Which is best
depends on where the task's evidence lies, so this trains every framing on every task with the same
data, epochs, weights and seed, and reports its error and training time:

- classification: the real-photo ImageFolder of bench/photos.py (11 photographs, 320x240 crops);
- multilabel, segmentation, points: coloured shapes (circle, square, triangle) pasted anywhere on
  160x120 crops of real texture photographs (scikit-image's brick, grass, gravel), so objects sit near
  the ends of the long side as often as in the middle. Tags = the shapes present; mask = each shape's
  code; point = the circle's centre.

Errors are measured on the original pictures, whatever the framing: classification and tags are
image-level (prediction frames images exactly like validation), `val_distance_px` is in original
pixels through any crop or padding, and segmentation is scored by predicting full-size masks with
`Predictor` and comparing them with the original masks (a crop-trained model predicts through padding,
`resize=pad`, because a centre crop leaves the ends of the picture unpredicted; marked `crop*`).

    python bench/framing.py [--quick] [--tasks classification points ...] [--seeds 0 1 2] [--out DIR]
    python bench/framing.py --table [--out DIR]     # the markdown table of every result in DIR/results.jsonl

Each result is also appended to `DIR/results.jsonl`, so the tasks can run in separate calls.

Every model: efficientnet_lite0 with the bundled ImageNet weights, one-cycle at lr 3e-3, all layers
trained, side_on augmentation; segmentation trains with cross-entropy, points with the heatmap head.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import textures, write_folder  # noqa: E402

FRAMINGS: dict[str, dict[str, Any]] = {
    "squish": {"resize": "squish"},
    "crop": {"resize": "crop"},
    "pad": {"resize": "pad", "pad_mode": "reflect"},
    "pad_zeros": {"resize": "pad", "pad_mode": "zeros"},
    "crop_rrc": {"resize": "crop", "min_scale": 0.35},  # fastai's RandomResizedCrop (course: min_scale 0.35)
    "squish_rrc": {"resize": "squish", "min_scale": 0.35},
    "pad_rrc": {"resize": "pad", "min_scale": 0.35},
}
# What each task tries by default: the random-resized crop cuts objects (and so tags, masks' shapes and
# points) away, so the shape tasks try it once, with crop; classification tries it with every framing.
TASK_FRAMINGS: dict[str, list[str]] = {
    "classification": list(FRAMINGS),
    "multilabel": ["squish", "crop", "pad", "pad_zeros", "crop_rrc"],
    "segmentation": ["squish", "crop", "pad", "pad_zeros", "crop_rrc"],
    "points": ["squish", "crop", "pad", "pad_zeros", "crop_rrc"],
}
SHAPES = ("circle", "square", "triangle")
WIDTH, HEIGHT = 160, 120


# --- data ----------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    photo = photos[int(rng.integers(len(photos)))]
    top, left = int(rng.integers(0, photo.shape[0] - HEIGHT)), int(rng.integers(0, photo.shape[1] - WIDTH))
    grey = photo[top : top + HEIGHT, left : left + WIDTH].astype(np.float32)
    tint = rng.uniform(0.4, 1.0, 3)
    return np.clip(grey[..., None] * tint * 0.8, 0, 255).astype(np.uint8)


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: Any) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r * 0.95, cy + r * 0.8), (cx + r * 0.95, cy + r * 0.8)], fill=fill)


def _scene(rng: np.random.Generator, photos: list[np.ndarray], shapes: list[str]) -> tuple[np.ndarray, np.ndarray, list]:
    """A picture with `shapes` pasted anywhere (not overlapping), its mask and each shape's (name, cx, cy)."""
    image = Image.fromarray(_background(rng, photos))
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw, mdraw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    placed: list[tuple[str, float, float, float]] = []
    for shape in shapes:
        for _ in range(100):
            r = float(rng.uniform(11, 20))
            cx, cy = float(rng.uniform(r, WIDTH - r)), float(rng.uniform(r, HEIGHT - r))
            if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 2) ** 2 for _, x, y, q in placed):
                break
        colour = tuple(int(v) for v in rng.integers(150, 256, 3))
        _draw(draw, shape, cx, cy, r, colour)
        _draw(mdraw, shape, cx, cy, r, SHAPES.index(shape) + 1)
        placed.append((shape, cx, cy, r))
    return np.asarray(image), np.asarray(mask), placed


def write_shapes(root: Path, task: str, n_train: int, n_valid: int, seed: int) -> Path:
    """The task's layout under `root` (Planet, CamVid or BIWI), `n_valid` listed in valid.txt."""
    marker = root / "shapes.json"
    settings = {"task": task, "train": n_train, "valid": n_valid, "seed": seed, "size": [WIDTH, HEIGHT], "version": 1}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root
    rng = np.random.default_rng(seed)
    photos = list(textures().values())
    folder = root / ("train" if task == "multilabel" else "images")
    folder.mkdir(parents=True, exist_ok=True)
    rows, names = [], []
    for i in range(n_train + n_valid):
        name = f"img{i:04d}.jpg"
        if task == "points":
            shapes = ["circle"] + [str(s) for s in rng.choice(SHAPES[1:], int(rng.integers(0, 3)))]
        else:
            shapes = [str(s) for s in rng.choice(SHAPES, int(rng.integers(1, 4)), replace=False)]
        image, mask, placed = _scene(rng, photos, shapes)
        Image.fromarray(image).save(folder / name, quality=90)
        names.append(name)
        if task == "multilabel":
            rows.append([name[:-4], " ".join(sorted(set(shapes)))])
        elif task == "segmentation":
            (root / "labels").mkdir(exist_ok=True)
            Image.fromarray(mask).save(root / "labels" / f"{name[:-4]}_P.png")
        else:
            _, cx, cy, _ = placed[0]
            rows.append([name, f"{cx:.2f}", f"{cy:.2f}"])
    if task == "multilabel":
        _write_csv(root / "labels.csv", ["image_name", "tags"], rows)
    elif task == "points":
        _write_csv(root / "points.csv", ["fname", "x0", "y0"], rows)
    else:
        (root / "codes.txt").write_text("\n".join(("background",) + SHAPES) + "\n")
    (root / "valid.txt").write_text("\n".join(names[n_train:]) + "\n")
    marker.write_text(json.dumps(settings))
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# --- one run -------------------------------------------------------------------------------------------
def datamodule(task: str, root: Path, framing: dict[str, Any], size: int, batch_size: int, workers: int) -> Any:
    from lightcycle.data import FolderDataModule, MultiLabelDataModule, PointsDataModule, SegmentationDataModule

    # every framing setting explicit: a DataModule's own default (classification crops) must not leak in
    framing = {"pad_mode": "reflect", "min_scale": 1.0, **framing}
    common_args = dict(size=size, batch_size=batch_size, num_workers=workers, backbone=common.BACKBONE, seed=0, **framing)
    if task == "classification":
        return FolderDataModule(root, **common_args)
    if task == "multilabel":
        return MultiLabelDataModule(root, **common_args)
    if task == "segmentation":
        return SegmentationDataModule(root, loss="ce", **common_args)  # cross-entropy, as measured
    return PointsDataModule(root, head="heatmap", **common_args)


def segmentation_miou(ckpt: Path, dm: Any, resize: str) -> float:
    """mIoU of full-size predicted masks against the original masks of the validation pictures."""
    from lightcycle import Predictor
    from lightcycle.data.segmentation import load_mask

    predictor = Predictor.from_checkpoint(ckpt, resize="pad" if resize == "crop" else None, batch_size=16)
    n = len(dm.codes)
    confusion = np.zeros((n, n), np.int64)
    for sample, pred in zip(dm.valid_samples, predictor.iter_predictions([s.path for s in dm.valid_samples])):
        true = load_mask(sample.target).astype(np.int64)
        confusion += np.bincount(true.ravel() * n + pred.label.numpy().ravel(), minlength=n * n).reshape(n, n)
    inter = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float(np.mean(inter[union > 0] / union[union > 0]))


def run(task: str, root: Path, name: str, framing: dict[str, Any], args: argparse.Namespace, seed: int, out: Path) -> dict[str, Any]:
    import lightning as L

    from lightcycle.module import VisionModule

    L.seed_everything(seed, workers=True, verbose=False)
    dm = datamodule(task, root, framing, args.size[task], args.batch_size[task], args.workers)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone=common.BACKBONE, pretrained="bundled", lr=3e-3)
    trainer = L.Trainer(accelerator="cpu", max_epochs=args.epochs[task], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    val = {k: float(v) for k, v in trainer.validate(model, datamodule=dm, verbose=False)[0].items()}
    result: dict[str, Any] = {"task": task, "framing": name, "seed": seed, "epochs": args.epochs[task],
                              "batch_size": args.batch_size[task], "train_s": round(seconds, 1), **val}
    if task == "classification":
        result["error"] = val["val_error_rate"]
    elif task == "multilabel":
        result["error"] = 1 - val["val_fbeta"]
    elif task == "points":
        result["error"] = val["val_distance_px"]
    else:
        ckpt = out / f"{task}-{name}-{seed}.ckpt"
        trainer.save_checkpoint(ckpt)
        result["miou_original"] = segmentation_miou(ckpt, dm, framing["resize"])
        result["error"] = 1 - result["miou_original"]
        ckpt.unlink()
    print(json.dumps(result), flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps({**result, "quick": bool(args.quick)}) + "\n")
    return result


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """task -> framing -> mean error and mean training seconds over the seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        cell = table.setdefault(r["task"], {}).setdefault(r["framing"], {"errors": [], "seconds": []})  # type: ignore[arg-type]
        cell["errors"].append(r["error"])  # type: ignore[union-attr]
        cell["seconds"].append(r["train_s"])  # type: ignore[union-attr]
    return {task: {name: {"error": float(np.mean(c["errors"])), "error_sd": float(np.std(c["errors"])),
                          "train_s": float(np.mean(c["seconds"]))} for name, c in cells.items()}
            for task, cells in table.items()}


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per task, one column per framing, `error ± sd (seconds)`; the best error in bold."""
    names = [n for n in FRAMINGS if any(n in cells for cells in summary.values())]
    lines = ["| task (error) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    metric = {"classification": "error rate", "multilabel": "1 - F2", "segmentation": "1 - mIoU (original pixels)",
              "points": "distance px (original)"}
    for task, cells in summary.items():
        best = min(c["error"] for c in cells.values())
        row = []
        for name in names:
            c = cells.get(name)
            text = "" if c is None else f"{c['error']:.3f} ± {c['error_sd']:.3f} ({c['train_s']:.0f} s)"
            row.append(f"**{text}**" if c is not None and c["error"] == best else text)
        lines.append(f"| {task} ({metric.get(task, 'error')}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pictures and epochs, one seed: a smoke test")
    parser.add_argument("--tasks", nargs="+", default=["classification", "multilabel", "segmentation", "points"])
    parser.add_argument("--framings", nargs="+", default=None, help="default: each task's list (TASK_FRAMINGS)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/lightcycle-bench-framing"))
    parser.add_argument("--table", action="store_true", help="print the table of DIR/results.jsonl and stop")
    args = parser.parse_args()
    if args.table:
        rows = [json.loads(line) for line in (args.out / "results.jsonl").read_text().splitlines() if line.strip()]
        print(table(summarise([r for r in rows if not r.get("quick")])))
        return
    common.quiet()
    common.use_all_cores()
    args.workers = common.default_workers() if args.workers is None else args.workers
    quick = args.quick
    if quick:
        args.seeds = args.seeds[:1]
    args.size = {"classification": 64 if quick else 96, "multilabel": 64, "segmentation": 64, "points": 64}
    args.batch_size = {"classification": 32, "multilabel": 32, "segmentation": 16, "points": 16}
    args.epochs = {t: (1 if quick else e) for t, e in
                   {"classification": 4, "multilabel": 8, "segmentation": 8, "points": 8}.items()}
    counts = (24, 12) if quick else (400, 200)
    args.out.mkdir(parents=True, exist_ok=True)
    roots = {}
    for task in args.tasks:
        if task == "classification":
            roots[task] = write_folder(args.out / ("photos-quick" if quick else "photos"), 6 if quick else 24,
                                       3 if quick else 20, 320, 240, 0)
        else:
            roots[task] = write_shapes(args.out / f"{task}{'-quick' if quick else ''}", task, *counts, seed=0)
    results = []
    for task in args.tasks:
        for seed in args.seeds:
            for name in args.framings or TASK_FRAMINGS[task]:
                results.append(run(task, roots[task], name, FRAMINGS[name], args, seed, args.out))
    summary = summarise(results)
    common.report("framing", {"quick": quick, "seeds": args.seeds, "epochs": args.epochs, "size": args.size,
                              "results": results, "summary": summary})
    print(table(summary))


if __name__ == "__main__":
    main()
