"""Train/validation splits: seeded, and a file that is already reported is not reported again."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lightcycle.data import MultiLabelDataModule
from lightcycle.data.files import FileResolver
from lightcycle.data.splits import split_by_pct, split_samples
from lightcycle.errors import LightcycleError


class _Item:
    def __init__(self, path: Path) -> None:
        self.path = path


def test_split_by_pct_is_seeded_and_disjoint():
    items = list(range(50))
    train, valid = split_by_pct(items, 0.2, seed=7)
    assert (train, valid) == split_by_pct(items, 0.2, seed=7)
    assert len(valid) == 10 and sorted(train + valid) == items
    assert split_by_pct(items, 0.2, seed=8)[1] != valid


def test_split_samples_uses_valid_file_and_skips_reported_files(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (4, 4)).save(folder / f"{name}.png")
    (tmp_path / "valid.txt").write_text("c\nbad\nghost\n")
    Image.new("RGB", (4, 4)).save(folder / "bad.png")
    samples = [_Item(folder / f"{n}.png") for n in ("a", "b", "c")]
    reported = [(folder / "bad.png", "mask has an unknown code")]
    train, valid, problems = split_samples(samples, tmp_path / "valid.txt", FileResolver(folder), 0.2, 0, reported)
    assert [s.path.name for s in train] == ["a.png", "b.png"] and [s.path.name for s in valid] == ["c.png"]
    # bad.png was reported already (it has no label because its row was bad); ghost matches no file
    assert problems == [(folder / "ghost", "file not found (valid.txt line 3)")]
    # no valid file: the seeded random split
    train, valid, problems = split_samples(samples, tmp_path / "none.txt", FileResolver(folder), 0.34, 0)
    assert len(valid) == 1 and len(train) == 2 and problems == []


def test_a_missing_file_named_by_csv_and_valid_txt_is_reported_once(tmp_path):
    root = tmp_path / "planet"
    (root / "train").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (200 * (i % 2), 0, 0)).save(root / "train" / f"img_{i}.jpg")
    (root / "labels.csv").write_text("image_name,tags\nimg_0,red\nimg_1,green\nimg_2,red\nimg_3,green\nlost,red\n")
    (root / "valid.txt").write_text("img_3\nlost\n")
    dm = MultiLabelDataModule(root, size=8, batch_size=2, num_workers=0)
    with pytest.raises(LightcycleError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert message.startswith("1 bad item(s)")
    assert message.count("lost") == 1
