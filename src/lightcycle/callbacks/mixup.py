"""MixUp and CutMix (fastai's `MixUp`/`CutMix`, timm's `--mixup`/`--cutmix`) through timm's `Mixup`.

timm's `Mixup` does the mixing: MixUp blends each image with the batch reversed by a Beta(alpha,
alpha) weight, CutMix pastes a box of it; with both on, `switch_prob` picks CutMix per batch, and
`prob` is the chance that a batch is mixed at all. It turns the targets into soft ones ([N, C]
class probabilities, or mixed tag vectors for multi-label) and applies the task's label smoothing
itself, so the task's loss takes them as they are and nothing is smoothed twice. Which targets can
be mixed is the task's answer (`Task.mix_settings`): segmentation and points refuse.

The callback installs the mixer into the module (`VisionModule.mix_batches`), which mixes inside
`training_step` only: validation, TTA, interpretation and the final metrics see plain images. The
LR range test runs `training_step` too, so it sweeps with mixing on, as fastai's `lr_find` does
(it runs the training callbacks, MixUp included): the suggestion is for the loss that training
minimises, whose floor is higher and whose gradients are noisier than the unmixed one's.

While the head trains on precomputed activations nothing is mixed: cached features are not images
(CutMix has no boxes to cut, and blending feature vectors would be manifold mixup, another method),
just as augmentation is off while precomputing; mixing resumes with the images.

The training loss logged with mixing on is the loss on mixed targets (higher than an unmixed one);
no training accuracy is reported, and every validation metric is computed on unmixed images.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


class BatchMixer:
    """timm's `Mixup` for any batch size: timm pairs image i with image N-1-i and needs N even, so
    an odd batch mixes its first N-1 images and keeps the last one as it is (its target made soft
    and smoothed like the others)."""

    def __init__(self, mixup: Mixup) -> None:
        self.mixup = mixup

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2 == 0:
            return self.mixup(x, y)
        m = self.mixup
        last = mixup_target(y[-1:], m.num_classes, 1.0, m.label_smoothing, m.multi_label)
        if len(x) == 1:
            return x, last
        head_x, head_y = self.mixup(x[:-1].clone(), y[:-1])
        return torch.cat([head_x, x[-1:]]), torch.cat([head_y, last])


class MixUp(L.Callback):
    """Mix training batches with MixUp and/or CutMix (timm's `Mixup`, `mode` batch | pair | elem).

    Args:
        mixup_alpha: MixUp's Beta(alpha, alpha) (0 = no MixUp; fastai 0.4, timm's ImageNet recipes 0.8).
        cutmix_alpha: CutMix's Beta(alpha, alpha) (0 = no CutMix; timm 1.0).
        prob: chance that a batch (or pair, element) is mixed at all.
        switch_prob: with both on, the chance of CutMix instead of MixUp.
        mode: one mixing weight per `batch`, per `pair` or per `elem` (element).
        cutmix_minmax: CutMix box size as a [min, max] fraction of the image instead of `cutmix_alpha`.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        cutmix_minmax: list[float] | None = None,
    ) -> None:
        if float(mixup_alpha) < 0 or float(cutmix_alpha) < 0:
            raise LightcycleError(f"mixup.alpha and cutmix.alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        if float(mixup_alpha) == 0 and float(cutmix_alpha) == 0 and cutmix_minmax is None:
            raise LightcycleError("MixUp needs mixup.alpha > 0 or cutmix.alpha > 0")
        for value, name in ((prob, "mixup.prob"), (switch_prob, "mixup.switch_prob")):
            if not 0.0 <= float(value) <= 1.0:
                raise LightcycleError(f"{name} must be between 0 and 1, got {value}")
        if mode not in ("batch", "pair", "elem"):
            raise LightcycleError(f"mixup.mode must be batch, pair or elem, got {mode!r}")
        if cutmix_minmax is not None and len(cutmix_minmax) != 2:
            raise LightcycleError(f"cutmix.minmax must be [min, max] fractions, got {cutmix_minmax!r}")
        self.settings: dict[str, Any] = {
            "mixup_alpha": float(mixup_alpha), "cutmix_alpha": float(cutmix_alpha), "prob": float(prob),
            "switch_prob": float(switch_prob), "mode": mode,
            "cutmix_minmax": None if cutmix_minmax is None else [float(v) for v in cutmix_minmax],
        }
        self.mixer: BatchMixer | None = None
        self._paused_said = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        task = getattr(pl_module, "task", None)
        if task is None or not hasattr(pl_module, "mix_batches"):
            raise LightcycleError("MixUp needs a VisionModule (a module with a task and mix_batches)")
        self.mixer = BatchMixer(Mixup(**self.settings, **task.mix_settings()))  # the task may refuse
        pl_module.mix_batches(self.mixer)  # before the LR range test, which sweeps the mixed loss

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(pl_module, "mix_batches"):
            pl_module.mix_batches(None)  # a later fit without this callback trains unmixed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "precomputed", False) and not self._paused_said:
            log.info("mixup: not mixing while the head trains on precomputed activations (they are not images)")
            self._paused_said = True

    def state_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the settings come from the config, the mixing weights from the seeded RNG."""
