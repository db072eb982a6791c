"""lightcycle.clean's scoring half: every training and validation image scored with a checkpoint
(worst loss first, label, prediction), the most similar pairs (identical files first, leaks across
train and valid), paging, and the JSON table the page and apply reload."""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcycle import clean
from lightcycle.clean.similar import duplicate_pairs, identical_files, top_pairs
from lightcycle.errors import LightcycleError
from tests.helpers import CLASSES, make_image, quick_trainer

# The settings tests/helpers.tiny_datamodule builds each demo checkpoint's data with: the demo runs
# have no record, so the whole data config is passed as overrides, as `+data._target_=...` would.
DEMO_DATA = {
    "classification": {"_target_": "lightcycle.data.FolderDataModule"},
    "multilabel": {"_target_": "lightcycle.data.MultiLabelDataModule"},
    "segmentation": {"_target_": "lightcycle.data.SegmentationDataModule", "void_code": "void"},
    "points": {"_target_": "lightcycle.data.PointsDataModule", "y_range": [-1.1, 1.1], "head": "pooled"},
}
COMMON = {"size": 32, "batch_size": 6, "num_workers": 0, "backbone": "test_resnet"}


def demo_settings(task: str, root: Path) -> dict:
    return {**DEMO_DATA[task], **COMMON, "root": str(root)}


@pytest.mark.parametrize("task", list(DEMO_DATA))
def test_scores_every_image_of_both_splits(task, demo_checkpoints):
    from lightcycle.run.record import load_datamodule

    ckpt, root = demo_checkpoints[task]
    scores = clean.score(ckpt, demo_settings(task, root), pairs=10)
    dm = load_datamodule(ckpt.parent.parent, demo_settings(task, root))
    dm.setup("validate")
    expected = {("train", s.path.relative_to(root).as_posix()) for s in dm.train_samples}
    expected |= {("valid", s.path.relative_to(root).as_posix()) for s in dm.valid_samples}
    seen = [(r.split, r.path) for r in scores.images]
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == expected  # each image exactly once
    assert [r.key for r in scores.images] == list(range(len(scores)))
    assert all(math.isfinite(r.loss) for r in scores.images)
    worst = scores.worst(limit=None)
    assert [r.loss for r in worst] == sorted((r.loss for r in scores.images), reverse=True)
    assert scores.task == task and scores.root == Path(os.path.abspath(root))
    assert scores.data["_target_"] == DEMO_DATA[task]["_target_"] and scores.data["root"] == str(root)
    for row in scores.images:
        assert row.state == clean.FileState.of(root / row.path)
    first = scores.images[0]
    if task == "classification":
        assert scores.classes == sorted(CLASSES) and first.label in CLASSES and first.prediction in CLASSES
        assert Path(first.path).parent.name == first.label  # the class folder is the label
    elif task == "multilabel":
        assert set(scores.classes) == {"red", "green"}
        assert all(isinstance(r.label, list) and set(r.label) <= {"red", "green"} for r in scores.images)
        assert all(isinstance(r.prediction, list) for r in scores.images)
    elif task == "segmentation":
        assert first.label is None and first.prediction is None
        assert all(r.companions == (f"labels/{Path(r.path).stem}_P.png",) for r in scores.images)
    else:  # points: the CSV's pixels come back as the label, the prediction in the same original pixels
        import csv

        rows = {r["fname"]: [[float(r["x0"]), float(r["y0"])], [float(r["x1"]), float(r["y1"])]]
                for r in csv.DictReader(open(root / "points.csv"))}
        for r in scores.images:
            assert np.allclose(r.label, rows[Path(r.path).stem], atol=0.05)
            assert np.asarray(r.prediction).shape == (2, 2)
    assert 0 < len(scores.pairs) <= 10
    sims = [p.similarity for p in scores.pairs]
    assert sims == sorted(sims, reverse=True) and all(p.a < p.b for p in scores.pairs)
    for p in scores.pairs:
        assert p.leak == (scores.images[p.a].split != scores.images[p.b].split)


def test_training_images_are_scored_without_augmentation(demo_checkpoints):
    """A training image's loss is the model's on its evaluation-framed picture, the same on every pass."""
    from lightcycle.module import VisionModule
    from lightcycle.run.record import load_datamodule

    ckpt, root = demo_checkpoints["classification"]
    settings = demo_settings("classification", root)
    first, second = clean.score(ckpt, settings, pairs=0), clean.score(ckpt, settings, pairs=0)
    assert [r.loss for r in first.images] == [r.loss for r in second.images] and first.pairs == []
    dm = load_datamodule(ckpt.parent.parent, settings)
    dm.setup("fit")
    model = VisionModule.load(ckpt).eval()
    x, y = dm.dataset(dm.train_samples[:3], train=False)[2]
    with torch.inference_mode():
        loss = model.task.per_sample_loss(model(dm.batch_transform(x[None])), y[None])
    row = first.worst(split="train", label=dm.classes[int(y)], limit=None)
    assert any(r.path == dm.train_samples[2].path.relative_to(root).as_posix() and abs(r.loss - float(loss)) < 1e-5 for r in row)


def class_folders(root: Path, rng: np.random.Generator) -> None:
    """train/<class>/ (8 images each) and valid/<class>/ (3 each), every picture drawn as its class."""
    for split, n in (("train", 8), ("valid", 3)):
        for i, cls in enumerate(CLASSES):
            for j in range(n):
                make_image(root / split / cls / f"{cls}_{j}.jpg", i, rng)


# --- a folder with a planted wrong label and a planted duplicate across train and valid ------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A trained classifier over red/green/blue folders where train/red/planted.jpg is green and
    valid/blue/copy.jpg is byte for byte train/red/red_0.jpg; returns (scores, root)."""
    from lightcycle.data import FolderDataModule
    from lightcycle.module import VisionModule

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("planted")
    root = base / "data"
    rng = np.random.default_rng(3)
    class_folders(root, rng)
    make_image(root / "train" / "red" / "planted.jpg", CLASSES.index("green"), rng)
    shutil.copyfile(root / "train" / "red" / "red_0.jpg", root / "valid" / "blue" / "copy.jpg")
    dm = FolderDataModule(root, **COMMON)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    trainer = quick_trainer(max_epochs=6)
    trainer.fit(model, datamodule=dm)
    ckpt = base / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    return clean.score(ckpt, datamodule=FolderDataModule(root, **COMMON), pairs=20), root


def test_a_planted_wrong_label_is_among_the_worst_of_its_class(planted):
    scores, _ = planted
    red_train = scores.worst(split="train", label="red", limit=None)
    assert len(red_train) == 9 and all(r.label == "red" and r.split == "train" for r in red_train)
    assert "train/red/planted.jpg" in [r.path for r in red_train[:2]]


def test_an_identical_file_across_train_and_valid_is_the_first_pair(planted):
    scores, _ = planted
    first = scores.pairs[0]
    a, b = scores.image(first.a), scores.image(first.b)
    assert {a.path, b.path} == {"train/red/red_0.jpg", "valid/blue/copy.jpg"}
    assert first.similarity == 1.0 and first.leak and first.labels_differ
    assert all(p.similarity < 1.0 for p in scores.pairs[1:])  # no other files are identical
    assert scores.similar(leak=True)[0] == first


def test_scores_round_trip_through_json(planted, tmp_path):
    scores, root = planted
    path = scores.save(clean.scores_path(tmp_path / "run"))
    assert path == tmp_path / "run" / "cleaning" / "scores.json"
    again = clean.Scores.load(path)
    assert again == scores and again.root == Path(os.path.abspath(root))
    assert again.worst(split="valid", limit=5) == scores.worst(split="valid", limit=5)
    path.write_text('{"format": "something else"}')
    with pytest.raises(LightcycleError, match="scores.json: not a cleaner's scores file"):
        clean.Scores.load(path)


def test_the_run_record_gives_the_data_settings(demo_checkpoints, tmp_path):
    """Without overrides the settings come from <run dir>/.hydra/config.yaml, as lightcycle-interpret reads them."""
    import yaml

    ckpt, root = demo_checkpoints["classification"]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(ckpt, run / "checkpoints" / "last.ckpt")
    (run / ".hydra").mkdir()
    data = {**DEMO_DATA["classification"], **COMMON, "root": str(root)}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"data": data, "seed": 1}))
    scores = clean.score(run / "checkpoints" / "last.ckpt", ["data.batch_size=4"], pairs=3)
    assert len(scores) == 24 and scores.data["batch_size"] == 4 and scores.data["root"] == str(root)
    with pytest.raises(LightcycleError, match="data settings only"):
        clean.score(run / "checkpoints" / "last.ckpt", ["model.lr=1"])


def test_arrays_have_no_files_to_clean(demo_checkpoints):
    from lightcycle.data import ArrayDataModule

    ckpt, _ = demo_checkpoints["classification"]
    x = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    dm = ArrayDataModule(x, np.arange(8) % 3, classes=list(CLASSES), **COMMON)
    with pytest.raises(LightcycleError, match="arrays, not files, so there are no files to clean"):
        clean.score(ckpt, datamodule=dm)


# --- similar pairs, without a model -----------------------------------------------------------------------
def brute_force(features: torch.Tensor, k: int, exclude=()) -> list[tuple[int, int, float]]:
    unit = torch.nn.functional.normalize(features.float(), dim=1)
    sims = unit @ unit.T
    pairs = [(i, j, float(sims[i, j])) for i in range(len(unit)) for j in range(i + 1, len(unit)) if (i, j) not in exclude]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:k]


@pytest.mark.parametrize("block_elements", [1, 150, 10_000])
def test_top_pairs_in_blocks_equal_the_whole_matrix(block_elements):
    features = torch.randn(57, 6, generator=torch.Generator().manual_seed(1))
    exclude = {(3, 40), (0, 1), (12, 13)}
    for k in (1, 25, 2000):
        got = top_pairs(features, k, exclude=exclude, block_elements=block_elements)
        want = brute_force(features, k, exclude)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
        assert np.allclose([s for *_, s in got], [s for *_, s in want], atol=1e-6)
    assert len(top_pairs(features, 2000)) == 57 * 56 // 2
    assert top_pairs(features[:1], 5) == [] and top_pairs(features, 0) == []


def test_identical_files_are_grouped_by_bytes(tmp_path):
    files = {"a": b"same", "b": b"other", "c": b"same", "d": b"samf", "e": b"same", "f": b"other"}
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    groups = identical_files(paths)
    assert groups == [[0, 2, 4], [1, 5]]
    assert duplicate_pairs(groups) == [(0, 2, 1.0), (0, 4, 1.0), (1, 5, 1.0), (2, 4, 1.0)]


# --- paging -----------------------------------------------------------------------------------------------
def synthetic(n: int) -> clean.Scores:
    """`n` rows of a multilabel table: random splits, tags and losses, every 97th loss NaN."""
    rng = random.Random(0)
    tags = [[], ["cat"], ["dog"], ["cow"], ["cat", "dog"], ["cow", "dog"]]
    images = [
        clean.ScoredImage(key=k, split=("train", "valid")[k % 3 == 0], path=f"img/{k}.jpg", label=rng.choice(tags),
                          prediction=rng.choice(tags), loss=rng.random() if k % 97 else float("nan"),
                          state=clean.FileState(k, k))
        for k in range(n)
    ]
    return clean.Scores(task="multilabel", classes=["cat", "cow", "dog"], root=Path("/data"), data={}, images=images)


def test_worst_pages_filter_by_split_and_tag():
    scores = synthetic(2_000)
    page = scores.worst(split="valid", label="cat", offset=10, limit=20)
    everything = [r for r in scores.worst(limit=None) if r.split == "valid" and "cat" in r.label]
    assert page == everything[10:30] and len(page) == 20
    assert scores.count(split="valid", label="cat") == len(everything)
    assert all(math.isnan(r.loss) for r in scores.worst(limit=None)[-(2_000 // 97 + 1):])  # NaN last
    assert scores.worst(prediction="dog", limit=3) == [r for r in scores.worst(limit=None) if "dog" in r.prediction][:3]
    with pytest.raises(LightcycleError, match="split must be one of"):
        scores.worst(split="test")


def test_a_hundred_thousand_rows_page_in_well_under_a_second():
    scores = synthetic(100_000)
    start = time.perf_counter()
    scores.worst(split="train", label="dog", offset=5_000, limit=50)  # the first page sorts once
    first = time.perf_counter() - start
    start = time.perf_counter()
    page = scores.worst(split="valid", offset=20_000, limit=50)
    later = time.perf_counter() - start
    assert len(page) == 50 and first < 1.0 and later < 0.5, (first, later)


def test_nan_losses_are_saved_as_null_and_come_back_last(tmp_path):
    scores = synthetic(300)
    text = scores.save(tmp_path / "scores.json").read_text()
    assert "NaN" not in text  # browsers' JSON.parse refuses NaN
    again = clean.Scores.load(tmp_path / "scores.json")
    assert [r.key for r in again.worst(limit=None)] == [r.key for r in scores.worst(limit=None)]
    assert math.isnan(again.worst(limit=None)[-1].loss)


@pytest.mark.slow
def test_a_lightcycle_train_run_is_scored_from_its_record(tmp_path):
    """The course's loop from the command line: train on a folder with a planted wrong label and a planted
    duplicate, then score the run's checkpoint with nothing but its path."""
    from tests.helpers import run_train

    root = tmp_path / "data"
    rng = np.random.default_rng(5)
    class_folders(root, rng)
    make_image(root / "train" / "blue" / "planted.jpg", CLASSES.index("red"), rng)
    shutil.copyfile(root / "valid" / "green" / "green_1.jpg", root / "train" / "green" / "copy.jpg")
    run = tmp_path / "run"
    done = run_train(["data=folder", f"data.root={root}", "data.size=32", "data.batch_size=6", "data.num_workers=0",
                      "model.backbone=test_resnet", "model.pretrained=false", "model.lr=1e-2", "trainer.max_epochs=6",
                      "trainer.accelerator=cpu", "tta.n=0", "interpret.views=false"], run)
    assert done.returncode == 0, done.stderr[-2000:]
    scores = clean.score(run / "checkpoints" / "last.ckpt", pairs=5)
    assert scores.data["_target_"] == "lightcycle.data.FolderDataModule" and scores.data["root"] == str(root)
    assert len(scores) == 3 * 11 + 2
    assert "train/blue/planted.jpg" in [r.path for r in scores.worst(split="train", label="blue", limit=2)]
    first = scores.pairs[0]
    assert first.similarity == 1.0 and first.leak and not first.labels_differ
    assert {scores.image(first.a).path, scores.image(first.b).path} == {"valid/green/green_1.jpg", "train/green/copy.jpg"}
