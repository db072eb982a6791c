"""The Task interface: everything that differs between classification, tags, masks and points.

`VisionModule`, the callbacks, `Predictor`, the interpretation report and the exporter stay
task-agnostic by asking the task; none of them branches on the task's type. So adding a task is one
file in this package (a `Task` subclass decorated with `@register_task`), its DataModule (whose
`make_task` builds it) and a data config.

What a task answers for, grouped as the methods below:
- training: head, loss (hard or soft targets), per-sample loss, metrics, activation, decoding, what
  an epoch learned; whether its targets can be mixed (MixUp/CutMix) and smoothed;
- TTA: whether outputs move with the image (`outputs_move_with_image`) and how to undo a flip;
- prediction: whether a framing can be mapped back (`check_framing`), the answer for one image in
  its original frame (through the eval input's `Window`), and the CSV row / JSON record (and
  side files, such as mask PNGs) that `lightcycle-predict` writes for it;
- interpretation: what the pass over the validation set keeps, the task's tables, figures, top-loss
  columns and pictures, the course's inspection views, and its summary lines; which output a class
  activation map explains;
- a look at the data: how one training sample's target is drawn on its picture (`show_sample`);
- export: how the exported logits are activated, and the extra keys a runtime needs;
- identity: `to_config` (plain data, so checkpoints load with `weights_only=True`) and
  `check_compatible` (does a DataModule's task describe the same outputs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, ClassVar, TypeVar

import torch
from torch import nn
from torchmetrics import MetricCollection

from lightcycle.errors import LightcycleError
from lightcycle.interpretation import figures
from lightcycle.interpretation.collect import Collector, KeepOutputs

if TYPE_CHECKING:  # the layers above tasks, imported for type hints only
    from lightcycle.data.framing import Framing, Window
    from lightcycle.interpretation.analyses import InspectionView
    from lightcycle.interpretation.collect import InterpretationResult
    from lightcycle.predict.writers import SideFiles

Table = tuple[list[dict[str, Any]], "list[str] | None"]  # rows, column order (None: the first row's keys)


class Task:
    """The interface every task implements; the defaults suit an image-level task."""

    name: ClassVar[str]
    monitor: ClassVar[str] = "val_loss"  # what "best" checkpoints optimise
    monitor_mode: ClassVar[str] = "min"
    # What the head consumes: "pooled" = one feature vector per image (classifier-style heads);
    # "features" = the encoder's feature maps, stride 2 to 32 (timm features_only), for dense heads.
    backbone_kind: ClassVar[str] = "pooled"
    # Peak learning rate when model.lr is not set: the task's measured best (docs/benchmarks.md, task defaults).
    default_lr: ClassVar[float] = 3e-3
    # Whether outputs are tied to positions in the picture (masks, points): then TTA and prediction
    # use invertible flip/scale views and map each view's output back with `unflip`, and a centre
    # crop cannot be undone; image-level outputs (classes, tags) use training-transform views.
    outputs_move_with_image: ClassVar[bool] = False
    top_losses_title: ClassVar[str] = "Top losses"
    # The most outputs (classes, tags, codes, points) a model of this task may have: far above real
    # models, low enough that the [C, C] confusion matrices of interpretation stay below 1 GB.
    max_outputs: ClassVar[int] = 10_000

    @classmethod
    def check_output_count(cls, count: int, what: str = "classes") -> None:
        """Refuse more outputs than `max_outputs` (a label file or record that would allocate without bound)."""
        if count > cls.max_outputs:
            raise LightcycleError(f"{cls.name}: {count:,} {what}, more than the {cls.max_outputs:,} a model may have")

    # --- training ----------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module, num_features: Any, dropout: float) -> nn.Module:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss. Tasks that allow mixing (`mix_settings`) also take soft targets, as
        MixUp/CutMix make them: [N, C] probabilities, already label-smoothed by the mixer."""
        raise NotImplementedError

    def validation_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss validation reports (`val_loss`): the training loss without training-only
        regularisers such as label smoothing (as timm validates), so `val_loss`, `tta_loss` and
        `ensemble_loss` measure the same thing whatever the training recipe."""
        return self.loss(output, target)

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of every sample, shape [N], from raw outputs (what "top losses" ranks and shows),
        measured as `validation_loss` measures it (no label smoothing).

        The generic version calls `validation_loss` once per sample; tasks override it with `reduction="none"`.
        """
        return torch.stack([self.validation_loss(output[i : i + 1], target[i : i + 1]) for i in range(len(output))])

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def activation(self, output: torch.Tensor) -> torch.Tensor:
        """Map raw model outputs to what users consume (probabilities, coordinates)."""
        raise NotImplementedError

    def activated_loss(self, activated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss computed from activated outputs (probabilities, coordinates).

        TTA and snapshot ensembles merge activated outputs, so their loss must start from there.
        """
        raise NotImplementedError

    def decode(self, activated: torch.Tensor) -> torch.Tensor:
        """Turn activated outputs into final answers (class index, tag decisions, mask, points)."""
        return activated

    def set_label_smoothing(self, value: float) -> None:
        """`model.label_smoothing`: only single-label classification smooths its targets."""
        if float(value) != 0.0:
            raise LightcycleError(
                f"model.label_smoothing={value}: the {self.name} task has no label smoothing "
                "(it applies to single-label classification); set model.label_smoothing=0"
            )

    def mix_settings(self) -> dict[str, Any]:
        """What timm's `Mixup` needs to mix this task's targets (`num_classes`, `label_smoothing`,
        `multi_label`); tasks whose targets are not image-level labels refuse."""
        raise LightcycleError(
            f"mixup/cutmix: the {self.name} task's targets cannot be mixed: MixUp and CutMix blend image-level "
            "labels (classification, multilabel), not masks or points; set mixup.alpha=0 cutmix.alpha=0"
        )

    def on_validation_epoch_end(self, metrics: MetricCollection) -> dict[str, float]:
        """Read what a validation epoch learned beyond scalar metrics (per-class IoU, tuned thresholds).

        Called with the module's (already updated) validation metrics; may update the task's own
        state, which the module then writes into the checkpoint's hyperparameters. Returns extra
        scalars for the loggers only (TensorBoard), not for metrics.json.
        """
        return {}

    # --- TTA -------------------------------------------------------------------------------------
    def unflip(self, output: torch.Tensor) -> torch.Tensor:
        """Map the raw output for a horizontally flipped input back to the unflipped frame.

        Only called when `outputs_move_with_image`; image-level outputs do not move with a flip.
        """
        return output

    # --- identity --------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        """What each output channel means (class names, tags, codes, point names), for exports."""
        return list(getattr(self, "class_names", []) or [])

    def output_signature(self) -> dict[str, Any]:
        """What a checkpoint and a DataModule must agree on, by readable name (e.g. `class names`)."""
        return {"class names": self.output_names}

    def check_compatible(self, data_task: "Task", where: str) -> None:
        """Raise when `data_task` (a DataModule's) describes other outputs than this (a checkpoint's)."""
        if self.name != data_task.name:
            raise LightcycleError(f"{where}: the data is for {data_task.name} but the checkpoint is {self.name}")
        theirs = data_task.output_signature()
        for key, ours in self.output_signature().items():
            if ours != theirs.get(key):
                raise LightcycleError(
                    f"{where}: the data has {key} {theirs.get(key)} but the checkpoint was trained on {ours}"
                )

    # --- prediction ------------------------------------------------------------------------------
    def check_framing(self, framing: "Framing", where: str) -> None:
        """Raise when predictions made through `framing`'s eval input cannot be given for the original picture."""

    def prediction(
        self, activated: torch.Tensor, original_size: tuple[int, int], input_size: int, window: "Window | None" = None
    ) -> tuple[Any, Any]:
        """(label, index) for one image's activated output, in the frame of the original picture.

        `original_size` is the picture's (width, height), `input_size` the square side the model saw,
        `window` the part of the picture that input showed (data/framing.py; None = all of it, squished).
        """
        decoded = self.decode(activated[None])[0]
        return decoded, decoded

    def prediction_record(self, pred: Any, name: str, files: "SideFiles") -> tuple[dict[str, Any], dict[str, Any]]:
        """(flat CSV row, structured JSON record) for one `Prediction` of the image called `name`.

        `files` writes side files beside the output (segmentation's mask PNGs) and names them relatively.
        """
        raise LightcycleError(f"no output format for task {self.name!r}")

    def served_record(self, pred: Any, name: str, files: "SideFiles") -> dict[str, Any]:
        """The JSON answer `lightcycle-serve` gives for one image: `lightcycle-predict`'s record (with
        `files` putting side files such as masks inline), plus what a page needs to draw it."""
        return self.prediction_record(pred, name, files)[1]

    # --- interpretation --------------------------------------------------------------------------
    def interpretation_collector(self, keep: int) -> Collector:
        """What the pass over the validation set keeps per batch (default: every output and target).

        `keep`: how many top-loss images the report will show (a collector may keep only those).
        """
        return KeepOutputs()

    def top_loss_rows(self, result: "InterpretationResult", indices: list[int]) -> list[dict[str, Any]]:
        """The `top_losses.csv` columns after `file` for each image in `indices` (worst first)."""
        return [{"loss": float(result.losses[i])} for i in indices]

    def interpretation_tables(self, result: "InterpretationResult") -> dict[str, Table]:
        """The task's tables besides `top_losses`: name -> (rows, columns), written as `<name>.csv`."""
        return {}

    def interpretation_figures(self, result: "InterpretationResult") -> dict[str, Any]:
        """The task's figures besides `top_losses`: name -> matplotlib Figure."""
        return {}

    def inspection_views(self, result: "InterpretationResult", k: int, seed: int) -> dict[str, "InspectionView"]:
        """fastai's course views (`analyses.VIEW_NAMES`: random correct / incorrect, most correct, most
        incorrect and most uncertain of each class), `k` images each (per class or tag), the random
        ones drawn with `seed`. Empty for tasks without a right-or-wrong answer per image."""
        return {}

    def plot_top_losses(self, result: "InterpretationResult", indices: list[int]) -> Any:
        """The worst images in a grid, each drawn and titled by `draw_top_loss`."""
        rows = dict(zip(indices, self.top_loss_rows(result, indices)))
        return figures.image_grid(result, indices, self.top_losses_title, lambda ax, i: self.draw_top_loss(ax, result, i, rows[i]))

    def draw_top_loss(self, ax: Any, result: "InterpretationResult", index: int, row: dict[str, Any]) -> str:
        """Draw on top of image `index` (already shown in `ax`) and return its title."""
        return f"{figures.short(result.files[index])}\nloss {row['loss']:.3f}"

    def summary_lines(self, result: "InterpretationResult", limit: int) -> list[str]:
        """A few human lines about what the model gets wrong (printed before the worst files)."""
        return []

    def heatmap_score(self, output: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """The score [N] a class activation map explains: output `index` of each image, or the
        predicted one. Only image-level tasks have one; outputs tied to positions refuse."""
        raise LightcycleError(
            f"heatmaps: the {self.name} task's outputs are already positions in the picture; class activation "
            "maps explain image-level outputs (classification, multilabel)"
        )

    def heatmap_label(self, output: torch.Tensor, index: int | None = None) -> str:
        """The name of the output a heatmap of raw `output` [C] explains (for figure titles)."""
        names = self.output_names
        i = int(output.argmax()) if index is None else int(index)
        return names[i] if i < len(names) else str(i)

    # --- cleaning the data (lightcycle.clean) ------------------------------------------------------------
    def cleaning_values(self, activated: torch.Tensor, target: torch.Tensor, window: "Callable[[], Window]", size: int) -> tuple[Any, Any]:
        """(label, prediction) of one image as the data cleaner lists and edits them, as plain JSON data,
        from its activated output and its target as the DataModule encodes it. `window()` reads the part
        of the original picture its `size` x `size` input showed (tasks that answer in original pixels).
        The default (segmentation, whose truth is its mask file) gives neither."""
        return None, None

    # --- a look at the data ------------------------------------------------------------------------
    def show_sample(self, ax: Any, image: Any, target: torch.Tensor) -> str:
        """Draw one training sample (`image`: HxWx3 uint8 as the model sees it, `target` as the
        DataModule encodes it) into `ax` and return its title; image-level tasks write the label."""
        ax.imshow(image)
        return self.target_text(target)

    def target_text(self, target: torch.Tensor) -> str:
        """A target as words (the class name, the tags), for titles."""
        return str(target.tolist())

    # --- export ----------------------------------------------------------------------------------
    def export_activation(self) -> dict[str, Any]:
        """How a runtime turns the exported logits into what `activation` returns, as plain data."""
        raise LightcycleError(f"export: no activation description for task {self.name!r}")

    def export_metadata(self) -> dict[str, Any]:
        """Extra keys for the exported model's JSON (thresholds, void index, how to read points)."""
        return {}


def output_score(output: torch.Tensor, index: int | None = None) -> torch.Tensor:
    """Output `index` of every row of raw `output` [N, C] (default: each row's largest): the score a
    class activation map of an image-level task explains."""
    chosen = output.argmax(-1) if index is None else torch.full((len(output),), int(index), device=output.device)
    return output.gather(-1, chosen[:, None])[:, 0]


def csv_number(value: float) -> str:
    """A probability or coordinate as CSV text: 6 significant digits, enough to rank and compare."""
    return f"{value:.6g}"


T = TypeVar("T", bound=type[Task])
TASKS: dict[str, type[Task]] = {}


def register_task(cls: T) -> T:
    """Make `cls` loadable from checkpoints by its `name` (`task_from_config`)."""
    TASKS[cls.name] = cls
    return cls


def task_from_config(config: dict[str, Any] | Task) -> Task:
    """Rebuild a task from the plain data stored in a checkpoint.

    A task not registered yet is looked up in `lightcycle.tasks.<name>` (a task file is named after
    its task), so a new task needs no registry edits elsewhere.
    """
    if isinstance(config, Task):
        return config
    config = dict(config)
    name = config.pop("name", None)
    if name not in TASKS and isinstance(name, str) and name.isidentifier():
        try:
            importlib.import_module(f"lightcycle.tasks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lightcycle.tasks.{name}":  # the task file exists but needs something missing
                raise
    if name not in TASKS:
        raise LightcycleError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    try:
        return TASKS[name](**config)
    except TypeError as exc:  # a setting the task does not take (a damaged or crafted record)
        raise LightcycleError(f"task {name}: {exc}") from None

