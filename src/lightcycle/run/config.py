"""From a composed Hydra config to objects: where conf/ lives, instantiation, sections, overrides."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightcycle.errors import LightcycleError


def config_dir() -> str:
    """conf/ inside an installed wheel, or the repository's conf/ for an editable install."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"lightcycle's conf/ folder was not found next to {package}")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a LightcycleError raised inside the target surfaces as itself."""
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, LightcycleError):
                raise cause from None
            cause = cause.__cause__
        raise


def section_of(cfg: DictConfig, key: str) -> dict[str, Any]:
    """The top-level mapping `key` of `cfg` as a plain dict (empty when absent or not a mapping)."""
    node = cfg.get(key)
    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else {}


def make(cls: type, key: str, **kwargs: Any) -> Any:
    """`cls(**kwargs)`, turning a setting `cls` does not take into an error that names it."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise LightcycleError(f"{key}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**kwargs)


def overridden(key: str) -> bool:
    """Whether `key` was set on the command line (Hydra overrides of this run)."""
    try:
        if not HydraConfig.initialized():
            return False
        overrides = HydraConfig.get().overrides.task
    except Exception:  # no Hydra context (called from Python)
        return False
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)


def hydra_job_files(output_dir: str | Path) -> tuple[str, ...]:
    """Names Hydra has already written into `output_dir` for the current job (its log file, `.hydra/`);
    empty outside a Hydra job or when `output_dir` is not the job's folder."""
    try:
        if not HydraConfig.initialized():
            return ()
        hydra = HydraConfig.get()
        if Path(str(hydra.runtime.output_dir)).absolute() != Path(output_dir).absolute():
            return ()
        names = [f"{hydra.job.name}.log"]
        if hydra.output_subdir:
            names.append(str(hydra.output_subdir))
        return tuple(names)
    except Exception:  # a partial Hydra context (compose API): nothing known to keep
        return ()
