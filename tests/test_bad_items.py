"""Reports of bad items stay short and are printed once, with the full list in bad_items.csv; CSV and
valid.txt names that lead outside data.root are bad items unless allowed; a repeated row says what
on_bad=skip does with it."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lightcycle.data import CsvDataModule, MultiLabelDataModule, PointsDataModule
from lightcycle.errors import LightcycleError


def _add_missing_rows(csv_folder: Path, n: int) -> None:
    with open(csv_folder / "labels.csv", "a") as f:
        f.writelines(f"missing_{i},red\n" for i in range(n))


def _read_report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_long_list_of_problems_names_20_and_writes_all_to_bad_items_csv(csv_folder, tmp_path, caplog):
    _add_missing_rows(csv_folder, 100)
    run = tmp_path / "run"
    with pytest.raises(LightcycleError) as info:
        CsvDataModule(csv_folder, folder="images", num_workers=0, report_dir=run).setup()
    lines = str(info.value).splitlines()
    assert lines[0] == f"100 bad item(s) in {csv_folder}:"
    assert lines[1] == f"  {csv_folder / 'images' / 'missing_0'}: file not found (labels.csv line 32)"
    assert len(lines) == 1 + 20 + 2
    assert lines[21] == f"  ... and 80 more; the full list is in {run / 'bad_items.csv'}"
    assert lines[22].endswith(f"all 100 are listed in {run / 'bad_items.csv'}.") and "data.on_bad=skip" in lines[22]
    rows = _read_report(run / "bad_items.csv")
    assert len(rows) == 100 and list(rows[0]) == ["path", "problem"]
    assert rows[99] == {"path": str(csv_folder / "images" / "missing_99"),
                        "problem": "file not found (labels.csv line 131)"}

    caplog.set_level(logging.WARNING, logger="lightcycle")
    dm = CsvDataModule(csv_folder, folder="images", num_workers=0, report_dir=run, on_bad="skip")
    dm.setup()
    assert len(dm.train_samples) + len(dm.valid_samples) == 30
    warning = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warning) == 1 and len(warning[0].splitlines()) == 1 + 20 + 1
    assert warning[0].startswith(
        f"skipped 100 bad item(s) in {csv_folder} (data.on_bad=skip; all listed in {run / 'bad_items.csv'})")

    # fixed data: the stale list goes, so it never describes a run it does not belong to
    (csv_folder / "labels.csv").write_text("\n".join((csv_folder / "labels.csv").read_text().splitlines()[:31]) + "\n")
    CsvDataModule(csv_folder, folder="images", num_workers=0, report_dir=run).setup()
    assert not (run / "bad_items.csv").exists()


def test_without_a_run_dir_the_list_goes_to_the_cache(csv_folder, tmp_path):
    _add_missing_rows(csv_folder, 3)
    with pytest.raises(LightcycleError) as info:
        CsvDataModule(csv_folder, folder="images", num_workers=0, cache_dir=tmp_path / "cache").setup()
    (report,) = (tmp_path / "cache" / "reports").iterdir()
    assert report.name.startswith("csvdata-") and report.name.endswith("-bad_items.csv")
    assert f"all 3 are listed in {report}." in str(info.value)
    assert len(_read_report(report)) == 3


@pytest.mark.slow
def test_lightcycle_train_prints_each_problem_once(csv_folder, tmp_path):
    _add_missing_rows(csv_folder, 30)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={run}", "data=csv", f"data.root={csv_folder}",
         "data.folder=images", "model.backbone=test_resnet", "model.pretrained=false", "data.num_workers=0"],
        capture_output=True, text=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"), timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    printed = result.stdout + result.stderr
    assert printed.count("missing_7: file not found") == 1  # once on the console, not logged there again
    assert "missing_25:" not in printed and f"... and 10 more; the full list is in {run / 'bad_items.csv'}" in printed
    assert len(_read_report(run / "bad_items.csv")) == 30
    log_text = (run / "train.log").read_text()
    assert log_text.count("lightcycle-train: error: 30 bad item(s)") == 1  # the run's log keeps the error


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Images outside every data root."""
    folder = tmp_path / "outside"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 48), (200, 0, 0)).save(folder / f"secret{i}.jpg")
    return folder


def test_csv_names_leading_outside_the_root_are_refused_unless_allowed(csv_folder, outside, caplog):
    os.symlink(outside / "secret2.jpg", csv_folder / "images" / "link.jpg")
    with open(csv_folder / "labels.csv", "a") as f:
        f.write(f"../../outside/secret0.jpg,red\n{outside / 'secret1.jpg'},red\nlink,red\n")
    with pytest.raises(LightcycleError) as info:
        CsvDataModule(csv_folder, folder="images", num_workers=0).setup()
    message = str(info.value)
    assert message.startswith("3 bad item(s)")
    for line, name in ((32, "secret0"), (33, "secret1"), (34, "secret2")):
        assert (f"resolves outside data.root (to {outside / name}.jpg); data.allow_outside_root=true allows it "
                f"(labels.csv line {line})") in message

    caplog.set_level(logging.WARNING, logger="lightcycle")
    dm = CsvDataModule(csv_folder, folder="images", num_workers=0, on_bad="skip")
    dm.setup()
    assert len(dm.train_samples) + len(dm.valid_samples) == 30 and "skipped 3 bad item(s)" in caplog.text
    dm = CsvDataModule(csv_folder, folder="images", num_workers=0, allow_outside_root=True)
    dm.setup()
    assert len(dm.train_samples) + len(dm.valid_samples) == 33


def test_an_image_folder_that_is_itself_a_link_is_inside(csv_folder, tmp_path):
    """data.folder pointing at another disk through a symlink is the user's setup, not a name from the CSV."""
    elsewhere = tmp_path / "big_disk" / "images"
    elsewhere.parent.mkdir()
    (csv_folder / "images").rename(elsewhere)
    os.symlink(elsewhere, csv_folder / "images")
    dm = CsvDataModule(csv_folder, folder="images", num_workers=0)
    dm.setup()
    assert len(dm.train_samples) + len(dm.valid_samples) == 30


def _planet(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / "train" / f"img_{i}.jpg")
    return root


def test_valid_txt_and_points_names_outside_the_root_and_repeated_rows(tmp_path, outside):
    root = _planet(tmp_path / "planet")
    rows = "".join(f"img_{i},{'ab'[i % 2]}\n" for i in range(6))
    (root / "labels.csv").write_text(f"image_name,tags\n{rows}img_1,a\n")
    (root / "valid.txt").write_text("img_4\n../../outside/secret0.jpg\n")
    with pytest.raises(LightcycleError) as info:
        MultiLabelDataModule(root, num_workers=0).setup()
    message = str(info.value)
    assert message.startswith("2 bad item(s)")
    assert "img_1.jpg: listed twice (labels.csv lines 3 and 8); the first row is used with data.on_bad=skip" in message
    assert f"resolves outside data.root (to {outside / 'secret0.jpg'}); data.allow_outside_root=true allows it " \
           "(valid.txt line 2)" in message
    dm = MultiLabelDataModule(root, num_workers=0, on_bad="skip")
    dm.setup()
    assert [s.path.name for s in dm.valid_samples] == ["img_4.jpg"]

    points = tmp_path / "biwi"
    (points / "images").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (20, 20)).save(points / "images" / f"p{i}.jpg")
    (points / "points.csv").write_text("fname,x0,y0\n" + "".join(f"p{i}.jpg,5,5\n" for i in range(4))
                                       + f"{outside / 'secret1.jpg'},5,5\n")
    refused = r"1 bad item\(s\)(.|\n)*resolves outside data.root .*\(points.csv line 6\)"
    with pytest.raises(LightcycleError, match=refused):
        PointsDataModule(points, num_workers=0, valid_pct=0.25).setup()
    dm = PointsDataModule(points, num_workers=0, valid_pct=0.25, allow_outside_root=True)
    dm.setup()
    assert len(dm.train_samples) + len(dm.valid_samples) == 5
