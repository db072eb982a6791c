"""A run's record (`<run dir>/.hydra/`: config.yaml, hydra.yaml, overrides.yaml), read as data and
written once the run is accepted.

Reading. A run folder is something people share (zipped, copied off a cluster), so its record is
untrusted input: commands that look at a finished run (lightcycle-interpret, and any other that
needs the run's data settings) must never instantiate what it says. `load_datamodule` builds the
DataModule from the record's `data:` section without Hydra's instantiate: `_target_` must name
one of lightcycle's own DataModule classes, every other key must be a setting that class's
constructor takes, and values are plain data (no `_target_`, `_partial_`, ... at any depth).
Anything else is one LightcycleError naming the file and the key; nothing is imported or called.
`run_setting` reads one plain value (e.g. `interpret.seed`) the same way, and `read_overrides`
the command line a job ran with.

Writing. Hydra writes `.hydra/` into the run dir before the run starts, so a run that is then
refused (the folder holds another run, its lock cannot be read, `resume=true` names another
backbone) would already have replaced the earlier run's record. lightcycle-train's run-dir guard
(`defer_record`) turns Hydra's writing off and the run writes the same three files itself
(`write_record`) once it has been accepted.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import lightcycle.data as data
from lightcycle.atomic import write_text
from lightcycle.data.base import ImageDataModule
from lightcycle.errors import LightcycleError, brief_cause

RECORD_DIR = ".hydra"
CONFIG_FILE = "config.yaml"


def run_dir_of(ckpt: str | os.PathLike) -> Path:
    """<run dir> for <run dir>/checkpoints/x.ckpt; the checkpoint's own folder otherwise."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def config_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / RECORD_DIR / CONFIG_FILE


# --- reading: the record is data -----------------------------------------------------------------------
def datamodule_classes() -> dict[str, type]:
    """lightcycle's DataModules by every name a config may give them (`lightcycle.data.X`, `<module>.X`)."""
    classes: dict[str, type] = {}
    for name in data.__all__:
        cls = getattr(data, name)
        if isinstance(cls, type) and issubclass(cls, ImageDataModule) and cls is not ImageDataModule:
            classes[f"lightcycle.data.{name}"] = cls
            classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return classes


def constructor_settings(cls: type) -> set[str]:
    """The keyword settings `cls(...)` takes, following `**kwargs` up to the base classes."""
    known: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        known |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return known


def _load_yaml_config(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise LightcycleError(f"{path}: cannot read run config ({brief_cause(exc, 160)})") from None
    if not isinstance(cfg, DictConfig):
        raise LightcycleError(f"{path}: not a run config (a mapping of settings), it holds a {type(cfg).__name__}")
    return cfg


def _check_plain(value: Any, key: str, path: Path) -> None:
    """Refuse Hydra's object keys (`_target_`, `_partial_`, ...) below a setting: a record holds values only."""
    if isinstance(value, dict):
        for k, v in sorted(value.items(), key=lambda item: item[0] != "_target_"):  # name `_target_` first
            if str(k).startswith("_") and str(k).endswith("_"):
                raise LightcycleError(
                    f"{path}: {key}.{k}: a run config holds settings, not objects to build; refusing to read it"
                )
            _check_plain(v, f"{key}.{k}", path)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]", path)


def data_settings(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> tuple[type, dict[str, Any]]:
    """(DataModule class, its settings) from the run's `data:` section with the non-null `overrides`
    (command-line values: `root`, `size`, ..., or a whole `_target_` when the run has no record)."""
    path = config_file(run_dir)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if path.is_file():
        cfg = _load_yaml_config(path)
        node = cfg.get("data")
        if not isinstance(node, DictConfig):
            raise LightcycleError(f"{path}: has no data section")
        if overrides.get("root") is not None and node.get("demo") is not None:
            overrides = {**overrides, "demo": None}  # data.root on a demo run: the user's folder, not the demo
        try:
            merged = OmegaConf.merge(node, overrides)
            OmegaConf.set_struct(merged, False)
            cfg.data = merged  # interpolations (${seed}, ${model.backbone}) resolve against the whole record
            settings = OmegaConf.to_container(cfg.data, resolve=True)
        except Exception as exc:
            raise LightcycleError(f"{path}: cannot resolve the data config ({brief_cause(exc, 160)})") from None
    elif overrides.get("_target_"):
        settings = dict(overrides)
    else:
        raise LightcycleError(
            f"{path}: run config not found, so the data settings are unknown; pass run_dir=<the training run dir> "
            "or the whole data config (+data._target_=lightcycle.data.FolderDataModule data.root=...)"
        )
    assert isinstance(settings, dict)
    target = settings.pop("_target_", None)
    classes = datamodule_classes()
    if not isinstance(target, str) or target not in classes:
        names = sorted({f"lightcycle.data.{c.__name__}" for c in classes.values()})
        raise LightcycleError(
            f"{path}: data._target_={target!r} is not one of lightcycle's DataModules ({', '.join(names)}); "
            "a run config is read as data, never run"
        )
    cls = classes[target]
    known = constructor_settings(cls)
    for key, value in settings.items():
        if key not in known:
            raise LightcycleError(
                f"{path}: data.{key} is not a setting of {cls.__name__}; refusing to read it (known: {', '.join(sorted(known))})"
            )
        _check_plain(value, f"data.{key}", path)
    return cls, settings


def load_datamodule(run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Any:
    """The run's DataModule, built from its record as data (see the module docstring); not set up yet."""
    cls, settings = data_settings(run_dir, overrides)
    return cls(**settings)


def checkpoint_datamodule(
    ckpt: str | os.PathLike, overrides: dict[str, Any] | None = None, run_dir: str | os.PathLike | None = None
) -> Any:
    """The DataModule `ckpt` was trained on, not set up yet: the data settings of its run (`run_dir`,
    default `run_dir_of(ckpt)`) with the non-null `overrides`, at the image and batch size Lightning
    saved with the checkpoint (progressive resizing may end at another size than data.size) unless
    an override names them."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    datamodule = load_datamodule(run_dir if run_dir is not None else run_dir_of(ckpt), overrides)
    state = {k: v for k, v in saved_datamodule_state(ckpt, type(datamodule).__qualname__).items() if k not in overrides}
    if state:
        datamodule.load_state_dict({**datamodule.state_dict(), **state})
    return datamodule


def saved_datamodule_state(ckpt: str | os.PathLike, key: str) -> dict[str, Any]:
    """What Lightning saved of the DataModule under `key` in `ckpt` (current image size, batch size), if anything."""

    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return {}
    state = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    return dict(state) if isinstance(state, dict) else {}


def run_setting(run_dir: str | os.PathLike, key: str, default: Any = None) -> Any:
    """One plain value of the run's record (`interpret.seed`), or `default` when it is absent or unreadable."""
    path = config_file(run_dir)
    if not path.is_file():
        return default
    try:
        value = OmegaConf.select(_load_yaml_config(path), key, default=default)
    except Exception:  # an unresolvable interpolation: the default
        return default
    return value if isinstance(value, (int, float, str, bool)) or value is None else default


def read_overrides(job_dir: str | os.PathLike) -> list[str]:
    """The command-line overrides a job ran with (`.hydra/overrides.yaml`), as plain strings."""
    path = Path(job_dir) / RECORD_DIR / "overrides.yaml"
    try:
        return overrides_in(path)
    except (OSError, ValueError) as exc:
        raise LightcycleError(f"{path}: cannot read it ({brief_cause(exc, 120)})") from None


def overrides_in(path: Path) -> list[str]:
    """The overrides listed in `path`; ValueError (a short reason) for a file that is not a YAML list of strings."""
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ValueError("invalid YAML" + (f" at line {mark.line + 1}" if mark is not None else "")) from None
    if not isinstance(overrides, list):
        raise ValueError(f"a YAML {type(overrides).__name__}, not a list of overrides")
    if not all(isinstance(o, str) for o in overrides):
        raise ValueError("not a list of overrides (key=value strings)")
    return overrides


# --- writing: after the run is accepted ----------------------------------------------------------------
_deferred: dict[str, str] = {}  # run dir (realpath) -> the record folder Hydra would have written


def defer_record(config: DictConfig, run_dir: str | os.PathLike) -> None:
    """Keep Hydra from writing `config`'s record into `run_dir` now; `write_record` writes it later."""
    subdir = OmegaConf.select(config, "hydra.output_subdir", default=None)
    if subdir is None:
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = None
    _deferred[os.path.realpath(run_dir)] = str(subdir)


def write_record(cfg: DictConfig, run_dir: str | os.PathLike) -> Path | None:
    """Write the run's record (what Hydra would have written) into `run_dir`, if its writing was deferred."""
    subdir = _deferred.pop(os.path.realpath(run_dir), None)
    if subdir is None:
        return None

    hydra_cfg = HydraConfig.get()
    folder = Path(run_dir) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    with_hydra = OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg, resolve=False)})
    with_hydra.hydra.output_subdir = subdir  # as Hydra would have recorded it
    files = {
        CONFIG_FILE: cfg,
        "hydra.yaml": with_hydra,
        "overrides.yaml": OmegaConf.create(list(hydra_cfg.overrides.task)),
    }
    for name, node in files.items():
        write_text(folder / name, OmegaConf.to_yaml(node))
    return folder

