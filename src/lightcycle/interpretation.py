"""What the model gets wrong on the validation set, per task (fastai's `ClassificationInterpretation`).

One pass over the validation loader (`collect`) keeps, for every image in dataset order, its file,
its loss (`Task.per_sample_loss`), the activated output and the target. The analyses and figures are
built from that:

| task | tables (CSV) | figures (PNG / TensorBoard) |
|---|---|---|
| classification | `confusion_matrix.csv`, `most_confused.csv`, `top_losses.csv` | `confusion_matrix.png`, `top_losses.png` |
| multilabel | `per_class.csv` (precision, recall, F1, F-beta, support, threshold), `top_losses.csv` | `per_class.png`, `top_losses.png` |
| segmentation | `per_class_iou.csv`, `top_losses.csv` | `per_class_iou.png`, `top_losses.png` (image, truth, prediction) |
| points | `top_losses.csv` | `top_losses.png` (truth o, prediction x) |

`top_losses.csv` lists every validation image, worst first, for cleaning the data: `file`, then
per task `actual`, `predicted`, `loss`, `probability` (classification: the probability of the
predicted class, as fastai shows it). Top-loss images are shown as the model saw them (the
validation transform, un-normalised), so masks and points line up with the picture whatever the
resize or crop.

The `Interpretation` callback (callbacks/interpretation.py) and `lightcycle-interpret` both call
`collect` and `write_report` / `make_figures`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import torch

from lightcycle.errors import LightcycleError
from lightcycle.tasks import ClassificationTask, MultiLabelTask, PointsTask, SegmentationTask, Task

log = logging.getLogger("lightcycle")


@dataclass
class InterpretationResult:
    """Everything the analyses need, one row per validation image in dataset order.

    `outputs`: activated outputs (class probabilities [N, C], tag probabilities [N, C], coordinates
    [N, K, 2]). Segmentation keeps no per-pixel outputs for every image (they need not fit in
    memory): `outputs` is each image's pixel accuracy [N], `targets` is empty, and `extra` holds the
    pixel `confusion` [C, C] and the `masks` {index: (predicted, true)} of the `keep_masks` worst.
    `dataset`: the validation dataset (item i = (input tensor, target)), used to show top-loss images.
    """

    task: Task
    files: list[Path]
    losses: torch.Tensor
    outputs: torch.Tensor
    targets: torch.Tensor
    dataset: Any = None
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def top_losses(self, k: int | None = None) -> list[int]:
        """Indices of the k highest losses, highest first (NaN losses, e.g. all-void masks, last)."""
        losses = torch.nan_to_num(self.losses.double(), nan=-math.inf)
        order = torch.argsort(losses, descending=True, stable=True).tolist()
        return order if k is None else order[: max(0, int(k))]

    def image(self, index: int) -> np.ndarray:
        """The input of validation image `index` as the model saw it, un-normalised to HxWx3 uint8."""
        if self.dataset is None:
            raise LightcycleError("this interpretation has no dataset to show images from")
        x = self.dataset[index][0]
        x = x.detach().float().cpu().numpy().transpose(1, 2, 0)
        x = x * np.asarray(self.std, dtype=np.float32) + np.asarray(self.mean, dtype=np.float32)
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _sequential_loader(datamodule: Any) -> Any:
    """Every validation sample once, in order, whatever the process group (not `val_dataloader()`)."""
    from torch.utils.data import DataLoader

    if not hasattr(datamodule, "dataset"):  # not an ImageDataModule: trust its loader to be in order
        return datamodule.val_dataloader()
    return DataLoader(
        datamodule.dataset(datamodule.valid_samples, train=False),
        batch_size=datamodule.batch_size,
        shuffle=False,
        num_workers=datamodule.num_workers,
        pin_memory=getattr(datamodule, "pin_memory", False),
    )


# --- the pass over the validation set ---------------------------------------------------------------
def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise LightcycleError("interpretation needs a validation loader of (image, target) batches")
    return batch[0], batch[1]


@torch.no_grad()
def collect(
    model: torch.nn.Module,
    datamodule: Any,
    task: Task | None = None,
    device: str | torch.device | None = None,
    context: Callable[[], ContextManager[Any]] | None = None,
    keep_masks: int = 9,
) -> InterpretationResult:
    """Run `model` over the DataModule's validation loader; per-sample losses, outputs and targets.

    Row i is `datamodule.valid_samples[i]`: the pass uses its own sequential loader over the whole
    validation set (under DDP `val_dataloader()` is a shard; the callback runs this on rank 0 only).
    `context`: a factory of a
    context manager around each forward (the Trainer's autocast under mixed precision).
    `keep_masks`: segmentation keeps the masks of this many worst images (for `plot_top_losses`).
    """
    import contextlib

    task = task if task is not None else getattr(model, "task", None)
    if task is None:
        raise LightcycleError("interpretation needs the model's task (a VisionModule has one)")
    datamodule.setup("validate")
    files = [Path(s.path) for s in datamodule.valid_samples]
    loader = _sequential_loader(datamodule)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses, outputs, targets = [], [], []
    segmentation = isinstance(task, SegmentationTask)
    confusion = torch.zeros(getattr(task, "num_classes", 0), getattr(task, "num_classes", 0), dtype=torch.long)
    masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    seen = 0
    try:
        for batch in loader:
            x, y = _split(batch)
            x, y = x.to(device), y.to(device)
            with (context or contextlib.nullcontext)():
                raw = model(x)
            raw = raw.float()
            batch_losses = task.per_sample_loss(raw, y).float().cpu()
            losses.append(batch_losses)
            activated = task.activation(raw)
            if segmentation:
                pred, true = task.decode(activated).cpu(), y.long().cpu()
                keep = _scored_pixels(task, true)
                confusion += _pixel_confusion(true[keep], pred[keep], task.num_classes)
                hits = ((pred == true) & keep).flatten(1).sum(1).double()
                outputs.append((hits / keep.flatten(1).sum(1)).float())  # 0/0 = NaN: all void
                for j in range(len(pred)):
                    masks[seen + j] = (pred[j].to(torch.int16), true[j].to(torch.int16))
                _keep_worst(masks, torch.cat(losses), keep_masks)
                seen += len(pred)
            else:
                outputs.append(activated.float().cpu())
                targets.append(y.cpu())
    finally:
        model.train(was_training)
    if not losses:
        raise LightcycleError("interpretation: the validation loader yielded no images")
    result = InterpretationResult(
        task=task,
        files=files,
        losses=torch.cat(losses),
        outputs=torch.cat(outputs),
        targets=torch.cat(targets) if targets else torch.empty(0),
        dataset=getattr(loader, "dataset", None),
    )
    if segmentation:
        result.extra.update(confusion=confusion, masks=masks)
    if len(result.losses) != len(files):
        raise LightcycleError(
            f"interpretation: the validation loader gave {len(result.losses)} images for {len(files)} files"
        )
    norm = getattr(datamodule, "normalization", None)
    if norm is not None:
        result.mean, result.std = tuple(norm.mean), tuple(norm.std)
    return result


def _keep_worst(masks: dict[int, Any], losses: torch.Tensor, k: int) -> None:
    """Drop the stored masks of all but the k highest-loss images seen so far."""
    if len(masks) > k:
        ranked = sorted(masks, key=lambda i: -float(torch.nan_to_num(losses[i], nan=-math.inf)))
        for i in ranked[k:]:
            del masks[i]


def _scored_pixels(task: SegmentationTask, true: torch.Tensor) -> torch.Tensor:
    keep = (true >= 0) & (true < task.num_classes)
    return keep & (true != task.void_index) if task.void_index is not None else keep


def _pixel_confusion(true: torch.Tensor, pred: torch.Tensor, c: int) -> torch.Tensor:
    return torch.bincount(true * c + pred, minlength=c * c).view(c, c)


# --- classification -----------------------------------------------------------------------------------
def confusion_matrix(result: InterpretationResult) -> torch.Tensor:
    """[C, C] counts, rows = actual class, columns = predicted class (argmax)."""
    c = len(result.task.class_names)
    actual = result.targets.long()
    predicted = result.outputs.argmax(-1)
    return torch.bincount(actual * c + predicted, minlength=c * c).view(c, c)


def most_confused(result: InterpretationResult, min_count: int = 1) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) for off-diagonal cells with at least `min_count`, most frequent first."""
    cm = confusion_matrix(result)
    names = result.task.class_names
    pairs = [
        (names[i], names[j], int(cm[i, j]))
        for i in range(len(names))
        for j in range(len(names))
        if i != j and cm[i, j] >= min_count
    ]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


# --- multi-label ------------------------------------------------------------------------------------------
def multilabel_per_class(result: InterpretationResult) -> list[dict[str, Any]]:
    """Per tag: precision, recall, F1 and F-beta of the task's decisions (tuned thresholds if any)."""
    task: MultiLabelTask = result.task  # type: ignore[assignment]
    pred = task.decode(result.outputs).bool()
    true = result.targets.bool()
    tp = (pred & true).sum(0).double()
    fp = (pred & ~true).sum(0).double()
    fn = (~pred & true).sum(0).double()
    b2 = task.beta**2
    thresholds = task.thresholds or [task.thresh] * task.num_classes
    rows = []
    for i, name in enumerate(task.class_names):
        precision = float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] > 0 else 0.0
        recall = float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] > 0 else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        fbeta = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall > 0 else 0.0
        rows.append(
            {
                "class": name, "precision": precision, "recall": recall, "f1": f1, f"f{task.beta:g}": fbeta,
                "support": int(true[:, i].sum()), "predicted": int(pred[:, i].sum()), "threshold": float(thresholds[i]),
            }
        )
    return rows


def _tags(names: Sequence[str], row: torch.Tensor) -> str:
    return " ".join(n for n, on in zip(names, row.tolist()) if on)


# --- segmentation -----------------------------------------------------------------------------------------
def segmentation_confusion(result: InterpretationResult) -> torch.Tensor:
    """[C, C] pixel counts (rows actual, columns predicted) over all validation images, void excluded."""
    return result.extra["confusion"]


def segmentation_per_class(result: InterpretationResult) -> list[dict[str, Any]]:
    """Per code: IoU over the validation set (NaN for void or codes absent from truth and prediction)."""
    task: SegmentationTask = result.task  # type: ignore[assignment]
    cm = segmentation_confusion(result).double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    rows = []
    for i, name in enumerate(task.class_names):
        void = i == task.void_index
        iou = float("nan") if void or union[i] == 0 else float(inter[i] / union[i])
        rows.append({"class": name, "iou": iou, "pixels": int(cm[i].sum()), "predicted_pixels": int(cm[:, i].sum()),
                     "void": void})
    return rows


def _pixel_accuracy(result: InterpretationResult, index: int) -> float:
    return float(result.outputs[index])


# --- points ------------------------------------------------------------------------------------------------
def point_distances(result: InterpretationResult) -> torch.Tensor:
    """[N] mean distance between predicted and true points in original pixels (like `val_distance_px`)."""
    true, size = result.targets[:, :-1].float(), result.targets[:, -1:].float()
    pred = result.outputs.reshape(true.shape)
    return ((pred - true) * size / 2).norm(dim=-1).mean(-1)


def _pixels(coords: torch.Tensor, width: int, height: int) -> np.ndarray:
    """[-1, 1] (pixel-centre convention of data/points.py) -> pixel coordinates of a width x height input."""
    c = coords.detach().float().cpu().numpy()
    return np.stack([((c[..., 0] + 1) * width - 1) / 2, ((c[..., 1] + 1) * height - 1) / 2], -1)


# --- top losses as table rows --------------------------------------------------------------------------------
def top_loss_rows(result: InterpretationResult, k: int | None = None) -> list[dict[str, Any]]:
    """One row per image, worst first: `file`, task columns, `loss` (and `probability` where it means one)."""
    task = result.task
    rows = []
    distances = point_distances(result) if isinstance(task, PointsTask) else None
    for i in result.top_losses(k):
        row: dict[str, Any] = {"file": str(result.files[i])}
        loss = float(result.losses[i])
        if isinstance(task, ClassificationTask):
            probs = result.outputs[i]
            predicted = int(probs.argmax())
            row.update(actual=task.class_names[int(result.targets[i])], predicted=task.class_names[predicted],
                       loss=loss, probability=float(probs[predicted]))
        elif isinstance(task, MultiLabelTask):
            probs, true = result.outputs[i], result.targets[i]
            pred = task.decode(probs[None])[0]
            # the tag whose probability is furthest from its truth carries most of the loss
            worst = int((probs - true.float()).abs().argmax())
            row.update(actual=_tags(task.class_names, true.bool()), predicted=_tags(task.class_names, pred),
                       loss=loss, probability=float(probs[worst]), worst_tag=task.class_names[worst])
        elif isinstance(task, SegmentationTask):
            row.update(loss=loss, pixel_accuracy=_pixel_accuracy(result, i))
        elif isinstance(task, PointsTask):
            row.update(loss=loss, distance_px=float(distances[i]))  # type: ignore[index]
        else:
            row.update(loss=loss)
        rows.append(row)
    return rows


# --- figures ---------------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _grid(n: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def _short(path: Path, width: int = 28) -> str:
    name = path.name
    return name if len(name) <= width else "…" + name[-(width - 1):]


def plot_confusion_matrix(result: InterpretationResult, normalize: bool = False) -> Any:
    """Counts (or row fractions) with the numbers written in every cell, fastai style."""
    cm = confusion_matrix(result).numpy()
    names = result.task.class_names
    c = len(names)
    values = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    side = min(24.0, max(4.0, 0.6 * c + 2.5))
    fig = _figure(side, side)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_xticks(range(c), names, rotation=90 if c > 6 else 0)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix ({int(cm.sum())} validation images)")
    if c <= 30:
        threshold = values.max() / 2 if values.size else 0
        for i in range(c):
            for j in range(c):
                text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if values[i, j] > threshold else "black")
    return fig


def _image_grid(result: InterpretationResult, indices: list[int], title: str, draw: Callable[[Any, int], str]) -> Any:
    rows, cols = _grid(len(indices))
    fig = _figure(3.0 * cols, 3.4 * rows)
    fig.suptitle(title)
    for n, i in enumerate(indices):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(result.image(i))
        ax.set_title(draw(ax, i), fontsize=8)
        ax.axis("off")
    return fig


def plot_top_losses(result: InterpretationResult, k: int = 9) -> Any:
    """The k worst validation images, titled per task (file, actual, predicted, loss, probability)."""
    task = result.task
    indices = result.top_losses(k)
    if isinstance(task, SegmentationTask):
        return plot_segmentation_top_losses(result, indices)
    rows = {r["file"]: r for r in top_loss_rows(result, k)}

    def draw(ax: Any, i: int) -> str:
        row = rows[str(result.files[i])]
        name = _short(result.files[i])
        if isinstance(task, ClassificationTask):
            return (f"{name}\nactual: {row['actual']}  predicted: {row['predicted']}\n"
                    f"loss {row['loss']:.2f}  prob {row['probability']:.2f}")
        if isinstance(task, MultiLabelTask):
            return (f"{name}\nactual: {row['actual'] or '-'}\npredicted: {row['predicted'] or '-'}\n"
                    f"loss {row['loss']:.3f}  {row['worst_tag']} p={row['probability']:.2f}")
        if isinstance(task, PointsTask):
            x = result.dataset[i][0]
            height, width = x.shape[-2:]
            true = _pixels(result.targets[i][:-1], width, height)
            pred = _pixels(result.outputs[i].reshape(-1, 2), width, height)
            for (tx, ty), (px, py) in zip(true, pred):
                ax.plot([tx, px], [ty, py], color="yellow", linewidth=1)
            ax.scatter(true[:, 0], true[:, 1], s=60, facecolors="none", edgecolors="lime", linewidths=2, label="truth")
            ax.scatter(pred[:, 0], pred[:, 1], s=60, marker="x", color="red", linewidths=2, label="predicted")
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
            return f"{name}\nloss {row['loss']:.4f}  error {row['distance_px']:.1f}px"
        return f"{name}\nloss {row['loss']:.3f}"

    title = "Top losses"
    if isinstance(task, PointsTask):
        title += " (truth: green circles, predicted: red crosses)"
    fig = _image_grid(result, indices, title, draw)
    return fig


def _palette(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return (np.asarray([cmap(i % cmap.N)[:3] for i in range(n)]) * 255).astype(np.uint8)


def _overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, void: int | None, alpha: float = 0.5) -> np.ndarray:
    colours = palette[np.clip(mask, 0, len(palette) - 1)].astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + colours * alpha
    if void is not None:
        out[mask == void] = image[mask == void]  # void pixels: the plain picture
    return out.round().astype(np.uint8)


def plot_segmentation_top_losses(result: InterpretationResult, indices: list[int]) -> Any:
    """One row per worst image: the input, the true mask over it, the predicted mask over it."""
    from matplotlib.patches import Patch

    task: SegmentationTask = result.task  # type: ignore[assignment]
    palette = _palette(task.num_classes)
    fig = _figure(9.0, 3.0 * max(1, len(indices)) + 0.8)
    fig.suptitle("Worst images: input | truth | prediction")
    for r, i in enumerate(indices):
        image = result.image(i)
        if i not in result.extra["masks"]:
            raise LightcycleError(f"image {i}'s masks were not kept: collect(keep_masks=...) must cover top_k")
        pred, true = (m.numpy() for m in result.extra["masks"][i])
        panels = [
            (image, f"{_short(result.files[i])}\nloss {float(result.losses[i]):.3f}"),
            (_overlay(image, true, palette, task.void_index), "truth"),
            (_overlay(image, pred, palette, None), f"prediction (pixel acc {_pixel_accuracy(result, i):.2f})"),
        ]
        for c, (panel, title) in enumerate(panels):
            ax = fig.add_subplot(len(indices), 3, 3 * r + c + 1)
            ax.imshow(panel)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    handles = [Patch(color=palette[k] / 255, label=f"{name} (ignored in truth)" if k == task.void_index else name)
               for k, name in enumerate(task.class_names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)), fontsize=8)
    return fig


def _bars(names: list[str], series: dict[str, list[float]], title: str, ylabel: str) -> Any:
    n = len(names)
    fig = _figure(min(24.0, max(5.0, 0.5 * n * len(series) + 2)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(n)
    for k, (label, values) in enumerate(series.items()):
        values = [0.0 if v != v else v for v in values]  # NaN (void, absent) drawn as an empty slot
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names, rotation=90 if n > 8 else 0)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    return fig


def plot_per_class(result: InterpretationResult) -> Any:
    """Multi-label: precision, recall and F-beta per tag; segmentation: IoU per code."""
    task = result.task
    if isinstance(task, MultiLabelTask):
        rows = multilabel_per_class(result)
        fkey = f"f{task.beta:g}"
        series = {"precision": [r["precision"] for r in rows], "recall": [r["recall"] for r in rows],
                  "F1": [r["f1"] for r in rows]}
        if fkey != "f1":
            series[f"F{task.beta:g}"] = [r[fkey] for r in rows]
        return _bars([r["class"] for r in rows], series, "Per-tag precision, recall and F (validation)", "score")
    rows = [r for r in segmentation_per_class(result) if not r["void"]]
    miou = np.nanmean([r["iou"] for r in rows]) if any(r["iou"] == r["iou"] for r in rows) else float("nan")
    return _bars([r["class"] for r in rows], {"IoU": [r["iou"] for r in rows]},
                 f"Per-class IoU (validation, mean {miou:.3f})", "IoU")


def make_figures(result: InterpretationResult, top_k: int = 9) -> dict[str, Any]:
    """name -> matplotlib Figure, for the task of `result`."""
    task = result.task
    figures: dict[str, Any] = {}
    if isinstance(task, ClassificationTask):
        figures["confusion_matrix"] = plot_confusion_matrix(result)
    elif isinstance(task, MultiLabelTask):
        figures["per_class"] = plot_per_class(result)
    elif isinstance(task, SegmentationTask):
        figures["per_class_iou"] = plot_per_class(result)
    if top_k > 0:
        figures["top_losses"] = plot_top_losses(result, top_k)
    return figures


# --- files -------------------------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """Write then rename, so a killed run never leaves half a table."""
    columns = columns or (list(rows[0]) if rows else [])
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)
    return path


def write_tables(result: InterpretationResult, output_dir: str | os.PathLike) -> dict[str, Path]:
    """The task's CSV files in `output_dir`; returns name -> path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = result.task
    written = {"top_losses": _write_csv(out / "top_losses.csv", top_loss_rows(result))}
    if isinstance(task, ClassificationTask):
        cm = confusion_matrix(result)
        rows = [{"actual": a, **{p: int(cm[i, j]) for j, p in enumerate(task.class_names)}}
                for i, a in enumerate(task.class_names)]
        written["confusion_matrix"] = _write_csv(out / "confusion_matrix.csv", rows, ["actual", *task.class_names])
        pairs = [{"actual": a, "predicted": p, "count": n} for a, p, n in most_confused(result)]
        written["most_confused"] = _write_csv(out / "most_confused.csv", pairs, ["actual", "predicted", "count"])
    elif isinstance(task, MultiLabelTask):
        written["per_class"] = _write_csv(out / "per_class.csv", multilabel_per_class(result))
    elif isinstance(task, SegmentationTask):
        written["per_class_iou"] = _write_csv(out / "per_class_iou.csv", segmentation_per_class(result))
    return written


def write_report(
    result: InterpretationResult, output_dir: str | os.PathLike, top_k: int = 9, figures: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write the task's CSV tables and PNG figures into `output_dir`; returns name -> path."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LightcycleError(f"{out}: cannot create the output folder ({exc})") from exc
    written = write_tables(result, out)
    for name, fig in (figures if figures is not None else make_figures(result, top_k)).items():
        path = out / f"{name}.png"
        fig.savefig(path)
        written[f"{name}_png"] = path
    return written


def summary_lines(result: InterpretationResult, limit: int = 10) -> list[str]:
    """A few human lines: most confused pairs, per-class scores, the worst files."""
    task = result.task
    lines: list[str] = []
    if isinstance(task, ClassificationTask):
        pairs = most_confused(result)
        lines.append("most confused (actual -> predicted: count):" if pairs else "no confusions: every image is right")
        lines += [f"  {a} -> {p}: {n}" for a, p, n in pairs[:limit]]
    elif isinstance(task, MultiLabelTask):
        lines.append("per tag (precision / recall / F1 / support):")
        lines += [f"  {r['class']}: {r['precision']:.3f} / {r['recall']:.3f} / {r['f1']:.3f} / {r['support']}"
                  for r in multilabel_per_class(result)]
    elif isinstance(task, SegmentationTask):
        lines.append("per-class IoU:")
        lines += [f"  {r['class']}: {r['iou']:.3f}" for r in segmentation_per_class(result) if not r["void"]]
    worst = top_loss_rows(result, min(limit, 5))
    lines.append("top losses:")
    lines += ["  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()) for row in worst]
    return lines
