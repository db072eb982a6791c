"""Predict with a trained checkpoint: fastai's `learn.predict`, batched, with TTA and snapshot ensembles.

    from lightcycle import Predictor
    p = Predictor.from_checkpoint("outputs/demo/checkpoints/last.ckpt")
    label, index, probs = p.predict("cat.jpg")
    predictions = p.predict_files(paths)            # batched, in the order of `paths`

Everything inference needs comes from the checkpoint: the task (class names, tuned multi-label
thresholds, points' ranges), the eval image size and the backbone's normalization. Images are framed
exactly like validation images (`eval_transform`); TTA reuses `callbacks/tta.py` (seeded
training-transform views for image-level tasks, de-augmented flips and scales for masks and points);
`ensemble=True` averages the activated outputs of the `snapshot-cycle*.ckpt` files beside the checkpoint.

Prediction runs in one process, in input order, so the same inputs always give the same file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lightcycle.callbacks.snapshots import find_snapshots
from lightcycle.callbacks.tta import check_tta_args, tta_batches, view_seed
from lightcycle.data.checks import IMAGE_EXTENSIONS, _to_rgb, check_image, is_image_file, load_image
from lightcycle.data.files import FileResolver, read_csv_rows
from lightcycle.data.transforms import Normalization, eval_transform, train_transform
from lightcycle.errors import LightcycleError
from lightcycle.tasks import ClassificationTask, MultiLabelTask, PointsTask, SegmentationTask, Task

log = logging.getLogger("lightcycle")

BAD_POLICIES: tuple[str, ...] = ("error", "skip")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")
NAME_COLUMNS: tuple[str, ...] = ("file", "fname", "image_name", "filename", "path", "image")


@dataclass
class Prediction:
    """One image's prediction; unpacks like fastai's `learn.predict`: `label, index, probs = p`.

    - classification: `label` class name, `index` class index, `probs` [C] probabilities (sum 1);
    - multilabel: `label` list of tags over their thresholds, `index` [C] bool decisions, `probs` [C];
    - segmentation: `label` and `index` the [H, W] mask of code indices at the original image size,
      `probs` [C, h, w] probabilities at the model's input size;
    - points: `label` and `index` [K, 2] (x, y) in pixels of the original image, `probs` the model's
      [K, 2] coordinates in [-1, 1].
    """

    label: Any
    index: Any
    probs: torch.Tensor
    file: str | None = None
    size: tuple[int, int] = (0, 0)  # original (width, height)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.label, self.index, self.probs))


def resolve_device(device: str) -> torch.device:
    """`cpu`, `cuda` (fails clearly without a GPU), `auto` (the GPU when there is one), or `cuda:1`."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LightcycleError(f"device={device}: no CUDA GPU is available (use device=cpu or device=auto)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise LightcycleError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    return torch.device(device)


# --- inputs ----------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """Images to predict, in order: `paths` and the `names` written in the `file` column."""

    paths: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # rows naming no usable file


def list_inputs(inputs: str | os.PathLike, folder: str | os.PathLike | None = None, column: str | None = None) -> Inputs:
    """An image file, a folder (every image below it, sorted), or a CSV naming images.

    CSV names are resolved against `folder` (default: the CSV's folder) and may omit the extension;
    the column is `column`, else the first of file, fname, image_name, filename, path, image, else the first.
    """
    path = Path(inputs).expanduser()
    if not path.exists():
        raise LightcycleError(f"inputs={inputs}: no such file or folder")
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and is_image_file(p)), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise LightcycleError(f"inputs={inputs}: no image files in that folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        others = sum(1 for p in path.rglob("*") if p.is_file() and not is_image_file(p) and not p.name.startswith("."))
        if others:
            log.info("inputs: ignored %d non-image file(s) in %s", others, path)
        return Inputs(files, [p.relative_to(path).as_posix() for p in files])
    if path.suffix.lower() == ".csv":
        return _csv_inputs(path, folder, column)
    if is_image_file(path):
        return Inputs([path], [str(inputs)])
    raise LightcycleError(f"inputs={inputs}: not an image, a CSV of file names or a folder")


def _csv_inputs(path: Path, folder: str | os.PathLike | None, column: str | None) -> Inputs:
    rows = read_csv_rows(path, [column] if column else [])
    header = list(rows[0][1])
    if column is None:
        column = next((c for c in NAME_COLUMNS if c in header), header[0] if header else None)
    if not column:
        raise LightcycleError(f"{path}: no column of file names")
    image_dir = Path(folder).expanduser() if folder else path.parent
    resolver = FileResolver(image_dir)
    out = Inputs()
    for line, row in rows:
        name = row.get(column, "").strip()
        found, why = resolver.resolve(name)
        if found is None:
            out.problems.append((image_dir / name, f"{why} ({path.name} line {line})"))
        else:
            out.paths.append(found)
            out.names.append(name)
    return out


def vet_inputs(inputs: Inputs, on_bad: str = "error", what: str = "inputs") -> Inputs:
    """Decode every image once; `error`: fail listing every bad file; `skip`: drop them and say how many."""
    if on_bad not in BAD_POLICIES:
        raise LightcycleError(f"on_bad must be one of {', '.join(BAD_POLICIES)}, got {on_bad!r}")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(check_image, inputs.paths))
    bad = list(inputs.problems) + [(p, r) for p, r in zip(inputs.paths, reasons) if r is not None]
    if not bad:
        return inputs
    lines = "\n".join(f"  {p}: {r}" for p, r in bad)
    if on_bad == "error":
        raise LightcycleError(
            f"{len(bad)} bad image(s) in {what}:\n{lines}\nFix or remove them, or pass on_bad=skip to predict without them."
        )
    log.warning("skipped %d bad image(s) in %s (on_bad=skip); no rows are written for them:\n%s", len(bad), what, lines)
    keep = [i for i, r in enumerate(reasons) if r is None]
    return Inputs([inputs.paths[i] for i in keep], [inputs.names[i] for i in keep], bad)


# --- the dataset ---------------------------------------------------------------------------------------
class PredictDataset(Dataset):
    """Item i = (eval-framed image [C, H, W], or [1 + n, C, H, W] with n seeded augmented views;
    the original (width, height))."""

    def __init__(self, items: Sequence[Any], transform: Any, augment: Any = None, n: int = 0, seed: int = 0) -> None:
        self.items = list(items)
        self.transform, self.augment, self.n, self.seed = transform, augment, int(n), int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = as_image(self.items[index])
        height, width = image.shape[:2]
        x = self.transform(image=image)["image"]
        if self.augment is not None:
            views = [x]
            for view in range(self.n):
                self.augment.set_random_seed(view_seed(self.seed, view, index))
                views.append(self.augment(image=image)["image"])
            x = torch.stack(views)
        return x, torch.tensor([width, height])


def as_image(item: Any) -> np.ndarray:
    """A path, PIL image or HxWx3 uint8 array -> HxWx3 uint8 RGB array."""
    if isinstance(item, (str, os.PathLike)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return np.asarray(_to_rgb(item))
    if isinstance(item, np.ndarray):
        if item.ndim == 2:
            item = np.stack([item] * 3, -1)
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise LightcycleError(f"expected an HxWx3 uint8 image array, got shape {item.shape} {item.dtype}")
        return item
    raise LightcycleError(f"cannot predict on a {type(item).__name__}: pass a file path, a PIL image or a uint8 array")


# --- the predictor ------------------------------------------------------------------------------------
class Predictor:
    """Batched inference from one checkpoint (or its snapshot ensemble), with optional TTA.

    Args:
        models: VisionModules sharing one task (several = an ensemble: their activated outputs are averaged).
        size: eval image size (default: the one recorded in the checkpoint).
        tta: augmented views besides the original (0 = off; `True` = 4); `tta_beta`, `tta_merge`,
            `tta_views` (`auto` | `augment` | `flip_scale`) and `tta_seed` as in training's TTA.
        batch_size, num_workers: the DataLoader's.
        device: `cpu` (default), `cuda`, `auto`.
    """

    def __init__(
        self,
        models: Sequence[Any],
        *,
        size: int | None = None,
        tta: int | bool = 0,
        tta_beta: float = 0.25,
        tta_merge: str = "beta",
        tta_views: str = "auto",
        tta_seed: int = 42,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str = "cpu",
        source: str = "the model",
    ) -> None:
        if not models:
            raise LightcycleError("Predictor needs at least one model")
        n = (4 if tta else 0) if isinstance(tta, bool) else tta
        check_tta_args(n, tta_beta, tta_merge, tta_views)
        if int(batch_size) < 1:
            raise LightcycleError(f"batch_size must be at least 1, got {batch_size}")
        if int(num_workers) < 0:
            raise LightcycleError(f"num_workers must be >= 0, got {num_workers}")
        self.device = resolve_device(device)
        self.models = [m.to(self.device).eval() for m in models]
        self.task: Task = self.models[0].task
        names = getattr(self.task, "class_names", None)
        for m in self.models[1:]:
            if type(m.task) is not type(self.task) or getattr(m.task, "class_names", None) != names:
                raise LightcycleError(f"{source}: the ensemble's models predict different tasks or classes")
        config = dict(getattr(self.models[0], "inference_config", {}) or {})
        backbone = self.models[0].hparams.get("backbone")
        self.size = int(size or config.get("size") or 0)
        if self.size < 8:
            raise LightcycleError(
                f"{source} does not record the image size it was trained at (saved by an older lightcycle); pass size=N"
            )
        default = Normalization.for_backbone(backbone)
        self.normalization = Normalization(
            mean=tuple(config.get("mean", default.mean)),  # type: ignore[arg-type]
            std=tuple(config.get("std", default.std)),  # type: ignore[arg-type]
            crop_pct=float(config.get("crop_pct", 1.0)),
        )
        self.augment = str(config.get("augment", "side_on"))
        self.max_zoom = float(config.get("max_zoom", 1.1))
        self.n, self.beta, self.merge, self.seed = int(n), float(tta_beta), tta_merge, int(tta_seed)
        spatial = type(self.task).unflip is not Task.unflip
        self.views = ("flip_scale" if spatial else "augment") if tta_views == "auto" else tta_views
        if self.views == "augment" and spatial:
            raise LightcycleError(f"tta.views=augment cannot be undone for {self.task.name} outputs; use flip_scale")
        if spatial and self.normalization.crop_pct < 1.0:
            raise LightcycleError(f"{source}: a centre crop (crop_pct<1) cannot be mapped back to {self.task.name} outputs")
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, ensemble: bool = False, **kwargs: Any
    ) -> "Predictor":
        """Load `path`; `ensemble=True` predicts with the `snapshot-cycle*.ckpt` files beside it instead
        (the checkpoint still supplies the image size and, for multi-label, the tuned thresholds)."""
        from lightcycle.module import VisionModule

        path = Path(path).expanduser()
        main = VisionModule.load(path)
        models = [main]
        if ensemble:
            snapshots = find_snapshots(path.parent)
            if not snapshots:
                raise LightcycleError(
                    f"ensemble=true: no snapshot-cycle*.ckpt beside {path} (train with schedule=sgdr snapshots.keep=M)"
                )
            models = [VisionModule.load(p) for p in snapshots]
            for m in models:  # decode with the main checkpoint's framing and tuned thresholds
                m.task = main.task
                m.inference_config = m.inference_config or main.inference_config
            models[0].inference_config = main.inference_config
            log.info("ensemble of %d snapshots: %s", len(models), ", ".join(p.name for p in snapshots))
        return cls(models, source=str(path), **kwargs)

    # --- public API --------------------------------------------------------------------------------
    def predict(self, item: Any) -> Prediction:
        """One image (path, PIL image or HxWx3 uint8 array) -> Prediction (`label, index, probs = ...`)."""
        return next(self.iter_predictions([item], num_workers=0))

    def predict_files(self, paths: Sequence[Any]) -> list[Prediction]:
        """Predictions for every item of `paths`, batched, in order."""
        return list(self.iter_predictions(paths))

    def iter_predictions(self, items: Sequence[Any], num_workers: int | None = None) -> Iterator[Prediction]:
        """Stream predictions batch by batch, in the order of `items` (memory: one batch)."""
        stacked = self.views == "augment" and self.n > 0
        augment = train_transform(self.size, self.normalization, self.augment, self.max_zoom) if stacked else None
        dataset = PredictDataset(items, eval_transform(self.size, self.normalization), augment, self.n, self.seed)
        workers = self.num_workers if num_workers is None else num_workers
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=workers)
        position = 0
        for x, sizes in loader:
            merged = self.forward(x, stacked)
            for out, (width, height) in zip(merged, sizes.tolist()):
                item = items[position]
                position += 1
                file = str(item) if isinstance(item, (str, os.PathLike)) else None
                yield self.decode(out, (int(width), int(height)), file)

    def forward(self, x: torch.Tensor, stacked: bool = False) -> torch.Tensor:
        """Activated outputs for one batch: TTA-merged per model, averaged over the ensemble, on the CPU."""
        total: torch.Tensor | None = None
        for model in self.models:
            for merged, _ in tta_batches(model, self.task, [x], self.n, self.merge, self.beta, stacked=stacked):
                total = merged.float() if total is None else total + merged.float()
        assert total is not None
        return (total / len(self.models)).cpu()

    def decode(self, out: torch.Tensor, size: tuple[int, int], file: str | None = None) -> Prediction:
        """One activated output -> Prediction in the original image's frame."""
        task = self.task
        width, height = size
        if isinstance(task, ClassificationTask):
            index = int(out.argmax())
            return Prediction(task.class_names[index], index, out, file, size)
        if isinstance(task, MultiLabelTask):
            decisions = task.decode(out[None])[0]
            tags = [name for name, on in zip(task.class_names, decisions.tolist()) if on]
            return Prediction(tags, decisions, out, file, size)
        if isinstance(task, SegmentationTask):
            probs = F.interpolate(out[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            mask = probs.argmax(0)
            return Prediction(mask, mask, out, file, size)
        if isinstance(task, PointsTask):
            from lightcycle.data.points import to_original_pixels

            pixels = to_original_pixels(out.double(), (self.size, self.size), (width, height)).float()
            return Prediction(pixels, pixels, out, file, size)
        decoded = task.decode(out[None])[0]
        return Prediction(decoded, decoded, out, file, size)


# --- writing ------------------------------------------------------------------------------------------
OUTPUT_FORMATS: tuple[str, ...] = (".csv", ".json")


def _palette(n: int) -> list[int]:
    """A fixed, distinct colour per code index (values stay code indices: the PNG reads back as a mask)."""
    rng = np.random.default_rng(0)
    colours = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
    colours += [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, 256 - len(colours)))]
    return [c for rgb in colours[:256] for c in rgb]


def save_mask(mask: torch.Tensor, path: Path, num_classes: int) -> None:
    """Code indices as a palette PNG (or 16-bit greyscale beyond 256 codes), like CamVid's masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = mask.cpu().numpy()
    if num_classes <= 256:
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette(_palette(num_classes))
    else:
        img = Image.fromarray(arr.astype(np.uint16))
    img.save(path)


def _mask_path(masks_dir: Path, name: str, used: set[Path]) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(rel.name)
    path = masks_dir / rel.parent / f"{rel.stem}_P.png"
    k = 1
    while path in used:  # a.jpg and a.png in one folder
        path = masks_dir / rel.parent / f"{rel.stem}-{k}_P.png"
        k += 1
    used.add(path)
    return path


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def prediction_record(
    task: Task, pred: Prediction, name: str, mask_file: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flat CSV row, structured JSON record) for one prediction."""
    probs = pred.probs.tolist()
    if isinstance(task, ClassificationTask):
        row = {"file": name, "label": pred.label, **{f"prob_{c}": _fmt(p) for c, p in zip(task.class_names, probs)}}
        return row, {"file": name, "label": pred.label, "probabilities": dict(zip(task.class_names, probs))}
    if isinstance(task, MultiLabelTask):
        row = {"file": name, "tags": " ".join(pred.label), **{f"prob_{c}": _fmt(p) for c, p in zip(task.class_names, probs)}}
        return row, {"file": name, "tags": list(pred.label), "probabilities": dict(zip(task.class_names, probs))}
    if isinstance(task, SegmentationTask):
        return {"file": name, "mask": mask_file}, {"file": name, "mask": mask_file}
    if isinstance(task, PointsTask):
        points = pred.label.tolist()
        row = {"file": name}
        for i, (x, y) in enumerate(points):
            row[f"x{i}"], row[f"y{i}"] = _fmt(x), _fmt(y)
        return row, {"file": name, "points": points}
    raise LightcycleError(f"no output format for task {task.name!r}")


def write_predictions(
    task: Task,
    predictions: Iterable[Prediction],
    names: Sequence[str],
    output: str | os.PathLike,
    masks_dir: str | os.PathLike | None = None,
) -> int:
    """Write predictions (in the order of `names`) as CSV or JSON by `output`'s extension; returns the row count.

    Segmentation masks go to `masks_dir` (default `<output stem>_masks/` beside the output) as
    `{stem}_P.png`; the `mask` column holds their path relative to the output file.
    The file is written under a temporary name and renamed, so a failed run leaves no partial file.
    """
    output = Path(output).expanduser()
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise LightcycleError(f"output={output}: the extension must be .csv or .json")
    output.parent.mkdir(parents=True, exist_ok=True)
    masks = Path(masks_dir).expanduser() if masks_dir else output.with_name(f"{output.stem}_masks")
    used: set[Path] = set()
    tmp = output.with_name(f".{output.name}.tmp")
    rows = 0
    records: list[dict[str, Any]] = []
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer: csv.DictWriter | None = None
            for pred, name in zip(predictions, names):
                mask_file = None
                if isinstance(task, SegmentationTask):
                    path = _mask_path(masks, name, used)
                    save_mask(pred.label, path, task.num_classes)
                    mask_file = Path(os.path.relpath(path, output.parent)).as_posix()
                row, record = prediction_record(task, pred, name, mask_file)
                if suffix == ".csv":
                    if writer is None:
                        writer = csv.DictWriter(f, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)
                else:
                    records.append(record)
                rows += 1
            if suffix == ".json":
                json.dump(records, f, indent=1)
                f.write("\n")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
