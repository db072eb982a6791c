"""The built-in demo data: layouts, determinism, labels that agree with the pixels, and the cache rules."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightcycle.data import demo
from lightcycle.cache import cache_root
from lightcycle.data.demo import DEMO_TASKS, demo_root, generate_demo

LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every task at full size, generated once through the cache."""
    cache = tmp_path_factory.mktemp("cache")
    return {task: demo_root(task, cache) for task in DEMO_TASKS}


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the datasets so tests that generate repeatedly stay fast."""
    monkeypatch.setattr(demo, "CLASSIFICATION_COUNTS", (4, 1))
    monkeypatch.setattr(demo, "MULTILABEL_COUNT", 10)
    monkeypatch.setattr(demo, "SEGMENTATION_COUNT", 10)
    monkeypatch.setattr(demo, "POINTS_COUNT", 10)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def luminance(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) @ LUMA


def test_cache_folder_naming(full: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for task, root in full.items():
        assert root.name == f"{task}-v1-seed0" and root.parent.name == "demo"
        marker = json.loads((root / ".complete").read_text())
        assert marker["task"] == task and marker["seed"] == 0 and marker["version"] == 1
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # temp folders cleaned up
    monkeypatch.setenv("LIGHTCYCLE_CACHE", str(tmp_path / "c"))
    assert cache_root() == cache_root(None) == tmp_path / "c"
    assert cache_root("~/elsewhere") == Path.home() / "elsewhere"  # a setting wins, ~ expanded
    monkeypatch.delenv("LIGHTCYCLE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "lightcycle"


def test_classification_layout(full: dict[str, Path]) -> None:
    root = full["classification"]
    for split, n in (("train", 240), ("valid", 60)):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert classes == sorted(demo.SHAPES)
        for cls in classes:
            names = sorted(p.name for p in (root / split / cls).iterdir())
            assert len(names) == n and all(name.startswith(f"{cls}_") and name.endswith(".jpg") for name in names)
    img = Image.open(root / "train" / "star" / "star_0.jpg")
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 64)


def test_multilabel_layout_and_tags(full: dict[str, Path]) -> None:
    root = full["multilabel"]
    assert (root / "labels.csv").read_text(encoding="utf-8").startswith("image_name,tags\n")
    rows = read_csv(root / "labels.csv")
    assert len(rows) == 1200 and len(list((root / "train").iterdir())) == 1200
    seen = set()
    for row in rows:
        assert "." not in row["image_name"] and (root / "train" / f"{row['image_name']}.jpg").is_file()
        tags = row["tags"].split(" ")
        assert 1 <= len(tags) <= 3 and tags == sorted(set(tags)) and set(tags) <= set(demo.SHAPES)
        seen.update(tags)
    assert seen == set(demo.SHAPES)
    valid = (root / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert len(valid) == 240 and all((root / "train" / name).is_file() for name in valid)


def test_segmentation_masks(full: dict[str, Path]) -> None:
    root = full["segmentation"]
    codes = (root / "codes.txt").read_text(encoding="utf-8").splitlines()
    assert codes[0] == "background" and codes[-1] == "void" and len(codes) == 6
    images = sorted((root / "images").iterdir())
    assert len(images) == 800 and len(list((root / "labels").iterdir())) == 800
    valid = (root / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert len(valid) == 160 and all((root / "images" / name).is_file() for name in valid)
    void = len(codes) - 1
    separated = touching = 0
    for image in images[:100]:
        mask_img = Image.open(root / "labels" / f"{image.stem}_P.png")
        assert mask_img.mode == "P" and mask_img.size == (64, 64)
        mask = np.asarray(mask_img)
        assert mask.max() <= void and (mask == void).any() and ((mask > 0) & (mask < void)).any()
        # neighbouring pixels of two different regions are (almost always) split by void
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            differ = a != b
            touching += int(differ.sum())
            separated += int((differ & ((a == void) | (b == void))).sum())
        # every shape region stands out from the background next to it in the image
        lum = luminance(image)
        for code in set(np.unique(mask)) - {0, void}:
            region = mask == code
            ring = np.zeros_like(region)
            ys, xs = np.nonzero(region)
            ring[max(ys.min() - 3, 0) : ys.max() + 4, max(xs.min() - 3, 0) : xs.max() + 4] = True
            ring &= mask == 0
            if ring.sum() >= 10:
                assert np.mean(abs(lum[region] - lum[ring].mean()) > 20) > 0.8, image.name
    assert separated / touching > 0.97


def test_points_at_the_shape(full: dict[str, Path]) -> None:
    root = full["points"]
    assert (root / "points.csv").read_text(encoding="utf-8").startswith("fname,x0,y0\n")
    rows = read_csv(root / "points.csv")
    assert len(rows) == 1000 and len(list((root / "images").iterdir())) == 1000
    valid = (root / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert len(valid) == 200 and set(valid) <= {row["fname"] for row in rows}
    xy = [(float(row["x0"]), float(row["y0"])) for row in rows]
    assert all(len(row["x0"].split(".")[1]) == 2 for row in rows)
    assert all(0.1 * 64 < v < 0.9 * 64 for p in xy for v in p)
    assert np.std(xy, axis=0).min() > 8  # positions vary: predicting the mean point is far off

    def contrast(lum: np.ndarray, x: float, y: float) -> float:
        """|luminance at the point - the frame border's median|: large inside the shape."""
        xi, yi = int(round(x)), int(round(y))
        border = np.concatenate([lum[0], lum[-1], lum[:, 0], lum[:, -1]])
        return abs(lum[yi - 1 : yi + 2, xi - 1 : xi + 2].mean() - np.median(border))

    lums = [luminance(root / "images" / row["fname"]) for row in rows[:200]]
    at_point = [contrast(lum, *p) for lum, p in zip(lums, xy)]
    elsewhere = [contrast(lum, *p) for lum, p in zip(lums, xy[1:201])]  # another image's point
    assert min(at_point) > 25
    assert np.mean(np.asarray(elsewhere) > 25) < 0.5


@pytest.mark.usefixtures("small")
@pytest.mark.parametrize("task", DEMO_TASKS)
def test_deterministic(task: str, tmp_path: Path) -> None:
    generate_demo(task, tmp_path / "a", seed=3)
    generate_demo(task, tmp_path / "b", seed=3)
    generate_demo(task, tmp_path / "c", seed=4)
    a, b, c = (files_of(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert any(a[name] != c[name] for name in a if name.endswith(".jpg"))


def test_image_depends_only_on_seed_and_index(full: dict[str, Path], small: None, tmp_path: Path) -> None:
    """A shorter run reproduces the first files of the cached one: images do not depend on counts."""
    generate_demo("points", tmp_path / "p")
    for name in ("shape_0000.jpg", "shape_0009.jpg"):
        assert (tmp_path / "p" / "images" / name).read_bytes() == (full["points"] / "images" / name).read_bytes()


def test_reuse_does_not_regenerate(full: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root = full["multilabel"]
    probe = root / "train" / "train_0.jpg"
    before = probe.stat().st_mtime_ns

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a complete demo folder")

    monkeypatch.setattr(demo, "generate_demo", fail)
    assert demo_root("multilabel", root.parent.parent) == root
    assert probe.stat().st_mtime_ns == before


@pytest.mark.usefixtures("small")
def test_half_written_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = demo_root("segmentation", tmp_path)
    reference = files_of(root)
    (root / ".complete").unlink()
    with caplog.at_level(logging.WARNING, logger="lightcycle.data.demo"):
        assert demo_root("segmentation", tmp_path) == root
    assert "incomplete" in caplog.text
    assert files_of(root) == reference

    (root / "labels" / "shapes_0003_P.png").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightcycle.data.demo"):
        demo_root("segmentation", tmp_path)
    assert "incomplete" in caplog.text and files_of(root) == reference

    (root / ".complete").write_text("{not json")
    demo_root("segmentation", tmp_path)
    assert files_of(root) == reference
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]


@pytest.mark.usefixtures("small")
def test_losing_the_race_uses_the_winners_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another rank publishes the folder while this one generates: the rename fails, theirs is used."""
    final = tmp_path / "demo" / "points-v1-seed0"
    real = demo.generate_demo

    def generate_while_other_rank_finishes(task: str, root: Path, seed: int = 0) -> None:
        real(task, root, seed)
        real(task, final, seed)  # the other rank's complete folder appears first

    monkeypatch.setattr(demo, "generate_demo", generate_while_other_rank_finishes)
    assert demo_root("points", tmp_path) == final
    winner_marker = (final / ".complete").stat().st_ino
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]  # our temp folder is gone
    monkeypatch.setattr(demo, "generate_demo", real)
    assert demo_root("points", tmp_path) == final and (final / ".complete").stat().st_ino == winner_marker


def test_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="classification, multilabel, segmentation, points"):
        demo_root("detection", tmp_path)
    with pytest.raises(ValueError, match="unknown demo task"):
        generate_demo("detection", tmp_path / "x")
    assert not (tmp_path / "demo").exists()


@pytest.mark.usefixtures("small")
def test_generate_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        generate_demo("points", tmp_path)
    assert os.listdir(tmp_path) == ["keep.txt"]
