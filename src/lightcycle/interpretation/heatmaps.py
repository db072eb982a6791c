"""Class activation heatmaps (the course's "where does the model look"): Grad-CAM on the last feature map.

Grad-CAM (Selvaraju et al.) weights each channel of the backbone's last feature map by the mean
gradient of one output (a class's logit, a tag's) with respect to it, sums the channels and keeps
the positive part: the regions whose features raise that output. timm splits every model into
`forward_features` (the last feature map) and `forward_head` (pooling), so the map is taken exactly
where lightcycle's head starts; nothing is hooked. Backbones whose last feature map is channels-last
(timm's `output_fmt == "NHWC"`: Swin, MambaOut) are read as such. Which output a map explains is the
task's answer (`per_task/`: `heatmap_score`): the predicted class by default. Tasks whose outputs already are
positions (segmentation, points) refuse, as do backbones whose last features are not a 2-D map (ViTs).
A map covers the model's input, framed as prediction frames it (`data.resize`); `to_original_frame`
lays it over the original picture through the framing's `Window`.

    cams = grad_cam(model, x)                    # [N, H, W] in [0, 1] at the input's size
    Predictor.from_checkpoint(p).heatmap(image)  # at the original image's size
    lightcycle-interpret ckpt=... heatmaps=true  # heatmaps.png for the top losses
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lightcycle.data.transforms import Normalization, normalize_batch
from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.per_task import task_interpretation
from lightcycle.interpretation.result import InterpretationResult


def check_heatmaps(model: Any) -> None:
    """Raise a one-line error when `model` has no class activation maps (before any work is done)."""
    task = model.task
    task_interpretation(task).heatmap_score(torch.zeros(1, 1))  # tasks whose outputs are positions say why they have none
    if task.backbone_kind != "pooled" or not hasattr(model.backbone, "forward_features"):
        raise LightcycleError(f"heatmaps: the {task.name} task's backbone gives no single feature map")


def channels_last_features(backbone: Any) -> bool:
    """Whether `backbone.forward_features` returns [N, H, W, C] (timm's `output_fmt`, e.g. Swin, MambaOut)."""
    return str(getattr(backbone, "output_fmt", "NCHW")).upper() == "NHWC"


def grad_cam(model: Any, x: torch.Tensor, index: int | None = None) -> torch.Tensor:
    """Grad-CAM of output `index` (None: each image's top output) for a batch `x` [N, 3, H, W] of
    normalised inputs; returns [N, H, W] maps scaled to [0, 1] per image, on the CPU."""
    check_heatmaps(model)
    task = model.task
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = x.to(device)
    if getattr(model.hparams, "channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            features = model.backbone.forward_features(x)
        if features.ndim != 4:
            raise LightcycleError(
                f"heatmaps: the last features of {model.hparams.get('backbone')} are {tuple(features.shape)}, not a "
                "[C, H, W] map; Grad-CAM needs a convolutional backbone"
            )
        features = features.detach().requires_grad_(True)
        with torch.enable_grad():
            output = model.head(model.backbone.forward_head(features))
            score = task_interpretation(task).heatmap_score(output, index)
            (grads,) = torch.autograd.grad(score.sum(), features)
    finally:
        model.train(was_training)
    if channels_last_features(model.backbone):  # [N, H, W, C]: the channels are the last dimension
        features, grads = features.permute(0, 3, 1, 2), grads.permute(0, 3, 1, 2)
    weights = grads.mean((2, 3), keepdim=True)
    cam = F.relu((weights * features.detach()).sum(1, keepdim=True)).float()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return (cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]).cpu()


def to_original_frame(
    cam: torch.Tensor, original_size: tuple[int, int], crop_pct: float = 1.0, window: Any = None,
) -> torch.Tensor:
    """A map [S, S] over the model's input -> [height, width] over the original picture.

    `window` (data/framing.py's `Window`, default: the whole picture, i.e. squish) is the part of the
    picture the input shows: under `crop` the cut-off ends get 0, under `pad` the padding is cut
    away. With `crop_pct` < 1 the input is the centre of a larger resize, whose border gets 0 too.
    """
    width, height = original_size
    side = cam.shape[-1]
    if crop_pct < 1.0:
        full = round(side / crop_pct)
        canvas = cam.new_zeros(full, full)
        top = (full - side) // 2
        canvas[top : top + side, top : top + side] = cam
        cam = canvas
    if window is None:
        return F.interpolate(cam[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    shown = F.interpolate(cam[None, None], size=(window.height, window.width), mode="bilinear", align_corners=False)[0, 0]
    out = cam.new_zeros(height, width)
    x0, y0 = max(window.x0, 0), max(window.y0, 0)
    x1, y1 = min(window.x0 + window.width, width), min(window.y0 + window.height, height)
    out[y0:y1, x0:x1] = shown[y0 - window.y0 : y1 - window.y0, x0 - window.x0 : x1 - window.x0]
    return out


def plot_heatmaps(model: Any, result: "InterpretationResult", k: int = 9) -> Any:
    """The k worst validation images with the heatmap of their predicted output over them."""
    indices = result.top_losses(k)
    if not indices:
        raise LightcycleError("heatmaps: no validation images")
    # the dataset's pixels may be uint8 (data.device_transforms): normalised as the model saw them
    norm = Normalization(tuple(result.mean), tuple(result.std))  # type: ignore[arg-type]
    x = normalize_batch(torch.stack([result.dataset[i][0] for i in indices]), norm)
    cams = grad_cam(model, x)
    with torch.no_grad():
        model.eval()
        outputs = model(x.to(next(model.parameters()).device)).float().cpu()
    shown = task_interpretation(result.task)
    rows = dict(zip(indices, shown.top_loss_rows(result, indices)))
    n_rows, cols = figures.grid(len(indices))
    fig = figures.figure(3.0 * cols, 3.4 * n_rows)
    fig.suptitle("Where the model looks (Grad-CAM of the predicted output), top losses")
    for n, (i, cam) in enumerate(zip(indices, cams)):
        ax = fig.add_subplot(n_rows, cols, n + 1)
        image = result.image(i)
        ax.imshow(image)
        ax.imshow(cam.numpy(), cmap="jet", alpha=0.45, extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        label = shown.heatmap_label(outputs[n])
        actual = rows[i].get("actual")
        title = f"{figures.short(result.files[i])}\nmap of: {label}" + (f"  actual: {actual}" if actual else "")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return fig
