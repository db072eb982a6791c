"""The Trainer of a run: its epoch count from the plan, plugins, progress bar, resume checkpoint."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from lightcycle.checkpoint_io import with_atomic_checkpoints
from lightcycle.errors import LightcycleError, brief_cause
from lightcycle.plan import schedule_epochs, schedule_params
from lightcycle.run.config import build, overridden

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
    from lightning.pytorch.callbacks import ModelSummary as AnySummary

    from lightcycle.callbacks.model_summary import ModelSummary

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


def resume_checkpoint(resume: Any, output_dir: Path) -> str | None:
    """`resume`: false, true (this run dir's checkpoints/last.ckpt) or a checkpoint path."""
    if resume in (False, None, "false"):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if resume in (True, "true") else Path(str(resume)).expanduser()
    if not path.is_file():
        raise LightcycleError(
            f"resume: checkpoint {path} not found (to continue a run, pass the same hydra.run.dir=<its folder>)"
        )
    check_checkpoint(path, "resume")
    return str(path)


def check_checkpoint(path: Path, what: str) -> None:
    """Open `path` the way fit will (`weights_only=True`: tensors and plain data, no code run) and turn
    a truncated, foreign or code-carrying file into one line instead of torch's pages of advice."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: tensors are not read
    except Exception as exc:
        raise LightcycleError(
            f"{what}: cannot load checkpoint {path} with weights_only=True: truncated, not a checkpoint, "
            f"or it holds objects other than tensors and plain data ({brief_cause(exc, 120)})"
        ) from exc
