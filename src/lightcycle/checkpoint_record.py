"""Bounds on what a checkpoint says about itself, checked before anything is built from it.

A checkpoint is data that may come from anyone (a shared run folder, a download). `weights_only=True`
keeps it from running code, but its plain fields still drive allocations: the recorded image size
sets the input tensor of every prediction (`size=12000` turns one 40x40 picture into gigabytes),
the class list sets the head and the confusion matrix (C x C), the point count the heatmap head. So
every field that prediction, interpretation or export reads is checked here against sane bounds,
and a field out of bounds is one line naming the checkpoint and the field.

The bounds are far above any real model: `MAX_INPUT_SIZE` (4096 px a side) is 18x the 224 px the
course trains at; the most classes, codes or points is the task's own `Task.max_outputs`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

from lightcycle.data.framing import PAD_MODES, RESIZE_METHODS
from lightcycle.data.transforms import AUGMENT_PRESETS
from lightcycle.errors import LightcycleError
from lightcycle.tasks import TASKS, Task
from lightcycle.tasks.segmentation import SEGMENTATION_LOSSES

INFERENCE_KEY = "lightcycle_inference"  # the checkpoint's InferenceConfig (lightcycle.inference_config)
MAX_INPUT_SIZE = 4096  # pixels a side of the square model input
MIN_INPUT_SIZE = 8
MAX_NAME_CHARS = 1_000  # one class or point name
MAX_TEXT_CHARS = 200  # backbone, pool and other short settings


class _Bad(Exception):
    """A field out of bounds; the message says how."""


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"must be a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        raise _Bad(f"is {value}, outside {low}..{high}")
    return value


def _number(value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"must be a finite number, got {value!r:.60}")
    if value < low or value > high or (open_low and value == low):
        raise _Bad(f"is {value:g}, outside {'(' if open_low else '['}{low:g}, {high:g}]")
    return float(value)


def _text(value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise _Bad(f"is {len(value):,} characters long (at most {limit:,})")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in choices:
            raise _Bad(f"is {value!r:.60}, not one of {', '.join(choices)}")
        return value

    return check


def _sequence(value: Any, low: int, high: int) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _Bad(f"must be a list, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise _Bad(f"has {len(value):,} entries, outside {low}..{high:,}")
    return list(value)


def _names(value: Any, high: int) -> list[str]:
    names = _sequence(value, 1, high)
    for i, name in enumerate(names):
        try:
            _text(name, MAX_NAME_CHARS)
        except _Bad as exc:
            raise _Bad(f"entry {i} {exc}") from None
    return names


def _numbers(value: Any, length: int, low: float, high: float, *, open_low: bool = False) -> list[float]:
    items = _sequence(value, length, length)
    for i, item in enumerate(items):
        try:
            _number(item, low, high, open_low=open_low)
        except _Bad as exc:
            raise _Bad(f"entry {i} {exc}") from None
    return items


def _flip_pairs(value: Any, num_points: int) -> None:
    for i, pair in enumerate(_sequence(value, 0, num_points)):
        try:
            for index in _sequence(pair, 2, 2):
                _integer(index, 0, num_points - 1)
        except _Bad as exc:
            raise _Bad(f"entry {i} {exc}") from None


def _check(fields: Mapping[str, Any], checks: Mapping[str, Callable[[Any], Any]], prefix: str, where: str) -> None:
    for key, check in checks.items():
        if key in fields and fields[key] is not None:
            try:
                check(fields[key])
            except _Bad as exc:
                raise LightcycleError(f"{where}: {prefix}{key} {exc}; the checkpoint is damaged or crafted") from None


def check_task_record(task: Mapping[str, Any], where: str) -> None:
    """The task's fields (class lists, thresholds, point counts), before a head is built from them."""
    _check(task, {"name": _text}, "hyper_parameters.task.", where)
    most = getattr(TASKS.get(task.get("name")), "max_outputs", Task.max_outputs)  # type: ignore[arg-type]
    count = len(task["class_names"]) if isinstance(task.get("class_names"), (list, tuple)) else most
    points = task.get("num_points") if isinstance(task.get("num_points"), int) else most
    _check(task, {
        "class_names": lambda v: _names(v, most),
        "thresholds": lambda v: _numbers(v, count, 0.0, 1.0),
        "thresh": lambda v: _number(v, 0.0, 1.0),
        "beta": lambda v: _number(v, 0.0, 1e6, open_low=True),
        "label_smoothing": lambda v: _number(v, 0.0, 1.0),
        "void_index": lambda v: _integer(v, 0, count - 1),
        "loss": _choice(tuple(SEGMENTATION_LOSSES)),
        "num_points": lambda v: _integer(v, 1, most),
        "point_names": lambda v: _names(v, most),
        "flip_pairs": lambda v: _flip_pairs(v, points),
        "y_range": lambda v: _numbers(v, 2, -1e6, 1e6),
        "head": _text,
    }, "hyper_parameters.task.", where)


def check_inference_record(inference: Mapping[str, Any], where: str, prefix: str = "lightcycle_inference.") -> None:
    """How prediction frames images (size, normalization, framing, TTA's augmentation)."""
    _check(inference, {
        "size": lambda v: _integer(v, MIN_INPUT_SIZE, MAX_INPUT_SIZE),
        "mean": lambda v: _numbers(v, 3, -10.0, 10.0),
        "std": lambda v: _numbers(v, 3, 0.0, 10.0, open_low=True),
        "crop_pct": lambda v: _number(v, 0.0, 1.0, open_low=True),
        "augment": _choice(AUGMENT_PRESETS),
        "max_zoom": lambda v: _number(v, 1.0, 10.0),
        "resize": _choice(RESIZE_METHODS),
        "pad_mode": _choice(PAD_MODES),
        "min_scale": lambda v: _number(v, 0.0, 1.0, open_low=True),
    }, prefix, where)


def check_checkpoint_record(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Every field a lightcycle checkpoint is read for, within bounds (see the module docstring);
    raises LightcycleError naming `path` and the first field that is not."""
    where = f"checkpoint {path}"
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, Mapping):
        _check(hparams, {
            "backbone": _text, "pool": _text, "weights_match": _text, "lr_spread": _text,
            "dropout": lambda v: _number(v, 0.0, 1.0), "drop_path": lambda v: _number(v, 0.0, 1.0),
        }, "hyper_parameters.", where)
        task = hparams.get("task")
        if isinstance(task, Mapping):
            check_task_record(task, where)
    inference = checkpoint.get(INFERENCE_KEY)
    if inference is not None:
        if not isinstance(inference, Mapping):
            raise LightcycleError(f"{where}: {INFERENCE_KEY} must be a mapping, got {type(inference).__name__}")
        check_inference_record(inference, where, f"{INFERENCE_KEY}.")
    for key, state in checkpoint.items():  # saved before INFERENCE_KEY existed: the datamodule's size
        if isinstance(key, str) and key.endswith("DataModule") and isinstance(state, Mapping):
            check_inference_record({"size": state.get("size")}, where, f"{key}.")
