"""Lightning's model summary, without the FLOPs it did not measure.

Lightning's summary counts FLOPs only by running `example_input_array` through the model; without
one (lightcycle's image size changes with progressive resizing, so it sets none) every row and the
total read 0, which looks like a measurement. This summary is the same table of layers, parameters
and modes, with the FLOPs column and total left out unless something was counted.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

log = logging.getLogger("lightcycle")


def summary_table(columns: list[tuple[str, list[str]]]) -> str:
    """Columns (header, cells) as a plain-text table, one row per layer."""
    widths = [max([len(header), *(len(str(c)) for c in cells)]) for header, cells in columns]
    rows = [" | ".join(f"{header:<{w}}" for (header, _), w in zip(columns, widths))]
    rows.append("-" * len(rows[0]))
    for i in range(len(columns[0][1]) if columns else 0):
        rows.append(" | ".join(f"{str(cells[i]):<{w}}" for (_, cells), w in zip(columns, widths)))
    return "\n".join(rows)


class ModelSummary(LightningModelSummary):
    """`lightning.pytorch.callbacks.ModelSummary` whose FLOPs appear only when they were counted.

    `lightcycle-train` adds it unless `trainer.enable_model_summary=false`; from Python pass it in
    `Trainer(callbacks=[...])` (Lightning then adds no summary of its own).
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = [(name, cells) for name, cells in summary_data if total_flops or name != "FLOPs"]
        def count(n: int) -> str:
            return get_human_readable_count(int(n)).strip()

        lines = [
            summary_table(columns),
            f"{count(trainable_parameters)} trainable params, {count(total_parameters - trainable_parameters)} "
            f"non-trainable, {count(total_parameters)} in all ({get_formatted_model_size(model_size)} MB); "
            f"modules in train mode: {total_training_modes['train']}, in eval mode: {total_training_modes['eval']}",
        ]
        if total_flops:
            lines.append(f"total FLOPs: {count(total_flops)}")
        log.info("model summary:\n%s", "\n".join(lines))
