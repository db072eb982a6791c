"""The callbacks of a run, built one way: one section per top-level config key, in one ordered list.

`SECTIONS` lists every key that implies callbacks — the `callbacks` config group (Hydra `_target_`
nodes: checkpoints, LR monitor, epoch log, divergence guard) first, then the toolbox keys (`ema`,
`mixup`/`cutmix`, `unfreeze`, `precompute`, `tta`, `snapshots`, ...) — each with the function that
turns its settings into callbacks (none when it is off; a setting the callback does not take is one
line naming it, `run.config.make`). The list is the order Lightning calls their hooks in; where that
matters a section names the sections it must follow (`after`), and `check_order` holds the list to it.
Callbacks that need one another find each other through `lightcycle.callbacks.interfaces`, never by
class; they stay usable from Python with a plain Trainer. Callbacks that evaluate something at the
end of training (TTA, snapshot ensembles) are `ReportsFinalMetrics`: the run merges their
`final_metrics` into metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from lightcycle.callbacks import (
    EMA,
    TTA,
    GradualUnfreezing,
    Interpretation,
    LRFinder,
    MixUp,
    Precompute,
    ProgressiveResize,
    ShowBatch,
    SnapshotEnsemble,
)
from lightcycle.callbacks.interfaces import ReportsFinalMetrics
from lightcycle.errors import LightcycleError
from lightcycle.run.config import build, make, section_of


def config_callbacks(cfg: DictConfig, logger: Any = None) -> list[L.Callback]:
    """The `callbacks` config group, instantiated (checkpointing, LR monitor, epoch log, divergence guard).

    `logger`: the run's logger (default: whether the config has one); without one the LR monitor is
    left out (Lightning refuses it with nothing to log into)."""
    callbacks = [build(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    if not (bool(cfg.get("logger")) if logger is None else logger):  # `~logger`: nothing to monitor the lr into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    keep_optimizer = save_optimizer(cfg)
    for cb in callbacks:
        if is_best_checkpoint(cb):
            cb.save_weights_only = not keep_optimizer
    return callbacks


def save_optimizer(cfg: DictConfig) -> bool:
    """`checkpoints.save_optimizer`: whether best and stage checkpoints keep optimizer and callback state.

    last.ckpt always does (resume=true continues from it); the others are read for their weights,
    hyperparameters and input framing only (predict, interpret, export, a recipe's next stage), and
    without Adam's two moments per weight they are about a third of the size.
    """
    value = OmegaConf.select(cfg, "checkpoints.save_optimizer", default=False)
    if not isinstance(value, bool):
        raise LightcycleError(f"checkpoints.save_optimizer must be true or false, got {value!r}")
    return value


def is_best_checkpoint(callback: Any) -> bool:
    """A ModelCheckpoint that keeps the best checkpoints by a monitored metric (not last.ckpt)."""
    return isinstance(callback, ModelCheckpoint) and callback.monitor is not None and not callback.save_last


# --- ema: exponential moving average of the weights ---------------------------------------------------
def ema_section(cfg: DictConfig) -> list[L.Callback]:
    """`ema.decay=0.999` (null or 0 = off), `ema.warmup`: validate, checkpoint and serve the averaged weights."""
    section = section_of(cfg, "ema")
    decay = section.pop("decay", None)
    if decay in (None, 0, 0.0, False):
        return []
    return [make(EMA, "ema", decay=decay, **section)]


# --- mixup / cutmix: mixed training batches ----------------------------------------------------------
def mixup_section(cfg: DictConfig) -> list[L.Callback]:
    """`mixup.alpha`, `cutmix.alpha` (both 0 = off), `mixup.prob`, `mixup.switch_prob`, `mixup.mode`, `cutmix.minmax`."""
    mixup, cutmix = section_of(cfg, "mixup"), section_of(cfg, "cutmix")
    mixup_alpha = float(mixup.pop("alpha", 0.0) or 0.0)
    cutmix_alpha = float(cutmix.pop("alpha", 0.0) or 0.0)
    minmax = cutmix.pop("minmax", None)
    if cutmix:
        raise LightcycleError(f"cutmix: unknown setting(s) {sorted(cutmix)}; known: ['alpha', 'minmax']")
    if mixup_alpha == 0 and cutmix_alpha == 0 and minmax is None:
        return []
    return [make(MixUp, "mixup", mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, cutmix_minmax=minmax, **mixup)]


# --- show_batch: a look at the augmented training samples ----------------------------------------------
def show_batch_section(cfg: DictConfig) -> list[L.Callback]:
    """`show_batch.n=16` (0 = off): the grid in TensorBoard (data/train_batch) and <run dir>/train_batch.png."""
    section = section_of(cfg, "show_batch")
    if section.get("n", 0) in (0, None, False):
        return []
    section.setdefault("output_dir", str(cfg.paths.output_dir))
    section.setdefault("seed", cfg.get("seed", 0))
    return [make(ShowBatch, "show_batch", **section)]


# --- unfreeze: gradual unfreezing with discriminative LRs ----------------------------------------
def unfreeze_section(cfg: DictConfig) -> list[L.Callback]:
    """`unfreeze.milestones=[..]` (null or [] = off), `unfreeze.lr_mult`, `initial_trainable`, ..."""
    section = section_of(cfg, "unfreeze")
    milestones = section.pop("milestones", None)
    if milestones in (None, [], ()):
        return []
    if isinstance(milestones, int):
        milestones = [milestones]
    if not isinstance(milestones, (list, tuple)):
        raise LightcycleError(f"unfreeze.milestones must be a list of epochs like [2, 4], got {milestones!r}")
    return [make(GradualUnfreezing, "unfreeze", milestones=milestones, **section)]


# --- precompute: train the head on cached backbone activations --------------------------------------
def precompute_section(cfg: DictConfig) -> list[L.Callback]:
    """`precompute=true` (while the backbone is frozen) or `precompute=N` (at most the first N epochs)."""
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
    """`'resize.sizes={0:64,3:96,6:128}'` (quoted on a shell command line; null = off), `resize.scale_batch`."""
    section = section_of(cfg, "resize")
    sizes = section.pop("sizes", None)
    if sizes is None:
        return []
    if not isinstance(sizes, dict):
        raise LightcycleError(
            f"resize.sizes must map epochs to sizes like 'resize.sizes={{0:64,3:96}}' (quoted, or the shell splits "
            f"the braces into separate arguments), got {sizes!r}")
    return [make(ProgressiveResize, "resize", sizes=sizes, **section)]


# --- tta: test-time augmentation at the end of training -----------------------------------------
def tta_section(cfg: DictConfig) -> list[L.Callback]:
    """`tta.n=N` (0 = off; `tta=true` means n=4), `tta.beta`, `tta.merge`, `tta.views`, `tta.seed`."""
    node = cfg.get("tta")
    if isinstance(node, bool) or node is None:
        section: dict[str, Any] = {"n": 4 if node else 0, "seed": cfg.get("seed", 0)}
    elif isinstance(node, int):
        section = {"n": node, "seed": cfg.get("seed", 0)}
    else:
        section = section_of(cfg, "tta")
    if not section.get("n"):
        if section.get("n", 0) != 0:
            raise LightcycleError(f"tta.n must be a whole number >= 0, got {section.get('n')!r}")
        return []
    return [make(TTA, "tta", **section)]


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
    if not lr_is_auto(cfg):
        return []
    section = section_of(cfg, "lr_find")
    return [make(LRFinder, "lr_find", dirpath=str(cfg.paths.output_dir), apply=True, **section)]


# --- snapshots: snapshot ensembling at SGDR cycle ends --------------------------------------------
def snapshots_section(cfg: DictConfig) -> list[L.Callback]:
    """`snapshots.keep=M` (0 = off): keep M snapshots and report ensemble_* metrics; needs schedule=sgdr."""
    node = cfg.get("snapshots")
    section = {"keep": node} if isinstance(node, int) and not isinstance(node, bool) else section_of(cfg, "snapshots")
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
    return [make(SnapshotEnsemble, "snapshots", keep=keep, dirpath=dirpath, **section)]


# --- checkpoint_every_n_steps: mid-epoch last.ckpt for resume=true --------------------------------
def last_checkpoint_section(cfg: DictConfig) -> list[L.Callback]:
    """`checkpoint_every_n_steps=N` (0 = off): also refresh checkpoints/last.ckpt every N optimizer steps."""
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
    node = cfg.get("interpret")
    section = {"top_k": node} if isinstance(node, int) and not isinstance(node, bool) else section_of(cfg, "interpret")
    if section.get("top_k") in (0, None, False):
        return []
    section.setdefault("output_dir", f"{cfg.paths.output_dir}/interpret")
    return [make(Interpretation, "interpret", **section)]


def collect_final_metrics(callbacks: list[Any]) -> dict[str, float]:
    """Merge the `final_metrics` of every callback that reports them (`ReportsFinalMetrics`)."""
    merged: dict[str, float] = {}
    for cb in callbacks:
        if isinstance(cb, ReportsFinalMetrics):
            merged.update(cb.final_metrics or {})
    return merged


# --- the sections, in the order their callbacks run ------------------------------------------------
@dataclass(frozen=True)
class Section:
    """A top-level config key and how its settings become callbacks.

    `keys`: the config keys it reads (for the docs and error messages). `build`: config -> callbacks
    (empty when the feature is off). `after`: sections whose callbacks must run before this one's,
    with `why`.
    """

    name: str
    keys: tuple[str, ...]
    build: Callable[[DictConfig], list[L.Callback]]
    after: tuple[str, ...] = ()
    why: str = ""


SECTIONS: tuple[Section, ...] = (
    Section("callbacks", ("callbacks", "checkpoints.save_optimizer"), config_callbacks),
    Section("ema", ("ema",), ema_section),
    Section("mixup", ("mixup", "cutmix"), mixup_section),
    Section("show_batch", ("show_batch",), show_batch_section),
    Section("unfreeze", ("unfreeze",), unfreeze_section),
    Section("resize", ("resize",), resize_section),
    Section("precompute", ("precompute",), precompute_section, after=("unfreeze",),
            why="it follows the unfreezing plan, whose callback sets the trainable groups before precompute picks the loaders"),
    Section("tta", ("tta",), tta_section),  # on_fit_end: the average is in the model by then, whatever the order
    Section("snapshots", ("snapshots",), snapshots_section, after=("ema",),
            why="a snapshot holds the average updated by its cycle's last step, and the ensemble is scored after "
                "the average is copied into the model"),
    Section("checkpoint_every_n_steps", ("checkpoint_every_n_steps",), last_checkpoint_section),
    Section("interpret", ("interpret",), interpret_section),  # on_fit_end, as TTA
    Section("lr_find", ("model.lr", "lr_find"), lr_find_section, after=("unfreeze", "resize", "precompute"),
            why="the range test sweeps the setup the others (freezing, image size, cached features) start the fit with"),
)


def check_order(sections: Sequence[Section] = SECTIONS) -> None:
    """Raise when a section stands before one it must follow (a mistake in `SECTIONS`, not the user's)."""
    seen: set[str] = set()
    names = {s.name for s in sections}
    for section in sections:
        late = [name for name in section.after if name in names and name not in seen]
        if late:
            raise RuntimeError(f"callback section {section.name!r} must come after {late}: {section.why}")
        seen.add(section.name)


def run_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Every callback of a run, section by section in `SECTIONS` order."""
    return [callback for section in SECTIONS for callback in section.build(cfg)]


def toolbox_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The callbacks the toolbox keys imply (every section but the `callbacks` config group), in order."""
    return [callback for section in SECTIONS if section.name != "callbacks" for callback in section.build(cfg)]


check_order()
