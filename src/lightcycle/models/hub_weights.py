"""timm's own pretrained weights for `model.pretrained=auto`: from its cache, or a download when the hub answers.

fastai's `vision_learner(dls, resnet34)` and timm users start from ImageNet weights; so does lightcycle's
default. A file already in the Hugging Face cache (or torch hub's, for timm's older URLs) is loaded
without touching the network. Otherwise the hub is probed once with a short timeout, so an offline
machine gets one clear line at once instead of a minute of retries and a silent run from scratch.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from timm.models import get_pretrained_cfg

try:  # optional: timm downloads from URLs without it
    import huggingface_hub
    from huggingface_hub import constants as hub_constants
except ImportError:
    huggingface_hub = hub_constants = None

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
HF_FILES = ("model.safetensors", "pytorch_model.bin")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _hf_hub() -> Any | None:
    """huggingface_hub, when it is installed (timm downloads from URLs without it)."""
    return huggingface_hub


def weights_source(name: str) -> str | None:
    """The URL timm would download `name`'s weights from, or None when timm has none for it."""
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id and _hf_hub() is not None:
        return f"{hub_constants.ENDPOINT}/{cfg.hf_hub_id}"
    return cfg.url or None


def cached_weights(name: str) -> Path | None:
    """The weights file timm would load for `name`, when it is already in a local cache."""
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    hub = _hf_hub()
    if cfg.hf_hub_id and hub is not None:
        for filename in [cfg.hf_hub_filename] if cfg.hf_hub_filename else HF_FILES:
            hit = hub.try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=hub_constants.HF_HUB_CACHE)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return path
    return None


def offline_reason(url: str) -> str | None:
    """Why `url` cannot be downloaded from here (HF_HUB_OFFLINE, no route to its host), or None."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    hub = _hf_hub()
    if hub is not None:
        offline = offline or bool(hub_constants.HF_HUB_OFFLINE)
    if offline and "huggingface" in url:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None  # only the proxy knows; let the download try
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{host} is unreachable ({exc.strerror or type(exc).__name__})"
    return None
