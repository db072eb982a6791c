"""Turn the toolbox overrides of DESIGN.md into Lightning callbacks for `lightcycle-train`.

Each section owns one top-level config key (`snapshots`, `tta`, `resize`, `unfreeze`, ...) and
returns the callbacks it implies; callbacks stay usable from Python with a plain Trainer.
Callbacks that evaluate something at the end of training (TTA, snapshot ensembles) expose a
`final_metrics: dict[str, float]` attribute, filled in `on_fit_end`, that the CLI merges into
metrics.json.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")


def toolbox_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """All callbacks implied by the toolbox overrides in `cfg` (empty when every feature is off)."""
    callbacks: list[L.Callback] = []
    callbacks += unfreeze_section(cfg)
    callbacks += resize_section(cfg)
    callbacks += precompute_section(cfg)  # after unfreeze: it reads the unfreezing plan
    callbacks += tta_section(cfg)
    callbacks += snapshots_section(cfg)
    callbacks += last_checkpoint_section(cfg)
    callbacks += interpret_section(cfg)
    callbacks += lr_find_section(cfg)  # last: it sweeps what the others (unfreezing) set up
    return callbacks


def _section(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = cfg.get(key)
    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else {}


def _make(cls: type, key: str, **kwargs: Any) -> L.Callback:
    """Build a callback, turning an unknown setting into an error that names it."""
    import inspect

    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise LightcycleError(f"{key}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return cls(**kwargs)


# --- unfreeze: gradual unfreezing with discriminative LRs ----------------------------------------
def unfreeze_section(cfg: DictConfig) -> list[L.Callback]:
    """`unfreeze.milestones=[..]` (null or [] = off), `unfreeze.lr_mult`, `initial_trainable`, ..."""
    from lightcycle.callbacks.unfreeze import GradualUnfreezing

    section = _section(cfg, "unfreeze")
    milestones = section.pop("milestones", None)
    if milestones in (None, [], ()):
        return []
    if isinstance(milestones, int):
        milestones = [milestones]
    if not isinstance(milestones, (list, tuple)):
        raise LightcycleError(f"unfreeze.milestones must be a list of epochs like [2, 4], got {milestones!r}")
    return [_make(GradualUnfreezing, "unfreeze", milestones=milestones, **section)]


# --- precompute: train the head on cached backbone activations --------------------------------------
def precompute_section(cfg: DictConfig) -> list[L.Callback]:
    """`precompute=true` (while the backbone is frozen) or `precompute=N` (at most the first N epochs)."""
    from lightcycle.callbacks.precompute import Precompute

    value = cfg.get("precompute", False)
    if value in (False, None, 0):
        return []
    if value is True:
        epochs = None
    elif isinstance(value, int) and value > 0:
        epochs = value
    else:
        raise LightcycleError(f"precompute must be true, false or a number of epochs, got {value!r}")
    return [Precompute(cache_dir=cfg.paths.get("cache_dir"), epochs=epochs)]


# --- resize: progressive resizing ------------------------------------------------------------------
def resize_section(cfg: DictConfig) -> list[L.Callback]:
    """`resize.sizes={0:64,3:96,6:128}` (null = off), `resize.scale_batch`."""
    from lightcycle.callbacks.progressive_resize import ProgressiveResize

    section = _section(cfg, "resize")
    sizes = section.pop("sizes", None)
    if sizes is None:
        return []
    if not isinstance(sizes, dict):
        raise LightcycleError(f"resize.sizes must map epochs to sizes like {{0:64,3:96}}, got {sizes!r}")
    return [_make(ProgressiveResize, "resize", sizes=sizes, **section)]


# --- tta: test-time augmentation at the end of training -----------------------------------------
def tta_section(cfg: DictConfig) -> list[L.Callback]:
    """`tta.n=N` (0 = off; `tta=true` means n=4), `tta.beta`, `tta.merge`, `tta.views`, `tta.seed`."""
    from lightcycle.callbacks.tta import TTA

    node = cfg.get("tta")
    if isinstance(node, bool) or node is None:
        section: dict[str, Any] = {"n": 4 if node else 0, "seed": cfg.get("seed", 0)}
    elif isinstance(node, int):
        section = {"n": node, "seed": cfg.get("seed", 0)}
    else:
        section = _section(cfg, "tta")
    if not section.get("n"):
        if section.get("n", 0) != 0:
            raise LightcycleError(f"tta.n must be a whole number >= 0, got {section.get('n')!r}")
        return []
    return [_make(TTA, "tta", **section)]



# --- lr_find: the LR range test behind model.lr=auto ---------------------------------------------
# The module is built with this placeholder; the range test replaces it (every group scaled by the
# same factor) before the first step and stores the result, so a resumed run never sweeps again.
PROVISIONAL_LR = 1e-3


def lr_is_auto(cfg: DictConfig) -> bool:
    """`model.lr=auto`: find the learning rate with the LR range test."""
    return str(cfg.model.get("lr")).strip().lower() == "auto"


def model_overrides(cfg: DictConfig) -> dict[str, Any]:
    """Constructor arguments the toolbox decides instead of the config (the provisional lr for `auto`)."""
    return {"lr": PROVISIONAL_LR} if lr_is_auto(cfg) else {}


def lr_find_section(cfg: DictConfig) -> list[L.Callback]:
    """`model.lr=auto` runs the range test with `lr_find.*` (start_lr, end_lr, num_it, suggestion, ...)."""
    from lightcycle.callbacks.lr_finder import LRFinder

    if not lr_is_auto(cfg):
        return []
    section = _section(cfg, "lr_find")
    return [_make(LRFinder, "lr_find", dirpath=str(cfg.paths.output_dir), apply=True, **section)]


# --- snapshots: snapshot ensembling at SGDR cycle ends --------------------------------------------
def snapshots_section(cfg: DictConfig) -> list[L.Callback]:
    """`snapshots.keep=M` (0 = off): keep M snapshots and report ensemble_* metrics; needs schedule=sgdr."""
    from lightcycle.callbacks.snapshots import SnapshotEnsemble

    node = cfg.get("snapshots")
    section = {"keep": node} if isinstance(node, int) and not isinstance(node, bool) else _section(cfg, "snapshots")
    keep = section.pop("keep", 0)
    if keep in (0, None, False):
        return []
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise LightcycleError(f"snapshots.keep must be a whole number >= 0 (0 = off), got {keep!r}")
    schedule = cfg.get("schedule") or {}
    if schedule.get("name") != "sgdr":
        raise LightcycleError(
            f"snapshots.keep={keep} needs schedule=sgdr (snapshots are taken at the end of each SGDR cycle), "
            f"got schedule={schedule.get('name')}"
        )
    dirpath = f"{cfg.paths.output_dir}/checkpoints"
    return [_make(SnapshotEnsemble, "snapshots", keep=keep, dirpath=dirpath, **section)]


def apply_schedule_epochs(cfg: DictConfig, trainer_cfg: dict[str, Any]) -> None:
    """schedule=sgdr: the cycles decide the epoch count (fastai's fit_sgdr), so set trainer.max_epochs.

    The schedule is stepped per batch with steps_per_epoch = total steps / max_epochs, so restarts
    land exactly on epoch starts only when max_epochs equals the cycles' total.
    """
    schedule = dict(OmegaConf.to_container(cfg.schedule, resolve=True)) if cfg.get("schedule") else {}
    if schedule.pop("name", None) != "sgdr":
        return
    epochs = sgdr_epochs(schedule)
    if trainer_cfg.get("max_steps") not in (None, -1):
        raise LightcycleError(
            f"schedule=sgdr sets the length in epochs ({epochs}); remove trainer.max_steps={trainer_cfg['max_steps']}"
        )
    current = trainer_cfg.get("max_epochs")
    if current != epochs and _overridden("trainer.max_epochs"):
        log.warning(
            "trainer.max_epochs=%s ignored: schedule=sgdr with cycle_len=%s cycle_mult=%s n_cycles=%s lasts %d epochs",
            current, schedule.get("cycle_len", 1), schedule.get("cycle_mult", 1), schedule.get("n_cycles", 3), epochs,
        )
    log.info("schedule=sgdr: trainer.max_epochs=%d (the cycles' total)", epochs)
    trainer_cfg["max_epochs"] = epochs


def sgdr_epochs(schedule: dict[str, Any]) -> int:
    """How many epochs the SGDR cycles of `schedule` (its parameters, without `name`) last."""
    from lightcycle.schedules import SGDR

    try:
        return SGDR(steps_per_epoch=1, **schedule).total_epochs
    except (TypeError, ValueError) as exc:
        raise LightcycleError(f"schedule=sgdr: {exc}") from None


def _overridden(key: str) -> bool:
    """Whether `key` was set on the command line (Hydra overrides of this run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return False
        overrides = HydraConfig.get().overrides.task
    except Exception:  # no Hydra context (called from Python)
        return False
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)


# --- checkpoint_every_n_steps: mid-epoch last.ckpt for resume=true --------------------------------
def last_checkpoint_section(cfg: DictConfig) -> list[L.Callback]:
    """`checkpoint_every_n_steps=N` (0 = off): also refresh checkpoints/last.ckpt every N optimizer steps."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    every = cfg.get("checkpoint_every_n_steps") or 0
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise LightcycleError(f"checkpoint_every_n_steps must be a whole number >= 0 (0 = off), got {every!r}")
    if every == 0:
        return []
    return [
        ModelCheckpoint(
            dirpath=f"{cfg.paths.output_dir}/checkpoints", save_top_k=0, save_last=True, every_n_train_steps=every
        )
    ]

# --- interpret: confusion matrix, top losses, ... at the end of training ------------------------------
def interpret_section(cfg: DictConfig) -> list[L.Callback]:
    """`interpret.top_k=N` (0 = off): interpretation figures to TensorBoard and <run dir>/interpret."""
    from lightcycle.callbacks.interpretation import Interpretation

    node = cfg.get("interpret")
    section = {"top_k": node} if isinstance(node, int) and not isinstance(node, bool) else _section(cfg, "interpret")
    if section.get("top_k") in (0, None, False):
        return []
    section.setdefault("output_dir", f"{cfg.paths.output_dir}/interpret")
    return [_make(Interpretation, "interpret", **section)]


def collect_final_metrics(callbacks: list[Any]) -> dict[str, float]:
    """Merge the `final_metrics` of every callback that has them."""
    merged: dict[str, float] = {}
    for cb in callbacks:
        merged.update(getattr(cb, "final_metrics", None) or {})
    return merged
