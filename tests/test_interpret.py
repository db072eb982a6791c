"""Interpretation: per-sample losses, confusion matrix and top losses, per-task reports, the callback and
`lightcycle-interpret` on a checkpoint written by `lightcycle-train`."""

from __future__ import annotations

import csv
import math
import re
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from lightcycle.cli.interpret import interpret
from lightcycle.errors import LightcycleError

from lightcycle.callbacks.interpretation import Interpretation
from lightcycle.data import FolderDataModule, MultiLabelDataModule, PointsDataModule, SegmentationDataModule
from lightcycle.interpretation import (
    InterpretationResult,
    collect,
    confusion_matrix,
    most_confused,
    top_loss_rows,
    write_report,
)
from lightcycle.metrics import MeanIoU, PointDistance
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask, MultiLabelTask, PointsTask, SegmentationTask
from tests.helpers import make_biwi, make_camvid, make_planet, quick_trainer

ENV = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path, min_size: tuple[int, int] = (200, 200)) -> None:
    assert path.is_file() and path.stat().st_size > 5000, path
    with Image.open(path) as img:
        assert img.width >= min_size[0] and img.height >= min_size[1]
        assert len(set(img.convert("L").getdata())) > 20  # drawn, not blank


# --- per-sample losses come from the task -----------------------------------------------------------
def test_per_sample_loss_agrees_with_the_task_loss():
    torch.manual_seed(0)
    cls = ClassificationTask(["a", "b", "c"], label_smoothing=0.1)
    out, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    assert cls.per_sample_loss(out, y).shape == (6,)
    # the loss validation reports (no label smoothing), not the smoothed training loss
    assert cls.per_sample_loss(out, y).mean() == pytest.approx(float(cls.validation_loss(out, y)), rel=1e-6)

    multi = MultiLabelTask(["a", "b", "c", "d"])
    out, y = torch.randn(5, 4), torch.randint(0, 2, (5, 4)).float()
    assert multi.per_sample_loss(out, y).mean() == pytest.approx(float(multi.loss(out, y)), rel=1e-6)

    points = PointsTask(2, y_range=(-1.1, 1.1), head="pooled")
    out, y = torch.randn(4, 4), torch.cat([torch.rand(4, 2, 2) * 2 - 1, torch.full((4, 1, 2), 32.0)], 1)
    assert points.per_sample_loss(out, y).mean() == pytest.approx(float(points.loss(out, y)), rel=1e-6)

    seg = SegmentationTask(["bg", "fg", "void"], void_index=2, loss="ce")
    out, y = torch.randn(3, 3, 8, 8), torch.randint(0, 3, (3, 8, 8))
    y[2] = 2  # an all-void image has nothing to score
    per = seg.per_sample_loss(out, y)
    for i in range(2):  # each image's loss is the task loss on that image alone
        assert per[i] == pytest.approx(float(seg.loss(out[i : i + 1], y[i : i + 1])), rel=1e-5)
    assert math.isnan(per[2])
    dice = SegmentationTask(["bg", "fg"], loss="ce_dice")
    out, y = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
    assert dice.per_sample_loss(out, y)[1] == pytest.approx(float(dice.loss(out[1:], y[1:])), rel=1e-6)


# --- classification: counts by hand -----------------------------------------------------------------------
def test_confusion_matrix_most_confused_and_top_losses_equal_hand_counts(tmp_path):
    names = ["cat", "dog", "fox"]
    #            actual, probabilities (cat, dog, fox)
    table = [
        (0, (0.7, 0.2, 0.1)),  # cat -> cat
        (0, (0.1, 0.8, 0.1)),  # cat -> dog
        (0, (0.3, 0.6, 0.1)),  # cat -> dog
        (1, (0.1, 0.85, 0.05)),  # dog -> dog
        (1, (0.05, 0.05, 0.9)),  # dog -> fox  (worst: p(dog) = 0.05)
        (2, (0.2, 0.1, 0.7)),  # fox -> fox
        (2, (0.6, 0.3, 0.1)),  # fox -> cat
        (2, (0.1, 0.2, 0.7)),  # fox -> fox
    ]
    targets = torch.tensor([a for a, _ in table])
    probs = torch.tensor([p for _, p in table])
    task = ClassificationTask(names)
    result = InterpretationResult(
        task=task,
        files=[Path(f"img{i}.jpg") for i in range(len(table))],
        losses=task.per_sample_loss(probs.log(), targets),
        outputs=probs,
        targets=targets,
    )
    # rows = actual, columns = predicted, counted by hand from the table above
    assert confusion_matrix(result).tolist() == [[1, 2, 0], [0, 1, 1], [1, 0, 2]]
    assert most_confused(result) == [("cat", "dog", 2), ("dog", "fox", 1), ("fox", "cat", 1)]
    rows = top_loss_rows(result, 3)
    assert [r["file"] for r in rows] == ["img4.jpg", "img1.jpg", "img6.jpg"]
    assert rows[0] == {"file": "img4.jpg", "actual": "dog", "predicted": "fox",
                       "loss": pytest.approx(-math.log(0.05)), "probability": pytest.approx(0.9)}

    written = write_report(result, tmp_path / "out", top_k=0)  # no images to show: tables + confusion matrix
    cm_rows = read_csv(written["confusion_matrix"])
    assert [[int(r[n]) for n in names] for r in cm_rows] == [[1, 2, 0], [0, 1, 1], [1, 0, 2]]
    assert read_csv(written["most_confused"])[0] == {"actual": "cat", "predicted": "dog", "count": "2"}
    top = read_csv(written["top_losses"])
    assert list(top[0]) == ["file", "actual", "predicted", "loss", "probability"]
    assert len(top) == len(table) and top[0]["file"] == "img4.jpg"  # every image, worst first
    assert_png(written["confusion_matrix_png"])


def fit_tiny(dm, steps: int = 2, **model_kwargs) -> VisionModule:
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2, **model_kwargs)
    quick_trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=0).fit(model, datamodule=dm)
    return model


def test_collect_keeps_dataset_order_and_the_figures_match_the_table(image_folder, tmp_path):
    dm = FolderDataModule(image_folder, size=32, batch_size=5, num_workers=0, backbone="test_resnet")
    model = fit_tiny(dm)
    result = collect(model, dm)
    assert result.files == [s.path for s in dm.valid_samples] and len(result) == 12
    # row i is valid sample i: recompute image 7 alone
    x, y = dm.val_dataloader().dataset[7]
    model.eval()
    with torch.no_grad():
        alone = model.task.per_sample_loss(model(dm.batch_transform(x[None])), y[None])
    assert float(result.losses[7]) == pytest.approx(float(alone), rel=1e-4)
    written = write_report(result, tmp_path / "report", top_k=9)
    top = read_csv(written["top_losses"])
    # the confusion matrix equals the (actual, predicted) pairs counted from the per-file table
    counts = Counter((r["actual"], r["predicted"]) for r in top)
    names = model.task.class_names
    cm = confusion_matrix(result)
    assert {(names[i], names[j]): int(cm[i, j]) for i in range(3) for j in range(3) if cm[i, j]} == dict(counts)
    assert_png(written["top_losses_png"], (600, 600))
    assert_png(written["confusion_matrix_png"])


# --- the other tasks ---------------------------------------------------------------------------------------
def test_multilabel_per_tag_scores_and_top_losses(tmp_path):
    dm = MultiLabelDataModule(make_planet(tmp_path / "planet"), size=32, batch_size=4, num_workers=0,
                              backbone="test_resnet")
    model = fit_tiny(dm)
    written = write_report(collect(model, dm), tmp_path / "report", top_k=4)
    per_class = read_csv(written["per_class"])
    top = read_csv(written["top_losses"])
    assert [r["class"] for r in per_class] == ["green", "red"] and len(top) == 6
    assert list(top[0]) == ["file", "actual", "predicted", "loss", "probability", "worst_tag"]
    for row in per_class:  # precision and recall recomputed from the per-file table
        tag = row["class"]
        tp = sum(tag in r["actual"].split() and tag in r["predicted"].split() for r in top)
        predicted = sum(tag in r["predicted"].split() for r in top)
        actual = sum(tag in r["actual"].split() for r in top)
        assert int(row["support"]) == actual and int(row["predicted"]) == predicted
        assert float(row["precision"]) == pytest.approx(tp / predicted if predicted else 0.0, abs=1e-5)
        assert float(row["recall"]) == pytest.approx(tp / actual if actual else 0.0, abs=1e-5)
    assert_png(written["per_class_png"])
    assert_png(written["top_losses_png"], (500, 500))


class BrightIsSquare(torch.nn.Module):
    """A stand-in segmentation model: bright pixels are `square`, the rest `background` (never void)."""

    def __init__(self, task: SegmentationTask) -> None:
        super().__init__()
        self.task = task
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.mean(1, keepdim=True) - 0.5
        return torch.cat([-bright, bright, torch.full_like(bright, -9.0)], 1) * self.scale


def test_segmentation_per_class_iou_and_worst_images(tmp_path):
    dm = SegmentationDataModule(make_camvid(tmp_path / "camvid"), size=32, batch_size=2, num_workers=0,
                                void_code="void", backbone="test_resnet")
    dm.setup("validate")
    model = BrightIsSquare(dm.make_task())
    result = collect(model, dm, keep_masks=2)
    assert sorted(result.extra["masks"]) == sorted(result.top_losses(2))  # only the worst masks are kept
    written = write_report(result, tmp_path / "report", top_k=2)
    iou = {r["class"]: r["iou"] for r in read_csv(written["per_class_iou"])}
    metric = MeanIoU(3, ignore_index=2)  # the training metric on the same predictions
    model.eval()
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            metric.update(model.task.activation(model(dm.batch_transform(x))), y)
    metric.compute()
    for k, name in enumerate(["background", "square"]):
        assert float(iou[name]) == pytest.approx(float(metric.per_class[k]), abs=1e-5)
    assert 0.5 < float(iou["square"]) < 1.0  # right but for the blurred edges: a real check, not 0 == 0
    assert iou["void"] == "nan"
    top = read_csv(written["top_losses"])
    assert list(top[0]) == ["file", "loss", "pixel_accuracy"] and len(top) == 3
    assert_png(written["per_class_iou_png"])
    assert_png(written["top_losses_png"], (600, 500))


def test_points_worst_predictions_and_distances(tmp_path):
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, batch_size=4, num_workers=0, backbone="test_resnet")
    model = fit_tiny(dm)
    result = collect(model, dm)
    written = write_report(result, tmp_path / "report", top_k=3)
    top = read_csv(written["top_losses"])
    assert list(top[0]) == ["file", "loss", "distance_px"] and len(top) == 3
    metric = PointDistance()
    metric.update(result.outputs, result.targets)
    mean = sum(float(r["distance_px"]) for r in top) / 3  # two points per image: mean of means = mean
    assert mean == pytest.approx(float(metric.compute()), rel=1e-4)
    assert_png(written["top_losses_png"], (500, 300))


# --- the callback --------------------------------------------------------------------------------------------
def test_callback_writes_without_a_logger_and_skips_other_ranks(image_folder, tmp_path, caplog):
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    callback = Interpretation(top_k=4, output_dir=tmp_path / "interpret", views=False)  # views: tests/test_inspection_views.py
    model = VisionModule(FolderDataModule(image_folder, num_workers=0).make_task(), backbone="test_resnet", pretrained=False)
    quick_trainer(max_epochs=1, limit_train_batches=2, callbacks=[callback]).fit(model, datamodule=dm)
    assert {p.name for p in (tmp_path / "interpret").iterdir()} == {
        "confusion_matrix.csv", "confusion_matrix.png", "most_confused.csv", "top_losses.csv", "top_losses.png"}
    assert callback.state_dict() == {"top_k": 4}

    other = Interpretation(top_k=4, output_dir=tmp_path / "rank1")
    other.on_fit_end(SimpleNamespace(is_global_zero=False, interrupted=False), model)
    assert not (tmp_path / "rank1").exists()
    broken = Interpretation(top_k=4, output_dir=tmp_path / "broken")  # a failing report never fails training
    broken.on_fit_end(SimpleNamespace(is_global_zero=True, interrupted=False, datamodule=None), model)
    assert "interpretation skipped" in caplog.text and not (tmp_path / "broken").exists()
    with pytest.raises(Exception, match="interpret.top_k"):
        Interpretation(top_k=-1)


# --- lightcycle-train -> TensorBoard, then lightcycle-interpret on its checkpoint -------------------------------
def run_cli(module: str, args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"lightcycle.cli.{module}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.slow
def test_train_logs_figures_and_interpret_cli_reproduces_them(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", [
        f"hydra.run.dir={run_dir}", "data=folder", f"data.root={image_folder}", "data.size=32", "data.batch_size=8",
        "data.num_workers=0", "trainer.max_epochs=1", "trainer.accelerator=cpu", "model.backbone=test_resnet",
        "model.pretrained=false", "interpret.top_k=4"])
    assert result.returncode == 0, result.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    assert {"interpret/confusion_matrix", "interpret/top_losses"} <= tags
    views = ("random_correct", "random_incorrect", "most_correct", "most_incorrect", "most_uncertain")
    assert {f"interpret/{v}" for v in views} <= tags  # the course's views, on by default in lightcycle-train
    assert all((run_dir / "interpret" / f"{v}.{ext}").is_file() for v in views for ext in ("csv", "png"))
    from_training = read_csv(run_dir / "interpret" / "top_losses.csv")

    # the checkpoint moved with a copy of the data: data.root= points at the copy
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    out = tmp_path / "interpret"
    result = run_cli("interpret", [f"ckpt={run_dir}/checkpoints/last.ckpt", f"data.root={moved}",
                                   f"output_dir={out}", "top_k=4"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "most confused" in result.stdout or "no confusions" in result.stdout
    from_cli = read_csv(out / "top_losses.csv")
    assert [r["file"] for r in from_cli] == [r["file"].replace(str(image_folder), str(moved)) for r in from_training]
    for a, b in zip(from_cli, from_training):  # same final weights, same validation images: same numbers
        assert (a["actual"], a["predicted"]) == (b["actual"], b["predicted"])
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
    assert_png(out / "top_losses.png", (500, 500))
    for view in views:  # lightcycle-interpret writes them through the same report code
        assert_png(out / f"{view}.png", (300, 150))
        cli_rows, train_rows = read_csv(out / f"{view}.csv"), read_csv(run_dir / "interpret" / f"{view}.csv")
        assert [Path(r["file"]).name for r in cli_rows] == [Path(r["file"]).name for r in train_rows]  # the run's seed
        for a, b in zip(cli_rows, train_rows):
            assert (a["actual"], a["predicted"]) == (b["actual"], b["predicted"])
            assert float(a["margin"]) == pytest.approx(float(b["margin"]), abs=1e-4)

    # a user error: one line naming the problem, exit 1
    result = run_cli("interpret", [f"ckpt={tmp_path}/nope.ckpt"], timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightcycle-interpret: error:")]
    assert len(errors) == 1 and "nope.ckpt not found" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr

    # data whose classes differ from the checkpoint's is refused, naming both (in-process: same code path)
    other = tmp_path / "other"
    for split in ("train", "valid"):
        for cls in ("cat", "dog"):
            shutil.copytree(image_folder / split / "red", other / split / cls)
    cfg = OmegaConf.create({"ckpt": f"{run_dir}/checkpoints/last.ckpt", "run_dir": None, "output_dir": str(out),
                            "top_k": 4, "device": "cpu", "data": {"root": str(other), "num_workers": 0}})
    with pytest.raises(LightcycleError, match=re.escape(
            "the data has class names ['cat', 'dog'] but the checkpoint was trained on ['blue', 'green', 'red']")):
        interpret(cfg)
    with pytest.raises(LightcycleError, match="run config not found"):
        interpret(OmegaConf.merge(cfg, {"run_dir": str(tmp_path)}))
