"""fastai's course views (random correct/incorrect, most correct/incorrect/uncertain of each class), picked
by hand from small tables of probabilities, written as CSV + PNG, and from a training run's callback."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from lightcycle.callbacks.interpretation import Interpretation
from lightcycle.data import FolderDataModule
from lightcycle.errors import LightcycleError
from lightcycle.interpretation import (
    VIEW_NAMES,
    InterpretationResult,
    collect,
    inspection_views,
    task_interpretation,
    write_report,
)
from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask, MultiLabelTask, PointsTask
from tests.helpers import quick_trainer

NAMES = ["cat", "dog", "fox"]
#        actual, probabilities (cat, dog, fox)
TABLE = [
    (0, (0.7, 0.2, 0.1)),  # 0 cat -> cat
    (0, (0.1, 0.8, 0.1)),  # 1 cat -> dog
    (0, (0.3, 0.6, 0.1)),  # 2 cat -> dog
    (1, (0.1, 0.85, 0.05)),  # 3 dog -> dog
    (1, (0.05, 0.05, 0.9)),  # 4 dog -> fox
    (2, (0.2, 0.1, 0.7)),  # 5 fox -> fox
    (2, (0.6, 0.3, 0.1)),  # 6 fox -> cat
    (2, (0.1, 0.45, 0.45 + 1e-3)),  # 7 fox -> fox, barely (margin 0.001)
]


def classification_result() -> InterpretationResult:
    targets = torch.tensor([a for a, _ in TABLE])
    probs = torch.tensor([p for _, p in TABLE])
    task = ClassificationTask(NAMES)
    pictures = [(torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(i)), a) for i, (a, _) in enumerate(TABLE)]
    return InterpretationResult(task=task, files=[Path(f"img{i}.jpg") for i in range(len(TABLE))],
                                losses=task.per_sample_loss(probs.log(), targets), outputs=probs, targets=targets,
                                dataset=pictures)


def files(view, group=None) -> list[str]:
    return [e.row["file"] for e in view.entries if group is None or e.group == group]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_classification_views_pick_what_the_course_shows():
    views = inspection_views(classification_result(), k=2, seed=0)
    assert list(views) == list(VIEW_NAMES)
    # most correct of each class: correct images by p(actual), highest first
    most_correct = views["most_correct"]
    assert files(most_correct, "cat") == ["img0.jpg"]
    assert files(most_correct, "dog") == ["img3.jpg"]
    assert files(most_correct, "fox") == ["img5.jpg", "img7.jpg"]
    # most incorrect of each class: wrong images by p(actual), lowest first (the highest losses)
    most_incorrect = views["most_incorrect"]
    assert files(most_incorrect, "cat") == ["img1.jpg", "img2.jpg"]  # p(cat) 0.1 then 0.3
    assert files(most_incorrect, "dog") == ["img4.jpg"]
    assert files(most_incorrect, "fox") == ["img6.jpg"]
    # most uncertain: top-1 minus top-2 probability, smallest first, every image of the class
    most_uncertain = views["most_uncertain"]
    assert files(most_uncertain, "fox") == ["img7.jpg", "img6.jpg"]  # margins 0.001, 0.3 (img5: 0.5)
    assert files(most_uncertain, "cat") == ["img2.jpg", "img0.jpg"]  # margins 0.3, 0.5 (img1: 0.7)
    row = most_uncertain.entries[0].row
    assert list(row) == most_uncertain.columns == ["class", "rank", "file", "actual", "predicted", "prob_actual",
                                                   "prob_predicted", "margin"]
    assert row["rank"] == 1 and row["margin"] == pytest.approx(0.3)
    # at random, seeded: correct ones are correct, incorrect ones wrong, the same for the same seed
    correct, wrong = {"img0.jpg", "img3.jpg", "img5.jpg", "img7.jpg"}, {"img1.jpg", "img2.jpg", "img4.jpg", "img6.jpg"}
    assert len(files(views["random_correct"])) == 2 and set(files(views["random_correct"])) <= correct
    assert len(files(views["random_incorrect"])) == 2 and set(files(views["random_incorrect"])) <= wrong
    again = inspection_views(classification_result(), k=2, seed=0)
    assert files(again["random_correct"]) == files(views["random_correct"])
    draws = {tuple(files(inspection_views(classification_result(), k=2, seed=s)["random_incorrect"])) for s in range(8)}
    assert len(draws) > 1  # the seed decides
    assert set(files(inspection_views(classification_result(), k=9, seed=0)["random_correct"])) == correct  # k > count


def test_two_class_uncertainty_is_closeness_to_one_half():
    probs = torch.tensor([[0.45, 0.55], [0.9, 0.1], [0.3, 0.7], [0.52, 0.48]])
    task = ClassificationTask(["cat", "dog"])
    targets = torch.tensor([0, 0, 0, 0])
    result = InterpretationResult(task=task, files=[Path(f"{i}.jpg") for i in range(4)],
                                  losses=task.per_sample_loss(probs.log(), targets), outputs=probs, targets=targets)
    order = files(inspection_views(result, k=4)["most_uncertain"], "cat")
    by_half = sorted(range(4), key=lambda i: abs(float(probs[i, 1]) - 0.5))  # fastai 0.7: argsort(abs(probs - 0.5))
    assert order == [f"{i}.jpg" for i in by_half]


def test_multilabel_views_work_per_tag_around_its_tuned_threshold():
    task = MultiLabelTask(["red", "green"], thresholds=[0.3, 0.7])
    probs = torch.tensor([[0.9, 0.2], [0.4, 0.75], [0.25, 0.95], [0.05, 0.6]])
    truth = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 1]])
    # decisions red > 0.3: [1, 1, 0, 0] -> correct [y, n, n, y]; green > 0.7: [0, 1, 1, 0] -> [y, y, y, n]
    result = InterpretationResult(task=task, files=[Path(f"t{i}.jpg") for i in range(4)],
                                  losses=task.per_sample_loss(probs.logit(), truth), outputs=probs, targets=truth)
    views = inspection_views(result, k=2, seed=3)
    assert files(views["most_correct"], "red") == ["t0.jpg", "t3.jpg"]  # |p - 0.3|: 0.6, 0.25
    assert files(views["most_correct"], "green") == ["t0.jpg", "t2.jpg"]  # |p - 0.7|: 0.5, 0.25 (t1: 0.05)
    assert files(views["most_incorrect"], "red") == ["t1.jpg", "t2.jpg"]  # 0.1, 0.05
    assert files(views["most_incorrect"], "green") == ["t3.jpg"]
    assert files(views["most_uncertain"], "green") == ["t1.jpg", "t3.jpg"]  # 0.05, 0.1
    row = views["most_incorrect"].entries[0].row
    assert {k: row[k] for k in ("tag", "actual", "predicted", "threshold")} == {
        "tag": "red", "actual": 0, "predicted": 1, "threshold": pytest.approx(0.3)}
    wrong = {(e.row["file"], e.row["tag"]) for e in views["random_incorrect"].entries}
    assert len(wrong) == 2 and wrong <= {("t1.jpg", "red"), ("t2.jpg", "red"), ("t3.jpg", "green")}
    note = task_interpretation(task).summary_lines(result, 5)[0]
    assert "metrics.json" in note and "tuned" in note


def test_views_are_written_as_csv_and_png_and_only_when_asked(tmp_path):
    result = classification_result()
    plain = write_report(result, tmp_path / "plain", top_k=0)
    assert not set(VIEW_NAMES) & set(plain)
    written = write_report(result, tmp_path / "views", top_k=0, views=inspection_views(result, k=2))
    for name in VIEW_NAMES:
        assert written[name].name == f"{name}.csv" and written[f"{name}_png"].name == f"{name}.png"
        assert written[f"{name}_png"].stat().st_size > 5000
    rows = read_csv(written["most_incorrect"])
    assert [(r["class"], r["rank"], r["file"]) for r in rows] == [
        ("cat", "1", "img1.jpg"), ("cat", "2", "img2.jpg"), ("dog", "1", "img4.jpg"), ("fox", "1", "img6.jpg")]


def test_tasks_without_right_or_wrong_images_have_no_views_and_bad_settings_are_errors():
    points = PointsTask(1, y_range=(-1.1, 1.1))
    result = InterpretationResult(task=points, files=[Path("a.jpg")], losses=torch.zeros(1),
                                  outputs=torch.zeros(1, 2), targets=torch.zeros(1, 2, 2))
    assert inspection_views(result) == {}
    with pytest.raises(LightcycleError, match="view_size"):
        inspection_views(classification_result(), k=0)
    with pytest.raises(LightcycleError, match="interpret.views"):
        Interpretation(views="yes")
    with pytest.raises(LightcycleError, match="interpret.view_size"):
        Interpretation(view_size=0)
    with pytest.raises(LightcycleError, match="interpret.max_view_panels"):
        Interpretation(max_view_panels=-1)


def test_the_callback_logs_the_views_to_every_logger_and_writes_them(image_folder, tmp_path):
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    callback = Interpretation(top_k=2, output_dir=tmp_path / "interpret", views=True, view_size=2, seed=1)
    model = VisionModule(FolderDataModule(image_folder, num_workers=0).make_task(), backbone="test_resnet",
                         pretrained=False)
    quick_trainer(max_epochs=1, limit_train_batches=1, callbacks=[callback]).fit(model, datamodule=dm)
    names = {p.name for p in (tmp_path / "interpret").iterdir()}
    assert {f"{n}.{ext}" for n in VIEW_NAMES for ext in ("csv", "png")} <= names
    assert set(VIEW_NAMES) <= set(callback.figures)
    # the same validation pass and seed give the same random picks as the report from Python
    result = collect(model, dm)
    again = inspection_views(result, k=2, seed=1)
    assert [r["file"] for r in read_csv(tmp_path / "interpret" / "random_correct.csv")] == files(again["random_correct"])


def test_the_end_of_training_report_draws_each_figure_once_and_defers_large_views(image_folder, tmp_path):
    """The report costs about one validation pass: every figure is drawn and encoded once (TensorBoard
    holds the very PNG bytes of the report folder), and a view with more pictures than
    `max_view_panels` gets its table but no figure (lightcycle-interpret draws it)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0, backbone="test_resnet")
    callback = Interpretation(top_k=2, output_dir=tmp_path / "interpret", views=True, view_size=2, max_view_panels=4)
    model = VisionModule(FolderDataModule(image_folder, num_workers=0).make_task(), backbone="test_resnet",
                         pretrained=False)
    draws = []
    real_draw = FigureCanvasAgg.draw

    def counting_draw(canvas, *args, **kwargs):
        draws.append(canvas.figure)
        return real_draw(canvas, *args, **kwargs)

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FigureCanvasAgg, "draw", counting_draw)
        quick_trainer(max_epochs=1, limit_train_batches=1, callbacks=[callback], logger=logger).fit(model, datamodule=dm)
    report_draws = [fig for fig in draws if fig in callback.figures.values()]
    assert len(report_draws) == len(callback.figures) == len({id(f) for f in report_draws})  # once each
    out = tmp_path / "interpret"
    assert "most_uncertain" in callback.deferred  # 2 per class x 3 classes = 6 > 4 pictures
    for name in VIEW_NAMES:
        pictures = len(read_csv(out / f"{name}.csv"))
        assert (name in callback.deferred) == (pictures > 4), (name, pictures)
        assert (out / f"{name}.png").is_file() == (name not in callback.deferred), name
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"images": 0})
    acc.Reload()
    tags = {t for t in acc.Tags()["images"] if t.startswith("interpret/")}
    assert tags == {f"interpret/{n}" for n in callback.figures}
    for tag in tags:
        (image,) = acc.Images(tag)
        assert image.encoded_image_string == (out / f"{tag.split('/')[1]}.png").read_bytes()
