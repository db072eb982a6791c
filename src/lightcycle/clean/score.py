"""Score every training and validation image with a checkpoint: the table the data cleaner shows.

    from lightcycle import clean
    scores = clean.score("runs/pets/checkpoints/last.ckpt")      # data settings from the run's record
    scores.worst(split="valid", label="cat", limit=10)          # worst loss first
    scores.pairs[:5]                                            # identical files, then the most similar

One pass over both splits, in dataset order, training images through the evaluation transform (no
augmentation, nothing shuffled): per image the task's loss (`Task.per_sample_loss`, as the top-loss
report ranks), its label and decoded prediction (`clean/per_task/`) and the backbone's pooled
features (the head's input, caught on its way in: the same forward pass), from which
`lightcycle.clean.similar` finds the most similar pairs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from lightcycle.clean.per_task import task_cleaning
from lightcycle.clean.similar import most_similar
from lightcycle.clean.table import FileState, ScoredImage, Scores, SimilarPair
from lightcycle.data.base import batch_transform_of
from lightcycle.data.checks import image_size
from lightcycle.errors import LightcycleError
from lightcycle.module import VisionModule
from lightcycle.predict.predictor import resolve_device
from lightcycle.run.record import (
    checkpoint_datamodule,
    constructor_settings,
    data_settings,
    run_dir_of,
)

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"


def scores_path(run_dir: str | os.PathLike) -> Path:
    """Where a run's scores are kept: `<run dir>/cleaning/scores.json`."""
    return Path(run_dir) / "cleaning" / SCORES_FILE


def data_overrides(overrides: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """Data settings from a mapping (`{"root": ...}`) or command-line overrides (`data.root=...`,
    `+data._target_=...`), read with Hydra's override grammar."""
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]

    settings: dict[str, Any] = {}
    for text in overrides:
        try:
            (override,) = OverridesParser.create().parse_overrides([str(text)])
        except Exception as exc:
            raise LightcycleError(f"override {text!r}: cannot read it ({str(exc).splitlines()[0]})") from None
        key = override.key_or_group
        if not key.startswith("data.") or "." in key[len("data."):]:
            raise LightcycleError(f"override {text!r}: scoring takes data settings only (data.root=..., data.size=...)")
        settings[key[len("data."):]] = override.value()
    return settings


def score(
    ckpt: str | os.PathLike,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    *,
    pairs: int = 200,
    batch_size: int | None = None,
    datamodule: Any = None,
    run_dir: str | os.PathLike | None = None,
    device: str = "auto",
) -> Scores:
    """Score both splits of the data `ckpt` was trained on; the table, worst first via `Scores.worst`.

    The data settings are the run's (`<run dir>/.hydra/config.yaml`, read as data as
    lightcycle-interpret reads them), changed by `overrides`; or pass a `datamodule` built in Python.
    `pairs`: how many similar pairs to keep. `batch_size`: images per forward pass (default: the
    data's). `device`: auto (the GPU when there is one), cpu or cuda[:N].
    """

    ckpt = Path(ckpt).expanduser()
    if not ckpt.is_file():
        raise LightcycleError(f"checkpoint {ckpt} not found")
    torch_device = resolve_device(device)
    model = VisionModule.load(ckpt, map_location=torch_device)
    if datamodule is None:
        settings = data_overrides(overrides)
        datamodule = checkpoint_datamodule(ckpt, settings, run_dir)
        cls, recorded = data_settings(run_dir if run_dir is not None else run_dir_of(ckpt),
                                      {k: v for k, v in settings.items() if v is not None})
        data: dict[str, Any] | None = {"_target_": f"lightcycle.data.{cls.__name__}", **recorded}
    else:
        data = None
    if batch_size is not None:
        datamodule.batch_size = int(batch_size)
    datamodule.prepare_data()
    datamodule.setup("validate")
    if datamodule.load_sample() is not None:
        raise LightcycleError(f"{type(datamodule).__name__}: its pictures come from arrays, not files, "
                              "so there are no files to clean")
    task = model.task
    task.check_compatible(datamodule.make_task(), str(ckpt))
    root = Path(os.path.abspath(datamodule.resolve_root()))
    data = {**(data if data is not None else settings_of(datamodule)), "root": str(root)}
    if "demo" in data:
        data["demo"] = None  # the root above is where the demo's files are

    images: list[ScoredImage] = []
    features: list[torch.Tensor] = []
    files: list[Path] = []
    for split, samples in (("train", datamodule.train_samples), ("valid", datamodule.valid_samples)):
        log.info("scoring %d %s images with %s (%s)", len(samples), split, ckpt, torch_device)
        states = [FileState.of(s.path) for s in samples]  # as they are before the pass reads them
        losses, values, pooled = score_samples(model, datamodule, samples, torch_device)
        for sample, state, loss, (label, prediction) in zip(samples, states, losses.tolist(), values):
            images.append(ScoredImage(
                key=len(images), split=split, path=relative(sample.path, root), label=label, prediction=prediction,
                loss=float(loss), state=state,
                companions=tuple(relative(p, root) for p in datamodule.companion_files(sample)),
            ))
            files.append(Path(sample.path))
        features.append(pooled)
    found = most_similar(torch.cat(features), files, int(pairs))
    image_level = not task.outputs_move_with_image  # labels that can be compared: class names, tag lists
    similar = [SimilarPair(a, b, round(sim, 6), images[a].split != images[b].split,
                           image_level and images[a].label != images[b].label) for a, b, sim in found]
    return Scores(task=task.name, classes=list(getattr(task, "class_names", [])),
                  root=root, data=data, images=images, pairs=similar)


def score_samples(model: Any, datamodule: Any, samples: Sequence[Any], device: torch.device) -> tuple[torch.Tensor, list[tuple[Any, Any]], torch.Tensor]:
    """(losses [n], (label, prediction) per sample, pooled features [n, d]) of `samples` in order, each
    framed by the evaluation transform; one forward pass per batch."""

    task = model.task
    cleaning = task_cleaning(task)
    # every sample of this process, in order (scoring is not sharded: one process scores the whole set)
    loader = datamodule.eval_loader(dataset=datamodule.dataset(samples, train=False), sharded=False)
    prepare = batch_transform_of(datamodule)  # uint8 pixels normalised on the device
    losses: list[torch.Tensor] = []
    features: list[torch.Tensor] = []
    values: list[tuple[Any, Any]] = []
    was_training = model.training
    model.eval()
    try:
        with head_inputs(model) as caught, torch.inference_mode():
            for x, y in loader:
                x, y = prepare(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
                raw = model(x).float()
                losses.append(task.per_sample_loss(raw, y).float().cpu())
                features.append(pool(caught.pop()).float().cpu())
                activated, y = task.activation(raw).cpu(), y.cpu()
                for i in range(len(x)):
                    path = samples[len(values)].path
                    window = lambda path=path: datamodule.framing.window(*image_size(path))  # noqa: E731
                    values.append(cleaning.values(activated[i], y[i], window, int(x.shape[-1])))
    finally:
        model.train(was_training)
    if len(values) != len(samples):
        raise LightcycleError(f"scoring: the loader gave {len(values)} images for {len(samples)} files")
    if not samples:
        return torch.empty(0), [], torch.empty(0, 0)
    return torch.cat(losses), values, torch.cat(features)


@contextlib.contextmanager
def head_inputs(model: Any) -> Iterator[list[Any]]:
    """What the model's head receives on each forward (pooled features, or the encoder's feature
    maps for dense heads), appended to the yielded list."""
    caught: list[Any] = []
    handle = model.head.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
    try:
        yield caught
    finally:
        handle.remove()


def pool(head_input: Any) -> torch.Tensor:
    """One feature vector per image: the pooled features as they are, or the average of the deepest feature map."""
    x = head_input[-1] if isinstance(head_input, (list, tuple)) else head_input
    return x.flatten(2).mean(-1) if x.ndim > 2 else x


def relative(path: str | os.PathLike, root: Path) -> str:
    """`path` relative to `root`, POSIX (with `..` for a file outside it, data.allow_outside_root)."""
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def settings_of(datamodule: Any) -> dict[str, Any]:
    """A DataModule's settings, as a run's record would hold them: its class and each constructor
    setting it keeps under the same name as plain data (others keep their defaults)."""

    cls = type(datamodule)
    data: dict[str, Any] = {"_target_": f"lightcycle.data.{cls.__name__}"}
    for name in sorted(constructor_settings(cls)):
        value = getattr(datamodule, name, None)
        if isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        if value is None or isinstance(value, (str, int, float, bool, list)):
            data[name] = value
        elif isinstance(value, os.PathLike):
            data[name] = os.fspath(value)
    return data
