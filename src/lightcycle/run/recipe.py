"""Multi-stage recipes: fastai's `fine_tune` and the 8-step "world-class classifier" as one run.

A recipe is a list of stages, each one `Trainer.fit` of the same module and DataModule, the way a
fastai user calls `fit_one_cycle` again after `unfreeze()`. A stage is an overlay on the run's own
config — the same keys as the command line (`schedule`, `precompute`, `snapshots`, `resize`, ...) —
plus what fastai's API says between fits:

    name:        shown in the log; the stage's checkpoint is checkpoints/stage-<k>-<name>.ckpt
    train:       head | all        freeze all but the head (fastai `freeze()`), or `unfreeze()`
    epochs:      epochs of the stage; an SGDR stage fits its cycles into them (else its cycles count);
                 `rest`: what `recipe.epochs` (the recipe's total budget) leaves after the other stages
    lr:          a number, auto (LR range test on this stage's setup) or null (keep the last stage's)
    lr_factor:   multiplies the lr (fine_tune halves it after the frozen stage)
    group_ratio: discriminative LRs: each earlier layer group gets lr / group_ratio of the next
                 (fastai 0.7's `lr=[lr/100, lr/10, lr]` is group_ratio 10); 1 = one lr for all
    lr_mult:     the same spread given as head/first-group ratio (fastai v2's `slice(lr/lr_mult, lr)`)
    lr_spread:   geometric (the default, as above) | body: every group but the head at lr / lr_mult
                 (fastai's `slice(lr)`: lr_mult 10, what fine_tune's frozen stage gives the body)
    lr_find_share: with lr auto, run the range test only if its `lr_find.num_it` iterations are at most
                 this share of the stage's optimizer steps (`lr_find.skip_share`, counted by the fit's
                 plan: per process under DDP), else keep the last stage's lr: on a small dataset a
                 sweep of the whole network costs several of its epochs
    train_bn:    whether the BatchNorm layers of frozen groups train (fastai v2's freeze, the model's
                 `train_bn`, the default) or stay as they are, statistics included (false: fastai 0.7's
                 freeze, what precomputed activations were computed with)
    bn_freeze:   every BatchNorm layer keeps its running statistics, trainable or not (fastai 0.7's
                 `learn.bn_freeze(True)`)
    set:         config overlay for this stage, e.g. {schedule: {pct_start: 0.99}, precompute: true}

`recipe.keep_optimizer_state: true`: each stage's optimizer starts from the last one's state (Adam's
moments and step counts), as fastai's Learner keeps its optimizer across `fit` calls (fine_tune);
false: a fresh optimizer per stage, as fastai 0.7 made one per `fit` (world_class).

TensorBoard shows every stage on one timeline (the logger's step offset grows stage by stage).
metrics.json holds the final validation metrics and, from the last stage, `tta_*` and `ensemble_*`.
`resume=true` skips stages whose checkpoint exists and continues with the next one.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lightcycle.checkpoint_io import read_checkpoint
from lightcycle.errors import LightcycleError
from lightcycle.module import LR_SPREADS
from lightcycle.plan import optimizer_steps, schedule_epochs, warn_few_steps
from lightcycle.run.callbacks import (
    collect_final_metrics,
    is_best_checkpoint,
    lr_is_auto,
    run_callbacks,
    save_optimizer,
)
from lightcycle.run.trainer import (
    build_trainer,
    check_same_model,
    check_training_length,
    run_trainer,
)

log = logging.getLogger("lightcycle")

TRAINABLE = ("head", "all")
REST = "rest"  # a stage's epochs: whatever the recipe's total leaves


@dataclass
class Stage:
    """One fit of a recipe (see the module docstring for the meaning of each field)."""

    name: str
    train: str = "all"
    epochs: int | str | None = None
    lr: float | str | None = None
    lr_factor: float = 1.0
    group_ratio: float | None = None
    lr_mult: float | None = None
    lr_spread: str = "geometric"
    lr_find_share: float | None = None
    train_bn: bool | None = None
    bn_freeze: bool = False
    set: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"recipe stage {self.name!r}"
        if self.train not in TRAINABLE:
            raise LightcycleError(f"{where}: train must be one of {', '.join(TRAINABLE)}, got {self.train!r}")
        if isinstance(self.epochs, str) and self.epochs != REST:
            raise LightcycleError(f"{where}: epochs must be a number or {REST!r}, got {self.epochs!r}")
        if self.epochs is not None and self.epochs != REST and int(self.epochs) < 1:
            raise LightcycleError(f"{where}: epochs must be at least 1, got {self.epochs}")
        if isinstance(self.lr, str) and self.lr.lower() != "auto":
            raise LightcycleError(f"{where}: lr must be a number, auto or null, got {self.lr!r}")
        if self.group_ratio is not None and self.lr_mult is not None:
            raise LightcycleError(f"{where}: give group_ratio or lr_mult, not both")
        if self.lr_spread not in LR_SPREADS:
            raise LightcycleError(f"{where}: lr_spread must be one of {', '.join(LR_SPREADS)}, got {self.lr_spread!r}")
        if self.lr_find_share is not None and not float(self.lr_find_share) > 0:
            raise LightcycleError(f"{where}: lr_find_share must be > 0 (or null), got {self.lr_find_share}")
        for value, name in ((self.group_ratio, "group_ratio"), (self.lr_mult, "lr_mult")):
            if value is not None and float(value) < 1:
                raise LightcycleError(f"{where}: {name} must be >= 1, got {value}")


def parse_stages(node: Any) -> list[Stage]:
    """The `recipe.stages` config list -> Stages, naming any unknown key."""
    raw = OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig,)) or OmegaConf.is_config(node) else node
    if not isinstance(raw, list) or not raw:
        raise LightcycleError(f"recipe.stages must be a non-empty list of stages, got {raw!r}")
    known = set(Stage.__dataclass_fields__)
    stages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise LightcycleError(f"recipe stage {i}: expected a mapping of settings, got {item!r}")
        unknown = sorted(set(item) - known)
        if unknown:
            raise LightcycleError(f"recipe stage {item.get('name', i)!r}: unknown setting(s) {unknown}; known: {sorted(known)}")
        stages.append(Stage(**{"name": f"stage{i + 1}", **item}))
    return stages


def stage_config(cfg: DictConfig, stage: Stage, last: bool) -> DictConfig:
    """The run's config with the stage's overlay; TTA and interpretation only after the last stage."""
    overlay: dict[str, Any] = dict(stage.set)
    if not last:  # end-of-training reports describe the finished model only
        overlay["tta"] = {"n": 0}
        overlay["interpret"] = {"top_k": 0}
    if stage.lr is not None and str(stage.lr).lower() == "auto":
        overlay.setdefault("model", {})["lr"] = "auto"
        if stage.lr_find_share is not None:  # the range test decides once it knows the stage's optimizer steps
            overlay["lr_find"] = {**(overlay.get("lr_find") or {}), "skip_share": float(stage.lr_find_share)}
    base = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # a copy, open to new keys
    schedule = overlay.get("schedule")
    if isinstance(schedule, dict) and schedule.get("name") not in (None, base.schedule.get("name")):
        base.schedule = schedule  # another schedule kind: replace, do not mix one_cycle and sgdr keys
        overlay = {k: v for k, v in overlay.items() if k != "schedule"}
    merged = OmegaConf.merge(base, OmegaConf.create(overlay))
    OmegaConf.set_struct(merged, False)
    if isinstance(stage.epochs, int) and merged.schedule.get("name") == "sgdr":
        merged.schedule.epochs = stage.epochs  # the cycles fill the stage's epochs
    return merged


def stage_epochs(cfg: DictConfig, stage: Stage) -> int:
    """How many epochs `stage` trains: its own `epochs`, else its SGDR cycles, else trainer.max_epochs."""
    if stage.epochs is not None and stage.epochs != REST:
        return int(stage.epochs)
    schedule = OmegaConf.to_container(stage_config(cfg, stage, last=False).schedule, resolve=True)
    return int(schedule_epochs(schedule, int(cfg.trainer.max_epochs)))


def resolve_budget(cfg: DictConfig, stages: list[Stage]) -> list[Stage]:
    """Give the `epochs: rest` stage what `recipe.epochs` leaves, so the whole recipe trains exactly that many."""
    rest = [s for s in stages if s.epochs == REST]
    if not rest:
        return stages
    if len(rest) > 1:
        raise LightcycleError(f"recipe: only one stage may have epochs: rest, got {[s.name for s in rest]}")
    total = OmegaConf.select(cfg, "recipe.epochs")
    if not isinstance(total, int) or isinstance(total, bool):
        raise LightcycleError(f"recipe: stage {rest[0].name!r} has epochs: rest, so recipe.epochs must be a whole number, got {total!r}")
    others = {s.name: stage_epochs(cfg, s) for s in stages if s.epochs != REST}
    left = total - sum(others.values())
    if left < 1:
        spent = " + ".join(f"{n} {e}" for n, e in others.items())
        raise LightcycleError(
            f"recipe.epochs={total} leaves no epoch for stage {rest[0].name!r} after {spent}; "
            f"give at least {sum(others.values()) + 1} epochs"
        )
    return [dataclasses.replace(s, epochs=left) if s.epochs == REST else s for s in stages]


def _group_lr_mult(stage: Stage, n_groups: int) -> float:
    if stage.lr_mult is not None:
        return float(stage.lr_mult)
    if stage.group_ratio is not None:
        return float(stage.group_ratio) ** (n_groups - 1)
    return 1.0


@dataclass(frozen=True)
class PlannedStage:
    """A stage with the number of epochs it trains."""

    index: int  # 1-based
    stage: Stage
    epochs: int


def plan_recipe(cfg: DictConfig) -> list[PlannedStage]:
    """Every stage of `recipe.stages` with its epochs (the `rest` budget given out), checked before any fit."""
    stages = resolve_budget(cfg, parse_stages(cfg.recipe.stages))
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    check_training_length(None, max_steps)
    planned = []
    for k, stage in enumerate(stages, start=1):
        epochs = stage_epochs(cfg, stage)
        if epochs < 1:  # no epochs of its own: trainer.max_epochs decides
            check_training_length(OmegaConf.select(cfg, "trainer.max_epochs", default=epochs))
        sgdr = stage_config(cfg, stage, last=False).schedule.get("name") == "sgdr"
        if sgdr and max_steps not in (None, -1):
            raise LightcycleError(
                f"recipe stage {stage.name!r}: schedule=sgdr sets the length in epochs ({epochs}); "
                f"remove trainer.max_steps={max_steps}"
            )
        planned.append(PlannedStage(k, stage, epochs))
    return planned


def run_recipe(cfg: DictConfig, model: Any, datamodule: Any, logger: Any) -> tuple[L.Trainer, dict[str, float]]:
    """Fit every stage in turn; returns the last Trainer and the final-metrics of its callbacks."""
    plan = plan_recipe(cfg)
    resume = cfg.resume not in (False, None, "false")
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    output_dir = Path(cfg.paths.output_dir)
    lr = float(model.hparams.lr)
    trainer: L.Trainer | None = None
    final: dict[str, float] = {}
    base_data = {k: getattr(datamodule, k) for k in ("size", "batch_size", "augment") if hasattr(datamodule, k)}
    model.warn_few_steps = False  # the stages' total is checked once, before the first fit
    budget = sum(p.epochs for p in plan)
    base_train_bn = bool(model.hparams.get("train_bn", True))
    keep_state = bool(OmegaConf.select(cfg, "recipe.keep_optimizer_state", default=False))
    for planned in plan:
        k, stage, last = planned.index, planned.stage, planned.index == len(plan)
        scfg = stage_config(cfg, stage, last)
        path = output_dir / "checkpoints" / f"stage-{k}-{stage.name}.ckpt"
        if stage.lr is not None and not lr_is_auto(scfg):
            lr = float(stage.lr)
        lr *= float(stage.lr_factor)
        model.hparams.lr = lr
        model.hparams.lr_mult = _group_lr_mult(stage, len(model.layer_groups()))
        model.hparams.lr_spread = stage.lr_spread
        model.hparams.schedule = OmegaConf.to_container(scfg.schedule, resolve=True)
        for key, base in base_data.items():  # fastai 0.7's set_data: a stage may change size, batch, augmentation
            setattr(datamodule, key, OmegaConf.select(scfg, f"data.{key}", default=base))
        model.hparams.train_bn = base_train_bn if stage.train_bn is None else bool(stage.train_bn)
        model.bn_freeze = bool(stage.bn_freeze)
        model.freeze_to(-1 if stage.train == "head" else 0)
        if resume and path.is_file():
            state = read_checkpoint(path, "resume")
            check_same_model(state, model, path, "resume")
            model.load_state_dict(state["state_dict"])
            lr = float(state.get("hyper_parameters", {}).get("lr", lr))
            log.info("recipe: stage %d/%d %r already done (%s), skipped", k, len(plan), stage.name, path)
            continue
        trainer = _fit_stage(scfg, planned, model, datamodule, logger, {**trainer_cfg, "max_epochs": planned.epochs}, lr,
                             len(plan), budget if trainer is None else None)
        if keep_state and trainer.optimizers:  # the next stage's optimizer goes on from this one's moments
            model.carried_optimizer_state = trainer.optimizers[0].state
        lr = float(model.hparams.lr)  # the range test may have chosen it
        trainer.save_checkpoint(path, weights_only=not save_optimizer(cfg))  # what the next stage and resume read
        plot = output_dir / "lr_find.png"
        if lr_is_auto(scfg) and plot.is_file() and trainer.is_global_zero:  # keep every stage's range test
            plot.replace(output_dir / f"lr_find-stage{k}.png")
        if logger and hasattr(logger, "step_offset"):
            logger.step_offset += trainer.global_step
        if last:
            final = collect_final_metrics(trainer.callbacks)
    if trainer is None:  # every stage was already done: a Trainer to validate with
        trainer = build_trainer({**trainer_cfg, "enable_progress_bar": False}, [], False)
    return trainer, final


def _fit_stage(
    scfg: DictConfig, planned: PlannedStage, model: Any, datamodule: Any, logger: Any,
    trainer_cfg: dict[str, Any], lr: float, n_stages: int, budget_epochs: int | None = None,
) -> L.Trainer:
    """One stage's fit: the run's callbacks for this stage's config, its own best checkpoint.

    `budget_epochs`: the epochs of every stage; given to the first fit, which warns when they make too
    few optimizer steps to learn (lightcycle.plan.few_steps_warning)."""
    callbacks = run_callbacks(scfg)
    for cb in callbacks:  # one best checkpoint per stage, not one that later stages overwrite
        if is_best_checkpoint(cb) and cb.filename:
            cb.filename = f"stage{planned.index}-{cb.filename}"
    if lr_is_auto(scfg):
        model.hparams.lr = lr  # the range test scales from here
    log.info(
        "recipe: stage %d/%d %r: train %s, %d epoch(s), %s, schedule %s",
        planned.index, n_stages, planned.stage.name, planned.stage.train, planned.epochs,
        "lr from the LR range test" if lr_is_auto(scfg) else f"lr {lr:.3g}", model.hparams.schedule.get("name"),
    )
    trainer = build_trainer(trainer_cfg, callbacks, logger)
    if budget_epochs:
        try:
            steps = optimizer_steps(trainer, len(datamodule.train_dataloader())) * budget_epochs
        except TypeError:  # a loader without a length: nothing to count
            steps = None
        if steps is not None:
            warn_few_steps(trainer, steps, budget_epochs, "recipe.epochs", datamodule=datamodule)
    with warnings.catch_warnings():
        if planned.index > 1:  # the earlier stages' checkpoints are there by design, not a reused run dir
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        run_trainer(trainer, "fit", model, datamodule=datamodule)
    return trainer
