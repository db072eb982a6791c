"""The layer-group LR monitor and the logger: one lr and one momentum per layer group, at
trainer.log_every_n_steps and every epoch's first and last step, written as one TensorBoard event."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from lightcycle.callbacks import LayerGroupLRMonitor
from lightcycle.data import FolderDataModule
from lightcycle.loggers import TensorBoardLogger
from lightcycle.module import VisionModule
from tests.helpers import quick_trainer


def test_one_lr_and_momentum_per_layer_group_at_the_interval_and_epoch_edges(image_folder, tmp_path):
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2, lr_mult=10)
    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    trainer = quick_trainer(max_epochs=3, logger=logger, log_every_n_steps=5, callbacks=[LayerGroupLRMonitor()],
                            limit_val_batches=0)
    trainer.fit(model, datamodule=dm)  # 36 images / batch 8: 4 steps an epoch, 12 in all
    logger.experiment.flush()
    [events] = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    n = len(model.layer_groups())
    tags = {t for t in acc.Tags()["scalars"] if t.startswith("lr-")}
    assert tags == {f"lr-AdamW/group{i}" for i in range(n)} | {f"lr-AdamW/group{i}-momentum" for i in range(n)}
    schedule = model.fit_plan.build_schedule()
    peaks = model.group_lrs()
    for i in range(n):
        points = {e.step: e.value for e in acc.Scalars(f"lr-AdamW/group{i}")}
        assert sorted(points) == [0, 3, 4, 5, 7, 8, 10, 11]  # every 5 steps, and each epoch's first and last
        for step, lr in points.items():
            assert lr == pytest.approx(peaks[i] * schedule.lr(step), rel=1e-6)
        moms = {e.step: e.value for e in acc.Scalars(f"lr-AdamW/group{i}-momentum")}
        assert moms.keys() == points.keys()
        assert all(m == pytest.approx(schedule.momentum(s), rel=1e-6) for s, m in moms.items())
    # one event per point: the 2n values of a step travel together
    sizes = [len(e.summary.value) for e in EventFileLoader(str(events)).Load() if e.HasField("summary")]
    assert sizes.count(2 * n) == 8


def test_the_logger_keeps_the_step_offset_and_lightnings_grouped_scalars(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="", step_offset=100)
    logger.log_metrics({"a": 1.0, "b": 2}, step=3)
    logger.log_metrics({"grouped": {"x": 1.0}}, step=4)  # dict values: Lightning's add_scalars
    with pytest.raises(ValueError, match="not supported"):
        logger.log_metrics({"bad": "text"}, step=5)
    logger.finalize("success")
    events = sorted((tmp_path / "tb").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0]), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("a")] == [(103, 1.0)]
    assert [(e.step, e.value) for e in acc.Scalars("b")] == [(103, 2.0)]
    assert len(events) == 2  # add_scalars writes the group into a folder of its own
