"""The Trainer of a run: its epoch count from the plan, plugins, progress bar, resume checkpoint, Ctrl-C."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary as AnySummary
from omegaconf import DictConfig, OmegaConf

from lightcycle.callbacks.model_summary import ModelSummary
from lightcycle.checkpoint_io import read_checkpoint, with_atomic_checkpoints
from lightcycle.checkpoint_record import check_checkpoint_record
from lightcycle.errors import LightcycleError
from lightcycle.plan import schedule_epochs, schedule_params
from lightcycle.run.config import build, overridden
from lightcycle.run.threads import set_training_threads

log = logging.getLogger("lightcycle")


def apply_schedule_epochs(cfg: DictConfig, trainer_cfg: dict[str, Any]) -> None:
    """Set trainer.max_epochs to the plan's epoch count for the run's schedule (SGDR: the cycles').

    SGDR is stepped per batch in epochs of steps_per_epoch = total steps / max_epochs, so restarts
    land exactly on epoch starts only when max_epochs equals the cycles' total.
    """
    schedule = OmegaConf.to_container(cfg.schedule, resolve=True) if cfg.get("schedule") else None
    name, params = schedule_params(schedule)
    if name != "sgdr":
        return
    current = trainer_cfg.get("max_epochs")
    epochs = schedule_epochs(schedule, current)
    if trainer_cfg.get("max_steps") not in (None, -1):
        raise LightcycleError(
            f"schedule=sgdr sets the length in epochs ({epochs}); remove trainer.max_steps={trainer_cfg['max_steps']}"
        )
    if current != epochs and overridden("trainer.max_epochs"):
        log.warning(
            "trainer.max_epochs=%s ignored: schedule=sgdr with cycle_len=%s cycle_mult=%s n_cycles=%s lasts %d epochs",
            current, params.get("cycle_len", 1), params.get("cycle_mult", 1), params.get("n_cycles", 3), epochs,
        )
    log.info("schedule=sgdr: trainer.max_epochs=%d (the cycles' total)", epochs)
    trainer_cfg["max_epochs"] = epochs


def _build_plugins(node: Any) -> Any:
    """trainer.plugins from the config: plugin names stay strings, `_target_` nodes are instantiated."""
    if node is None or isinstance(node, str):
        return node
    if isinstance(node, (list, tuple)):
        return [_build_plugins(item) for item in node]
    return build(OmegaConf.create(node))


def build_trainer(trainer_cfg: dict[str, Any], callbacks: list[L.Callback], logger: Any) -> L.Trainer:
    """The Trainer from the `trainer` config: progress bar only on a terminal, atomic checkpoint writes,
    lightcycle's model summary (no FLOPs column of zeros) unless `enable_model_summary` is false."""
    trainer_cfg = dict(trainer_cfg)
    progress = trainer_cfg.pop("enable_progress_bar", None)
    if trainer_cfg.pop("enable_model_summary", True) is not False and not any(isinstance(c, AnySummary) for c in callbacks):
        callbacks = [*callbacks, ModelSummary()]
    trainer_cfg["enable_model_summary"] = False  # Lightning's own would be a second summary, or a note about ours
    plugins = with_atomic_checkpoints(_build_plugins(trainer_cfg.pop("plugins", None)))  # no half-written last.ckpt
    return build(
        OmegaConf.create(trainer_cfg),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=sys.stderr.isatty() if progress is None else bool(progress),
        plugins=plugins,
    )


def check_training_length(max_epochs: Any, max_steps: Any = None, where: str = "trainer") -> None:
    """Refuse a fit that trains nothing: its "final metrics" would be an untrained model's."""
    if max_steps == 0:
        raise LightcycleError(f"{where}.max_steps=0 trains nothing: give at least 1 step (or -1 for no step limit)")
    if isinstance(max_epochs, int) and not isinstance(max_epochs, bool) and (max_epochs == 0 or max_epochs < -1):
        raise LightcycleError(
            f"{where}.max_epochs={max_epochs} trains nothing (the final metrics would be an untrained model's): "
            "give at least 1 epoch"
        )


def run_trainer(trainer: L.Trainer, method: str, *args: Any, **kwargs: Any) -> Any:
    """`trainer.<method>(...)` (fit, validate), where Ctrl-C raises KeyboardInterrupt.

    Lightning answers Ctrl-C with its own line and `sys.exit(1)`, which reads like a failure; the
    run turns the KeyboardInterrupt into where its last checkpoint is and how to resume it.
    """
    if kwargs.get("datamodule") is not None:  # on CPU: the cores the DataLoader workers leave
        set_training_threads(trainer, kwargs["datamodule"])
    try:
        return getattr(trainer, method)(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def resume_checkpoint(resume: Any, output_dir: Path, model: Any = None) -> str | None:
    """`resume`: false, true (this run dir's checkpoints/last.ckpt) or a checkpoint path.

    With `model`, the checkpoint must have been trained for the same task, backbone and outputs.
    """
    if resume in (False, None, "false"):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if resume in (True, "true") else Path(str(resume)).expanduser()
    if not path.is_file():
        raise LightcycleError(
            f"resume: checkpoint {path} not found (to continue a run, pass the same hydra.run.dir=<its folder>)"
        )
    checkpoint = read_checkpoint(path, "resume")
    check_checkpoint_record(checkpoint, path)  # its sizes and class lists drive what training allocates
    if model is not None:
        check_same_model(checkpoint, model, path, "resume")
    return str(path)


def _model_identity(hparams: Any) -> tuple[dict[str, Any], str]:
    """(task config, backbone name) from a module's or a checkpoint's hyper-parameters."""
    hparams = hparams if isinstance(hparams, dict) else {}
    task = hparams.get("task")
    return (dict(task) if isinstance(task, dict) else {}), str(hparams.get("backbone", "an unknown backbone"))


def check_same_model(checkpoint: dict[str, Any], model: Any, path: Path, what: str) -> None:
    """Refuse a checkpoint of another task, backbone, class list or point count than `model`, naming both."""
    theirs, their_backbone = _model_identity(checkpoint.get("hyper_parameters") or {})
    ours, our_backbone = _model_identity(getattr(model, "hparams", {}))
    if not ours:
        return  # not a VisionModule: nothing to compare
    their_task = theirs.get("name", "an unknown task")
    if their_task != ours.get("name") or their_backbone != our_backbone:
        raise LightcycleError(
            f"{what}: checkpoint {path} was trained for {their_task} with {their_backbone}; "
            f"this run is {ours.get('name')} with {our_backbone}"
        )
    for key, label in (("class_names", "classes"), ("num_points", "points")):
        if key in theirs and key in ours and theirs[key] != ours[key]:
            raise LightcycleError(
                f"{what}: checkpoint {path} was trained on {label} {_short(theirs[key])}; "
                f"this run's data has {_short(ours[key])}"
            )


def _short(value: Any, shown: int = 8) -> str:
    if isinstance(value, (list, tuple)) and len(value) > shown:
        return f"{len(value)} [{', '.join(map(repr, value[:shown]))}, ...]"
    return repr(list(value)) if isinstance(value, tuple) else repr(value)
