"""Multi-label (Planet layout): CSV parsing, split, bad rows, metrics, tuned thresholds, a short fit."""

from __future__ import annotations

import logging

import pytest
import torch

from lightcycle.data import MultiLabelDataModule
from lightcycle.errors import LightcycleError
from lightcycle.metrics import AccuracyMulti, FBetaMulti, samples_fbeta, tune_thresholds
from lightcycle.module import VisionModule
from lightcycle.tasks import MultiLabelTask, task_from_config
from tests.helpers import make_planet, quick_trainer


def test_planet_layout_split_and_targets(tmp_path):
    dm = MultiLabelDataModule(make_planet(tmp_path / "planet"), size=32, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.classes == ["green", "red"]
    assert len(dm.train_samples) == 18 and len(dm.valid_samples) == 6
    assert {s.path.name for s in dm.valid_samples} == {f"train_{i}.jpg" for i in range(18, 24)}
    by_name = {s.path.name: s.target for s in dm.train_samples}
    assert by_name["train_0.jpg"] == (0.0, 0.0)  # no tags: a valid negative sample
    assert by_name["train_1.jpg"] == (1.0, 1.0)
    assert by_name["train_3.jpg"] == (0.0, 1.0)  # red only
    x, y = dm.val_dataloader().dataset[0]
    assert x.shape == (3, 32, 32) and y.dtype == torch.float32 and y.shape == (2,)


def test_delimiter_suffix_and_valid_pct(tmp_path):
    root = make_planet(tmp_path / "planet", delimiter=";")
    (root / "valid.txt").unlink()
    dm = MultiLabelDataModule(root, delimiter=";", suffix=".jpg", valid_pct=0.25, num_workers=0)
    dm.setup("fit")
    assert dm.classes == ["green", "red"]
    assert len(dm.valid_samples) == 6 and len(dm.train_samples) == 18


def test_missing_file_is_named_or_skipped(tmp_path, caplog):
    root = make_planet(tmp_path / "planet")
    (root / "train" / "train_5.jpg").unlink()
    with pytest.raises(LightcycleError, match=r"train_5.*file not found.*labels.csv line 7"):
        MultiLabelDataModule(root, num_workers=0).setup("fit")
    dm = MultiLabelDataModule(root, num_workers=0, on_bad="skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.train_samples) == 17
    assert "skipped 1 bad item" in caplog.text


def test_metrics_match_hand_computed_values():
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4], [0.3, 0.3, 0.3]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    acc = AccuracyMulti(0.5)
    acc.update(probs, target)
    assert float(acc.compute()) == pytest.approx(7 / 9)  # wrong: (0, 2) and (1, 2)
    # Per sample at 0.5: s0 tp=1 fp=1 fn=0; s1 tp=1 fp=0 fn=1; s2 nothing true, nothing predicted -> 1.
    f1 = FBetaMulti(1.0, 0.5)
    f1.update(probs, target)
    assert float(f1.compute()) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    f2 = FBetaMulti(2.0, 0.5)
    f2.update(probs, target)
    s0 = 5 * 1 / (5 * 1 + 4 * 0 + 1)  # (1+b2) tp / ((1+b2) tp + b2 fn + fp)
    s1 = 5 * 1 / (5 * 1 + 4 * 1 + 0)
    assert float(f2.compute()) == pytest.approx((s0 + s1 + 1) / 3)
    assert samples_fbeta(torch.zeros(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool), 2.0).item() == 0


def test_threshold_tuning_and_decode():
    # Class 0 is separable at 0.3 (positives 0.35/0.4, negatives 0.1/0.2); class 1 at 0.5 already.
    probs = torch.tensor([[0.35, 0.9], [0.4, 0.1], [0.1, 0.8], [0.2, 0.2]])
    target = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    t = tune_thresholds(probs, target, beta=1.0)
    assert 0.2 <= float(t[0]) < 0.35
    assert float(t[1]) == pytest.approx(0.5)
    task = MultiLabelTask(["a", "b"])
    assert task.decode(probs)[:, 0].tolist() == [False, False, False, False]
    metrics = task.metrics()
    metrics.update(probs, target)
    logs = task.on_validation_epoch_end(metrics)
    assert task.thresholds is not None and logs["val_fbeta_tuned"] == pytest.approx(1.0)
    assert task.decode(probs).tolist() == [[True, True], [True, False], [False, True], [False, False]]
    again = task_from_config(task.to_config())
    assert again.thresholds == task.thresholds


def test_short_fit_reports_metrics_and_keeps_thresholds(tmp_path):
    dm = MultiLabelDataModule(make_planet(tmp_path / "planet"), size=32, batch_size=6, num_workers=0)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="resnet18", pretrained=False, lr=3e-3)
    trainer = quick_trainer(max_epochs=2)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert set(metrics) == {"val_loss", "val_accuracy_multi", "val_fbeta", "val_f1"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("val_accuracy_multi", "val_fbeta", "val_f1"))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
    thresholds = raw["hyper_parameters"]["task"]["thresholds"]
    assert thresholds is not None and len(thresholds) == 2
    assert VisionModule.load(tmp_path / "m.ckpt").task.thresholds == thresholds


@pytest.mark.parametrize("task", ["multilabel", "segmentation", "points"])
def test_demo_configs_compose_and_build(task, tmp_path, monkeypatch):
    """`data=demo_<task>` and `experiment=demo_<task>` compose and build the right DataModule."""
    from hydra import compose, initialize_config_dir

    from lightcycle.cli.common import build, config_dir

    monkeypatch.setenv("LIGHTCYCLE_CACHE", str(tmp_path))
    expected = {"multilabel": "MultiLabelDataModule", "segmentation": "SegmentationDataModule", "points": "PointsDataModule"}
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for override in (f"data=demo_{task}", f"experiment=demo_{task}"):
            cfg = compose(config_name="train", overrides=[override])
            assert cfg.data.demo == task and cfg.data.size == 64
            dm = build(cfg.data)
            assert type(dm).__name__ == expected[task] and dm.demo == task
