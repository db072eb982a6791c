"""Which runtime runs the model's forward pass in `lightcycle-serve`: torch or ONNX Runtime.

ONNX Runtime's forward pass is 2-3x faster than torch's on the CPU (docs/benchmarks.md, section 14),
so `runtime=auto` picks it there whenever onnx and onnxruntime are installed and the settings need
nothing torch-only (TTA views and snapshot ensembles run in torch); on a GPU, auto means torch.
The ONNX file is the checkpoint exported by `lightcycle-export`'s exporter (with its parity check
against the Lightning model) into the cache, once per checkpoint, never beside the checkpoint.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lightcycle.cache import cache_root
from lightcycle.errors import LightcycleError
from lightcycle.export import export

RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnx")


def onnx_installed() -> bool:
    """Both halves are there: `onnx` (the exporter writes with it) and `onnxruntime` (runs the file)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def resolve_runtime(runtime: str, accelerator: str, tta: int = 0, ensemble: bool = False) -> str:
    """`torch` or `onnx` for these settings; `runtime=onnx` that cannot be honoured is one clear error."""
    runtime = str(runtime)
    if runtime not in RUNTIMES:
        raise LightcycleError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return "torch"
    torch_only = [what for what, asked in ((f"tta.n={tta}", bool(tta)), ("ensemble=true", bool(ensemble))) if asked]
    if runtime == "onnx":
        if accelerator != "cpu":
            raise LightcycleError(f"runtime=onnx runs on the CPU, not device={accelerator}; use device=cpu or runtime=torch")
        if torch_only:
            raise LightcycleError(
                f"runtime=onnx cannot serve {' with '.join(torch_only)} (TTA and ensembles run in torch); use runtime=torch or auto"
            )
        if not onnx_installed():
            raise LightcycleError("runtime=onnx needs onnx and onnxruntime: pip install 'lightcycle[serve]'")
        return "onnx"
    return "onnx" if accelerator == "cpu" and not torch_only and onnx_installed() else "torch"


def onnx_model(ckpt: Path, sha256: str, cache_dir: Path | None = None) -> Path:
    """`ckpt` exported to ONNX (parity-checked) under `$LIGHTCYCLE_CACHE/serve-onnx/`, keyed by its
    sha256; a later start with the same checkpoint reuses the file."""
    folder = cache_root(cache_dir) / "serve-onnx"
    path = folder / f"{sha256[:32]}.onnx"
    if path.is_file() and path.with_name(f"{path.name}.json").is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    return export(ckpt, "onnx", path, overwrite=True).model
