"""Interpretation at the end of training: confusion matrix, most confused, top losses, the course's views.

After `fit`, rank 0 runs the trained model once over the validation set (lightcycle.interpretation)
and logs the figures to every logger that takes figures (TensorBoard: `interpret/<name>`), and,
when `output_dir` is set, writes the PNGs and CSVs there too (`lightcycle-train` uses
`<run dir>/interpret`). It is a report, not part of training: a failure is logged as a warning and
never stops the run; other ranks, and runs stopped early, skip it.

It should cost about one validation pass (the `collect`) and a second or two of drawing: each figure
is drawn and encoded once for both TensorBoard and the PNG, image grids use a fixed layout, and a
view with more than `max_view_panels` pictures (the per-class views of a many-class set: k per
class) gets its table here and its figure on demand from `lightcycle-interpret` (bench/interpretation.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import (
    collect,
    inspection_views,
    make_figures,
    summary_lines,
    write_report,
)
from lightcycle.interpretation.figures import png_bytes
from lightcycle.loggers import logged_step

log = logging.getLogger("lightcycle")


class Interpretation(L.Callback):
    """Log interpretation figures when training ends.

    Args:
        top_k: how many top-loss images the grid shows (0 = off).
        output_dir: also write PNGs and CSVs here (None = loggers only).
        views: also fastai's course views (random_correct, random_incorrect, most_correct,
            most_incorrect, most_uncertain) for classification and multilabel (`interpret.views`;
            False = the confusion matrix, top losses and per-class scores only).
        view_size: images per view (per class or tag in the per-class views).
        seed: draws the random views (42: lightcycle-train's `seed`, which it passes on).
        max_view_panels: draw a view's figure only when it shows at most this many pictures; larger
            views get their table (`lightcycle-interpret` draws them).
    """

    def __init__(
        self, top_k: int = 9, output_dir: str | os.PathLike | None = None, views: bool = True, view_size: int = 4,
        seed: int = 42, max_view_panels: int = 16,
    ) -> None:
        if isinstance(top_k, bool) or int(top_k) != top_k or int(top_k) < 0:
            raise LightcycleError(f"interpret.top_k must be a whole number >= 0 (0 = off), got {top_k!r}")
        if not isinstance(views, bool):
            raise LightcycleError(f"interpret.views must be true or false, got {views!r}")
        if isinstance(view_size, bool) or not isinstance(view_size, int) or view_size < 1:
            raise LightcycleError(f"interpret.view_size must be a whole number >= 1, got {view_size!r}")
        if isinstance(max_view_panels, bool) or not isinstance(max_view_panels, int) or max_view_panels < 0:
            raise LightcycleError(f"interpret.max_view_panels must be a whole number >= 0, got {max_view_panels!r}")
        self.top_k = int(top_k)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.views, self.view_size, self.seed = views, view_size, int(seed)
        self.max_view_panels = int(max_view_panels)
        self.deferred: list[str] = []
        self.written: dict[str, Path] = {}
        self.figures: dict[str, Any] = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.top_k == 0 or trainer.interrupted or not trainer.is_global_zero:
            return
        try:
            self._run(trainer, pl_module)
        except Exception as exc:  # a report must never take the finished training down with it
            log.warning("interpretation skipped: %s: %s", type(exc).__name__, exc)

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "valid_samples"):
            raise LightcycleError("needs the Trainer to be fitted with a lightcycle DataModule")
        context = getattr(trainer.precision_plugin, "forward_context", None)  # autocast under mixed precision
        result = collect(pl_module, datamodule, context=context, keep_masks=self.top_k)

        views = inspection_views(result, self.view_size, self.seed) if self.views else None
        drawn = {name: v for name, v in (views or {}).items() if len(v.entries) <= self.max_view_panels}
        self.deferred = [name for name in views or {} if name not in drawn]
        self.figures = make_figures(result, self.top_k, drawn)
        pictures = {name: png_bytes(fig) for name, fig in self.figures.items()}
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "_get_file_writer"):  # a torch SummaryWriter: the encoded PNGs as they are
                add_pngs(experiment, pictures, logged_step(trainer))
            elif hasattr(experiment, "add_figure"):
                for name, fig in self.figures.items():
                    experiment.add_figure(f"interpret/{name}", fig, global_step=logged_step(trainer), close=False)
        if self.output_dir is not None:
            self.written = write_report(result, self.output_dir, self.top_k, figures=pictures, views=views)
        for line in summary_lines(result, limit=5):
            log.info("interpret: %s", line)
        if self.written:
            log.info("interpret: figures and tables in %s", self.output_dir)
        if self.deferred:
            log.info("interpret: %s have too many pictures to draw at the end of training (tables only); "
                     "lightcycle-interpret ckpt=<run dir>/checkpoints/last.ckpt draws them", ", ".join(self.deferred))

    def state_dict(self) -> dict[str, Any]:
        return {"top_k": self.top_k}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the report is made from the final weights when training ends."""


def add_pngs(writer: Any, pictures: dict[str, Any], step: int) -> None:
    """Encoded PNGs into a torch SummaryWriter as `interpret/<name>` images, without decoding them."""
    # deferred: tensorboard's protobuf modules load only when pictures are logged
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=f"interpret/{name}", image=Summary.Image(
        height=png.height, width=png.width, colorspace=3, encoded_image_string=bytes(png)))
        for name, png in pictures.items()]
    writer._get_file_writer().add_summary(Summary(value=values), step)
    writer.flush()
