"""Export a checkpoint to ONNX or TorchScript, check it against the Lightning model, describe its inputs.

The exported graph maps a normalised NCHW float batch to the model's raw outputs (logits); the
JSON written beside it says everything else a runtime needs without lightcycle: input size, how to
frame the picture (`resize`: crop, pad or squish, and `pad_mode`), mean and std, class names, the task, the activation that turns logits into probabilities or
coordinates, and multi-label thresholds (see lightcycle/onnx_predict.py for a runner in numpy + onnxruntime).

Parity: the exported model and the Lightning model run on the same random batch (of 2, so the
dynamic batch axis is exercised); the largest absolute difference of their logits must stay under
`tolerance` (1e-4), or the export fails and leaves no file behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightcycle.atomic import atomic_path, temp_name, write_text
from lightcycle.errors import LightcycleError
from lightcycle.export.per_task import task_exports
from lightcycle.inference_config import InferenceConfig
from lightcycle.module import VisionModule
from lightcycle.outputs import check_output
from lightcycle.tasks import Task

log = logging.getLogger("lightcycle")

FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass
class ExportResult:
    model: Path
    config: Path
    max_abs_diff: float


def activation_config(task: Task) -> dict[str, Any]:
    """How to turn the exported logits into what `Task.activation` returns, as plain data."""
    return task_exports(task).export_activation()


FRAMING_NOTES: dict[str, str] = {
    "squish": "resize the whole picture to size x size (area interpolation)",
    "crop": "take the centre square of the short side (offset (long - short) // 2), then resize it to size x size "
            "(area interpolation); the input shows the window (x0, y0, side, side) of the picture",
    "pad": "place the picture in the centre of a square of the long side (top (side - height) // 2, left "
           "(side - width) // 2), filled by pad_mode (reflect: numpy's 'reflect', OpenCV's BORDER_REFLECT_101; "
           "zeros: black), then resize it to size x size (area interpolation); the window is (-left, -top, side, side)",
}


def preprocessing_config(model: Any, size: int, fmt: str, model_file: str, max_abs_diff: float) -> dict[str, Any]:
    """Everything needed to feed the exported model and read its outputs, as JSON-ready data."""
    task: Task = model.task
    inference: InferenceConfig = getattr(model, "inference_config", None) or InferenceConfig()
    framing, norm = inference.framing, inference.normalization(model.hparams.get("backbone"))
    config: dict[str, Any] = {
        "format": fmt,
        "model_file": model_file,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, size, size],
            "size": size,
            "layout": "NCHW, RGB, float32",
            "resize": framing.resize,  # crop | pad | squish, like lightcycle's eval transform
            "pad_mode": framing.pad_mode,
            "framing": FRAMING_NOTES[framing.resize],
            "scale": 1 / 255,
            "mean": list(norm.mean),
            "std": list(norm.std),
        },
        "output": {"name": OUTPUT_NAME, "kind": "logits"},
        "task": task.name,
        "class_names": task.output_names,
        "activation": activation_config(task),
        "task_config": task.to_config(),
        "backbone": model.hparams.get("backbone"),
        "parity_max_abs_diff": max_abs_diff,
    }
    config.update(task_exports(task).export_metadata())  # thresholds, void index, how to read points
    return config


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool) -> None:
    try:
        # deferred: onnx is optional (the export extra)
        import onnx  # noqa: F401
    except ImportError as exc:
        raise LightcycleError("format=onnx needs the onnx package: pip install 'lightcycle[export]'") from exc
    kwargs: dict[str, Any]
    if dynamo:
        kwargs = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=4096)},), "dynamo": True}
    else:
        kwargs = {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, "dynamo": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter about the legacy exporter
        torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, **kwargs,
        )


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    try:
        # deferred: onnxruntime is optional (the export extra)
        import onnxruntime as ort
    except ImportError as exc:
        raise LightcycleError("the ONNX parity check needs onnxruntime: pip install 'lightcycle[export]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


class _Plain(torch.nn.Module):
    """The LightningModule's forward in a plain module: tracing must not touch Lightning's `trainer` property."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.dense = model.task.backbone_kind == "features"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense:  # as VisionModule.forward: dense outputs at the input's resolution
            return self.head(self.backbone(x), size=x.shape[-2:])
        return self.head(self.backbone(x))


def _export_torchscript(model: Any, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Plain(model).eval(), example, check_trace=False)
        torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(x)


def export(
    ckpt: str | os.PathLike,
    format: str = "onnx",
    output: str | os.PathLike | None = None,
    size: int | None = None,
    tolerance: float = 1e-4,
    opset: int = 17,
    dynamo: bool = False,
    overwrite: bool = False,
) -> ExportResult:
    """Export `ckpt` (default output: beside it, `.onnx` / `.pt`) plus `<output>.json`; parity-checked.

    Raises LightcycleError naming the file when the exported model's logits differ from the
    Lightning model's by `tolerance` or more (the exported files are then removed), and, before any
    work, when an output exists (unless `overwrite`) or is the checkpoint itself (lightcycle.outputs).
    """
    if format not in FORMATS:
        raise LightcycleError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    ckpt = Path(ckpt).expanduser()
    model = VisionModule.load(ckpt).eval()
    inference: InferenceConfig = model.inference_config or InferenceConfig()
    size = int(size or inference.size or 0)
    if size < 8:
        raise LightcycleError(f"{ckpt} does not record the image size it was trained at; pass size=N")
    out = Path(output).expanduser() if output else ckpt.with_suffix(FORMATS[format])
    if out.suffix == ".json":
        raise LightcycleError(f"output={out}: the preprocessing JSON goes beside the model; name the model file")
    config_path = out.with_name(f"{out.name}.json")
    for path in (out, config_path):
        check_output(path, reads=[("ckpt", ckpt)], overwrite=overwrite)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, 3, size, size, generator=generator)
    check = torch.randn(2, 3, size, size, generator=generator)  # another batch size: the batch axis is dynamic
    # A scratch folder beside the target, where the model is written under its final name (so the
    # external weights of a large dynamo export reference the right file), checked, then published
    # file by file through atomic_path. Its `.partial` name marks what a killed export left behind.
    scratch = temp_name(out)
    scratch.mkdir(parents=True)
    try:
        staged = scratch / out.name
        if format == "onnx":
            _export_onnx(model, example, staged, opset, dynamo)
            got = _run_onnx(staged, check)
        else:
            _export_torchscript(model, example, staged)
            got = _run_torchscript(staged, check)
        with torch.no_grad():
            expected = model(check)
        if got.shape != expected.shape:
            raise LightcycleError(f"{out}: the exported model returns shape {tuple(got.shape)}, the checkpoint {tuple(expected.shape)}")
        diff = float((got.float() - expected.float()).abs().max())
        if not diff < tolerance:
            raise LightcycleError(
                f"{out}: parity check failed: logits differ from the Lightning model's by up to {diff:.3g} "
                f"(tolerance {tolerance:g}); nothing was written"
            )
        for file in sorted(scratch.iterdir(), key=lambda p: p == staged):  # the model last, after its weights
            check_output(out.with_name(file.name), reads=[("ckpt", ckpt)])  # e.g. a dynamo export's weights file
            with atomic_path(out.with_name(file.name)) as tmp:
                os.replace(file, tmp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:  # e.g. a segmentation model trained with crop: the runner must be told another framing
        model.task.check_framing(inference.framing, str(ckpt))
    except LightcycleError as exc:
        log.warning("%s (python -m lightcycle.onnx_predict MODEL IMAGES --resize pad)", exc)
    config = preprocessing_config(model, size, format, out.name, diff)
    write_text(config_path, json.dumps(config, indent=2) + "\n")
    log.info("exported %s (%s) and %s; parity: max abs diff on logits %.3g (< %g)", out, format, config_path.name, diff, tolerance)
    return ExportResult(out, config_path, diff)
