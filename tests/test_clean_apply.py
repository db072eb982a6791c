"""Cleaning applied on disk: removals and relabels per layout, the journal, undo byte for byte, the lock."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from lightcycle.clean import Change, FileState, apply, undo
from lightcycle.clean.files import LOCK_NAME, REMOVED_DIR, cleaning_lock
from lightcycle.data import (
    CsvDataModule,
    FolderDataModule,
    MultiLabelDataModule,
    PointsDataModule,
    SegmentationDataModule,
)
from lightcycle.errors import LightcycleError
from tests.helpers import make_biwi, make_camvid, make_classification, make_planet

COMMON = dict(size=32, batch_size=2, num_workers=0, backbone="test_resnet")


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def folders(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def seen_by_training(datamodule) -> dict[str, set[str]]:
    """What a fresh DataModule's setup collects, as lightcycle-train would: split -> relative paths."""
    datamodule.setup("fit")
    root = Path(datamodule.root)
    return {split: {Path(s.path).relative_to(root).as_posix() for s in samples}
            for split, samples in (("train", datamodule.train_samples), ("valid", datamodule.valid_samples))}


def state(root: Path, rel: str) -> FileState:
    return FileState.of(root / rel)


def check_undo(journal: Path, root: Path, before: dict[str, str], dirs: set[str]) -> None:
    undone = undo(journal)
    assert undone.left == []
    assert tree(root) == before  # byte for byte, and no file more or less
    assert folders(root) == dirs
    assert not (root / REMOVED_DIR).exists() and not (root / LOCK_NAME).exists()


def test_folder_remove_relabel_retrain_and_undo(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    before, dirs = tree(root), folders(root)
    dm = FolderDataModule(root, **COMMON)
    original = seen_by_training(FolderDataModule(root, **COMMON))
    changes = [
        Change("train/red/red_0.jpg", "remove", state=state(root, "train/red/red_0.jpg")),
        Change("train/red/red_1.jpg", "relabel", "green", state=state(root, "train/red/red_1.jpg")),
        Change("valid/blue/blue_0.jpg", "relabel", "red"),
    ]
    applied = apply(changes, dm, journal_dir=tmp_path / "run" / "cleaning")
    assert [o.path for o in applied.done] == [c.path for c in changes] and applied.left == []
    stamp = applied.journal.stem
    assert applied.journal.parent == tmp_path / "run" / "cleaning" and applied.journal.suffix == ".jsonl"
    assert (root / REMOVED_DIR / stamp / "train/red/red_0.jpg").read_bytes()
    assert (root / "train/green/red_1.jpg").is_file() and (root / "valid/red/blue_0.jpg").is_file()
    assert not (root / "train/red/red_0.jpg").exists() and not (root / "train/red/red_1.jpg").exists()
    steps = [json.loads(line) for line in applied.journal.read_text().splitlines()]
    assert {s["what"] for s in steps} == {"move"} and all(len(s["sha256"]) == 64 for s in steps)

    cleaned = seen_by_training(FolderDataModule(root, **COMMON))  # the next lightcycle-train's view
    expected_train = (original["train"] - {"train/red/red_0.jpg", "train/red/red_1.jpg"}) | {"train/green/red_1.jpg"}
    assert cleaned["train"] == expected_train
    assert cleaned["valid"] == (original["valid"] - {"valid/blue/blue_0.jpg"}) | {"valid/red/blue_0.jpg"}
    retrained = FolderDataModule(root, **COMMON)
    retrained.setup("fit")
    labels = {Path(s.path).relative_to(root).as_posix(): retrained.classes[s.target]
              for s in retrained.train_samples + retrained.valid_samples}
    assert labels["train/green/red_1.jpg"] == "green" and labels["valid/red/blue_0.jpg"] == "red"

    check_undo(applied.journal, root, before, dirs)
    assert seen_by_training(FolderDataModule(root, **COMMON)) == original
    assert undo(applied.journal).restored == []  # twice is harmless


def test_folder_name_clash_gets_a_suffix(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    clash = root / "train/green/red_1.jpg"
    clash.write_bytes((root / "train/green/green_0.jpg").read_bytes())
    before, dirs = tree(root), folders(root)
    applied = apply([Change("train/red/red_1.jpg", "relabel", "green")], FolderDataModule(root, **COMMON),
                    journal_dir=tmp_path / "cleaning")
    assert applied.done[0].detail == "moved to train/green/red_1-1.jpg"
    assert tree(root)["train/green/red_1-1.jpg"] == before["train/red/red_1.jpg"]
    assert tree(root)["train/green/red_1.jpg"] == before["train/green/red_1.jpg"]  # never overwritten
    assert any("red_1-1.jpg" in note for note in applied.notes)
    check_undo(applied.journal, root, before, dirs)


def test_emptied_class_folder_is_removed_and_restored(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    before, dirs = tree(root), folders(root)
    changes = [Change("valid/blue/blue_0.jpg", "remove"), Change("valid/blue/blue_1.jpg", "relabel", "red")]
    applied = apply(changes, FolderDataModule(root, **COMMON), journal_dir=tmp_path / "cleaning")
    assert not (root / "valid/blue").exists()  # an empty class folder would stop the next training
    seen = seen_by_training(FolderDataModule(root, **COMMON))
    assert "valid/red/blue_1.jpg" in seen["valid"] and not any(p.startswith("valid/blue/") for p in seen["valid"])
    check_undo(applied.journal, root, before, dirs)


def test_csv_layout_rewritten_with_original_kept(csv_folder: Path, tmp_path: Path) -> None:
    root = csv_folder
    (root / "labels.csv").write_bytes((root / "labels.csv").read_bytes().replace(b"\r\n", b"\n"))
    before, dirs = tree(root), folders(root)
    dm = CsvDataModule(root, folder="images", **COMMON)
    applied = apply([Change("images/red0.jpg", "remove"), Change("images/green1.jpg", "relabel", "blue")], dm,
                    journal_dir=tmp_path / "cleaning")
    assert len(applied.done) == 2 and applied.left == []
    stamp = applied.journal.stem
    kept = root / f"labels.csv.before-clean-{stamp}"
    assert tree(root)[kept.name] == before["labels.csv"]
    text = (root / "labels.csv").read_text()
    assert "red0," not in text and "green1,blue\n" in text
    unchanged = [line for line in text.splitlines() if not line.startswith("green1")]
    assert unchanged == [line for line in kept.read_text().splitlines() if not line.startswith(("red0,", "green1"))]
    assert (root / REMOVED_DIR / stamp / "images/red0.jpg").is_file()
    retrained = CsvDataModule(root, folder="images", **COMMON)
    retrained.setup("fit")
    labels = {Path(s.path).name: retrained.classes[s.target] for s in retrained.train_samples + retrained.valid_samples}
    assert "red0.jpg" not in labels and labels["green1.jpg"] == "blue" and len(labels) == 29
    check_undo(applied.journal, root, before, dirs)


def test_multilabel_tags_and_valid_txt(tmp_path: Path) -> None:
    root = make_planet(tmp_path / "data", n=12, n_valid=4)
    before, dirs = tree(root), folders(root)
    dm = MultiLabelDataModule(root, **COMMON)
    original = seen_by_training(MultiLabelDataModule(root, **COMMON))
    assert "train/train_9.jpg" in original["valid"]
    applied = apply([Change("train/train_9.jpg", "remove"), Change("train/train_1.jpg", "relabel", ["green", "red"]),
                     Change("train/train_2.jpg", "relabel", [])], dm, journal_dir=tmp_path / "cleaning")
    assert applied.left == []
    assert "train_9" not in (root / "valid.txt").read_text().split()
    assert "train_1,green red" in (root / "labels.csv").read_text().splitlines()
    retrained = MultiLabelDataModule(root, **COMMON)
    seen = seen_by_training(retrained)
    assert seen["valid"] == original["valid"] - {"train/train_9.jpg"} and seen["train"] == original["train"]
    tags = {Path(s.path).name: s.target for s in retrained.train_samples}
    assert tags["train_1.jpg"] == (1.0, 1.0) and tags["train_2.jpg"] == (0.0, 0.0)
    check_undo(applied.journal, root, before, dirs)


def test_segmentation_remove_moves_mask_too(tmp_path: Path) -> None:
    root = make_camvid(tmp_path / "data")
    before, dirs = tree(root), folders(root)
    dm = SegmentationDataModule(root, void_code="void", **COMMON)
    applied = apply([Change("images/img10.jpg", "remove"), Change("images/img3.jpg", "relabel", "square")], dm,
                    journal_dir=tmp_path / "cleaning")
    assert [o.path for o in applied.done] == ["images/img10.jpg"]
    assert applied.left[0].path == "images/img3.jpg" and "removals only" in applied.left[0].detail
    aside = root / REMOVED_DIR / applied.journal.stem
    assert (aside / "images/img10.jpg").is_file() and (aside / "labels/img10_P.png").is_file()
    assert (root / "valid.txt").read_text() == "img9.jpg\nimg11.jpg\n"
    seen = seen_by_training(SegmentationDataModule(root, void_code="void", **COMMON))
    assert seen["valid"] == {"images/img9.jpg", "images/img11.jpg"} and len(seen["train"]) == 9
    check_undo(applied.journal, root, before, dirs)


def test_points_remove_drops_row(tmp_path: Path) -> None:
    root = make_biwi(tmp_path / "data")
    before, dirs = tree(root), folders(root)
    dm = PointsDataModule(root, head="pooled", **COMMON)
    applied = apply([Change("images/face2.jpg", "remove")], dm, journal_dir=tmp_path / "cleaning")
    assert applied.left == [] and "face2," not in (root / "points.csv").read_text()
    assert len(seen_by_training(PointsDataModule(root, head="pooled", **COMMON))["train"]) == 8
    check_undo(applied.journal, root, before, dirs)


def test_file_changed_after_scoring_is_left_alone(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    scored = state(root, "train/red/red_0.jpg")
    (root / "train/red/red_0.jpg").write_bytes((root / "train/red/red_0.jpg").read_bytes() + b"x")
    edited = tree(root)
    applied = apply([Change("train/red/red_0.jpg", "remove", state=scored), Change("../outside.jpg", "remove"),
                     Change("train/red/nothing.jpg", "remove")],
                    FolderDataModule(root, **COMMON), journal_dir=tmp_path / "cleaning")
    assert applied.done == [] and applied.journal is None
    assert [o.detail for o in applied.left] == ["changed on disk since it was scored", "not a path inside data.root",
                                                "missing (moved or deleted since it was scored)"]
    assert tree(root) == edited


def test_undo_leaves_a_file_changed_since(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    applied = apply([Change("train/red/red_0.jpg", "remove"), Change("train/red/red_1.jpg", "remove")],
                    FolderDataModule(root, **COMMON), journal_dir=tmp_path / "cleaning")
    moved = root / REMOVED_DIR / applied.journal.stem / "train/red/red_0.jpg"
    moved.write_bytes(b"edited")
    undone = undo(applied.journal)
    assert undone.restored == ["train/red/red_1.jpg"]
    assert len(undone.left) == 1 and "changed since it was moved" in undone.left[0][1]
    assert moved.read_bytes() == b"edited" and not (root / "train/red/red_0.jpg").exists()


def test_bad_journal_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LightcycleError, match="not found"):
        undo(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"what": "delete", "from": "/x", "root": "/"}\n')
    with pytest.raises(LightcycleError, match="line 1: not a cleaning journal step"):
        undo(bad)


def test_applies_on_one_root_are_serialised(csv_folder: Path, tmp_path: Path) -> None:
    root = csv_folder
    dm = CsvDataModule(root, folder="images", **COMMON)
    results: dict[str, object] = {}

    def run(name: str, changes: list[Change]) -> None:
        results[name] = apply(changes, dm, journal_dir=tmp_path / "cleaning")

    with cleaning_lock(root):  # another cleaner holds the root: an apply waits for it
        waiting = threading.Thread(target=run, args=("first", [Change("images/red0.jpg", "remove")]))
        waiting.start()
        time.sleep(1.5)
        assert waiting.is_alive() and (root / "images/red0.jpg").is_file()
    waiting.join(30)
    assert not waiting.is_alive() and not (root / "images/red0.jpg").exists()

    threads = [threading.Thread(target=run, args=(f"t{i}", [Change(f"images/blue{i}.jpg", "relabel", "green"),
                                                             Change("images/red1.jpg", "remove")])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    both = [results["t0"], results["t1"]]
    text = (root / "labels.csv").read_text()
    assert "blue0,green" in text and "blue1,green" in text  # neither rewrite lost the other's edit
    assert sorted(len(a.done) for a in both) == [1, 2]  # red1 moved once; the second apply found it gone
    assert len({a.journal for a in both}) == 2
    # undo newest first: the two threads applied in either order; their journals say which came last
    newest_first = sorted(both, key=lambda a: Path(a.journal).stat().st_mtime_ns, reverse=True)
    for applied in [*newest_first, results["first"]]:
        assert undo(applied.journal).left == []
    assert "red0," in (root / "labels.csv").read_text()


def test_arrays_cannot_be_cleaned() -> None:
    from lightcycle.data.base import ImageDataModule

    with pytest.raises(LightcycleError, match="cannot be cleaned in place"):
        ImageDataModule.edits(object(), Path("."))  # type: ignore[arg-type]


def test_flat_folder_never_collects_the_removed_files(flat_folder: Path, tmp_path: Path) -> None:
    root = flat_folder
    before, dirs = tree(root), folders(root)
    applied = apply([Change("red/0.png", "remove"), Change("green/1.png", "relabel", "blue")],
                    FolderDataModule(root, **COMMON), journal_dir=tmp_path / "cleaning")
    assert (root / REMOVED_DIR / applied.journal.stem / "red/0.png").is_file()
    seen = seen_by_training(FolderDataModule(root, **COMMON))
    everything = seen["train"] | seen["valid"]
    assert len(everything) == 29 and "blue/1.png" in everything
    assert not any(REMOVED_DIR in p for p in everything)
    check_undo(applied.journal, root, before, dirs)


def test_the_generated_demo_data_is_not_cleaned_in_place(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "cache" / "demo" / "classification-v1-seed0")  # where demo_root puts it
    (root / ".complete").write_text('{"version": 1, "task": "classification", "seed": 0, "files": 24}')
    before = tree(root)
    with pytest.raises(LightcycleError, match="generated demo data, which is rebuilt"):
        apply([Change("train/red/red_0.jpg", "remove")], FolderDataModule(root, **COMMON), journal_dir=tmp_path / "cleaning")
    assert tree(root) == before
    copy = tmp_path / "my-data"
    shutil.copytree(root, copy)
    assert apply([Change("train/red/red_0.jpg", "remove")], FolderDataModule(copy, **COMMON),
                 journal_dir=tmp_path / "cleaning").done


def test_an_apply_stopped_half_way_is_undone_from_its_journal(csv_folder: Path, tmp_path: Path, monkeypatch) -> None:
    import importlib

    applying = importlib.import_module("lightcycle.clean.apply")  # the module (the package exports the function)
    root = csv_folder
    before, dirs = tree(root), folders(root)
    real_move, moves = applying.move_file, []

    def failing_move(source: Path, target: Path) -> None:
        if moves:
            raise OSError(28, "No space left on device")
        moves.append(source)
        real_move(source, target)

    monkeypatch.setattr(applying, "move_file", failing_move)
    changes = [Change("images/red0.jpg", "remove"), Change("images/red1.jpg", "remove"),
               Change("images/green1.jpg", "relabel", "blue")]
    with pytest.raises(LightcycleError, match=r"apply stopped \(OSError: .*No space left.*lightcycle-clean undo="):
        apply(changes, CsvDataModule(root, folder="images", **COMMON), journal_dir=tmp_path / "cleaning")
    assert tree(root) != before and not (root / LOCK_NAME).exists()
    (journal,) = (tmp_path / "cleaning").glob("*.jsonl")
    check_undo(journal, root, before, dirs)  # the step journalled but never taken is skipped


def test_unwritable_places_are_one_clear_error(tmp_path: Path) -> None:
    root = make_classification(tmp_path / "data")
    before = tree(root)
    (tmp_path / "taken").write_text("a file where the journal folder should be")
    with pytest.raises(LightcycleError, match=r"journal_dir .*taken: cannot write the journal there .*nothing was changed"):
        apply([Change("train/red/red_0.jpg", "remove")], FolderDataModule(root, **COMMON), journal_dir=tmp_path / "taken")
    assert tree(root) == before
    (root / LOCK_NAME).mkdir()  # a lock that cannot be written (tests run as root: no read-only folder)
    (root / LOCK_NAME / "x").write_text("")
    with pytest.raises(LightcycleError, match=r"data.root .*: cannot write there"):
        from lightcycle.clean.files import cleaning_lock

        with cleaning_lock(root):
            pass
