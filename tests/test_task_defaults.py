"""Every task's defaults: the data configs, the DataModules and the tasks agree, and `batch_size=auto`."""

from __future__ import annotations

import inspect
import logging

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lightcycle.data import (CsvDataModule, FolderDataModule, ImageDataModule, MultiLabelDataModule, PointsDataModule,
                             SegmentationDataModule)
from lightcycle.data.batching import AUTO_BATCH_SIZES, MIN_STEPS_PER_EPOCH, auto_batch_size, parse_batch_size
from lightcycle.errors import LightcycleError
from lightcycle.run import config_dir
from lightcycle.tasks import PointsTask, SegmentationTask

DATA_CONFIGS = {
    "folder": FolderDataModule, "csv": CsvDataModule, "multilabel": MultiLabelDataModule,
    "segmentation": SegmentationDataModule, "points": PointsDataModule,
}
# Keys that name the user's data or come from elsewhere in the config, not defaults of the task.
# device_transforms: lightcycle-train normalises on the device (its Trainer moves the batches); a
# DataModule used in a loop of one's own hands over normalised floats unless asked
NOT_DEFAULTS = {"root", "backbone", "cache_dir", "seed", "_target_", "device_transforms"}


def composed(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg.data, resolve=False)


def python_defaults(cls: type) -> dict:
    """Constructor defaults of a DataModule class and of every base class it passes **kwargs to."""
    defaults: dict = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, ImageDataModule):
            for name, p in inspect.signature(klass.__init__).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    defaults[name] = p.default
    return defaults


@pytest.mark.parametrize("name", sorted(DATA_CONFIGS))
def test_data_config_defaults_are_the_datamodule_defaults(name):
    """`lightcycle-train data=<task>` and `<Task>DataModule(root=...)` in Python train with the same settings."""
    config = composed([f"data={name}"])
    python = python_defaults(DATA_CONFIGS[name])
    for key, value in config.items():
        if key in NOT_DEFAULTS:
            continue
        assert key in python, f"conf/data/{name}.yaml sets {key}, which {DATA_CONFIGS[name].__name__} does not take"
        assert python[key] == value, f"{name}: {key} is {value!r} in the config but {python[key]!r} in Python"


def test_task_defaults_match_their_datamodules():
    """A task built directly (from Python or an old checkpoint) has the defaults its DataModule passes."""
    points, segmentation = python_defaults(PointsDataModule), python_defaults(SegmentationDataModule)
    assert inspect.signature(PointsTask).parameters["head"].default == points["head"] == "heatmap"
    assert inspect.signature(SegmentationTask).parameters["loss"].default == segmentation["loss"]


@pytest.mark.parametrize("task", ["classification", "multilabel", "segmentation", "points"])
def test_demo_configs_carry_no_tuning(task):
    """A demo config only points at the demo data: what it trains with is what `data=<task>` gives."""
    own = {"classification": "folder"}.get(task, task)
    demo, plain = composed([f"data=demo_{task}"]), composed([f"data={own}"])
    differences = {k for k in set(demo) | set(plain) if demo.get(k) != plain.get(k)}
    allowed = {"demo", "size"} | ({"void_code"} if task == "segmentation" else set())  # which data, at which size
    assert differences <= allowed, f"demo_{task} differs from data={own} in {sorted(differences - allowed)}"


# --- data.batch_size=auto --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_train", "expected"),
    [(10_000, 64), (64 * MIN_STEPS_PER_EPOCH, 64), (64 * MIN_STEPS_PER_EPOCH - 1, 32), (640, 16), (160, 8), (3, 8)],
)
def test_auto_batch_size(n_train, expected):
    assert auto_batch_size(n_train) == expected
    chosen = auto_batch_size(n_train)
    bigger = [b for b in AUTO_BATCH_SIZES if b > chosen]
    assert all(n_train // b < MIN_STEPS_PER_EPOCH for b in bigger)  # the largest that gives enough steps


@pytest.mark.parametrize("value", [0, -4, 1.5, True, "sixteen", None, ""])
def test_batch_size_setting_errors_name_the_setting(value):
    with pytest.raises(LightcycleError, match=r"data\.batch_size must be a whole number >= 1 or auto"):
        parse_batch_size(value)


def test_auto_batch_size_is_chosen_at_setup_and_logged(image_folder, caplog):
    dm = FolderDataModule(root=image_folder, size=32, num_workers=0)
    with pytest.raises(LightcycleError, match="batch_size=auto.*call setup"):
        _ = dm.batch_size
    with caplog.at_level(logging.INFO, logger="lightcycle"):
        dm.setup("fit")
    n = len(dm.train_samples)
    assert dm.batch_size == auto_batch_size(n)
    assert f"data.batch_size=auto -> {dm.batch_size} for {n} training images" in caplog.text
    assert len(dm.train_dataloader()) == n // dm.batch_size  # full batches only (a ragged last one is dropped)
    dm.batch_size = 4  # a recipe stage or progressive resizing sets a number: used as given
    assert dm.batch_size == 4 and dm.state_dict()["batch_size"] == 4
    dm.batch_size = "auto"
    assert dm.batch_size == auto_batch_size(n)
    assert FolderDataModule(root=image_folder, size=32, batch_size=4).batch_size == 4


def test_resume_keeps_the_batch_size_the_run_chose(image_folder):
    dm = FolderDataModule(root=image_folder, size=32, num_workers=0)
    dm.load_state_dict({"size": 32, "batch_size": 2})
    dm.setup("fit")
    assert dm.batch_size == 2


# --- model.lr=null: the task's default learning rate -----------------------------------------------
def test_unset_lr_is_the_tasks_measured_default():
    from lightcycle.module import VisionModule
    from lightcycle.tasks import ClassificationTask

    heatmap, pooled = PointsTask(num_points=1), PointsTask(num_points=1, head="pooled")
    assert (heatmap.default_lr, pooled.default_lr, ClassificationTask(["a", "b"]).default_lr) == (1e-2, 3e-3, 3e-3)
    model = VisionModule(heatmap, backbone="test_resnet", pretrained=False)
    assert model.hparams.lr == 1e-2  # what the checkpoint records is the rate it trained with
    assert VisionModule(pooled, backbone="test_resnet", pretrained=False, lr=1e-3).hparams.lr == 1e-3


def test_docs_say_which_data_the_measured_defaults_come_from():
    """The tasks page's table of measured defaults names the demo cuts bench/task_defaults.py measured on
    (not the full demo sets a `data=demo_<task>` run trains on), so a user knows what to expect."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bench = (root / "bench" / "task_defaults.py").read_text()
    cuts = re.findall(r'(?<!quick_)sets=\{"demo": BenchSet\("demo \((\d+)/(\d+)\)"', bench)
    assert len(cuts) == 4
    from tests import documented

    section = documented.section("tasks.md", "Defaults, measured")
    for n_train, n_valid in cuts:
        assert f"{n_train}/{n_valid}" in section, (n_train, n_valid)
    assert "data=demo_<task>" in section and "not from the full demo" in " ".join(section.split())
