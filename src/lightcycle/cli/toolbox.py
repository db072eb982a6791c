"""Turn the toolbox overrides of DESIGN.md into Lightning callbacks for `lightcycle-train`.

Each section owns one top-level config key (`snapshots`, `tta`, `resize`, `unfreeze`, ...) and
returns the callbacks it implies; callbacks stay usable from Python with a plain Trainer.
Callbacks that evaluate something at the end of training (TTA, snapshot ensembles) expose a
`final_metrics: dict[str, float]` attribute, filled in `on_fit_end`, that the CLI merges into
metrics.json.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig


def toolbox_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """All callbacks implied by the toolbox overrides in `cfg` (empty when every feature is off)."""
    callbacks: list[L.Callback] = []
    return callbacks


def collect_final_metrics(callbacks: list[Any]) -> dict[str, float]:
    """Merge the `final_metrics` of every callback that has them."""
    merged: dict[str, float] = {}
    for cb in callbacks:
        merged.update(getattr(cb, "final_metrics", None) or {})
    return merged
