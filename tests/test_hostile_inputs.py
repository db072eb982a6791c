"""Data files that would allocate without bound: an .npz zip bomb or one whose headers declare huge
shapes, a codes.txt of 100,000 codes, a CSV of a million columns or one endless line. Each is refused
in one line naming the file before the memory is taken; the hostile files are small on disk."""

from __future__ import annotations

import resource
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy

from lightcycle.data import SegmentationDataModule
from lightcycle.data.array_checks import load_npz
from lightcycle.data.files import read_csv_rows, read_name_list
from lightcycle.errors import LightcycleError
from lightcycle.tasks import ClassificationTask
from tests.helpers import make_camvid


def _npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    import io

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npz(path: Path, members: dict[str, tuple[tuple[int, ...], int]], compress: bool = False) -> Path:
    """An .npz whose members declare `shape` and hold `body` zero bytes (written in chunks: nothing big in memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for key, (shape, body) in members.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                member.write(_npy_header(shape))
                chunk = bytes(1 << 20)
                for start in range(0, body, len(chunk)):
                    member.write(chunk[: min(len(chunk), body - start)])
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("elements", [10**9, 10**11])
def test_an_npz_declaring_a_huge_shape_is_refused_from_its_header(tmp_path, elements):
    path = _npz(tmp_path / "huge.npz", {"x_train": ((elements // 3072, 32, 32, 3), 100), "y_train": ((10,), 10)})
    before = _peak_mb()
    with pytest.raises(LightcycleError) as info:
        load_npz(path)
    message = str(info.value)
    assert message.startswith(f"{path}: key 'x_train' (shape ({elements // 3072}, 32, 32, 3), uint8) declares "), message
    assert message.endswith("but holds 228: truncated or crafted") and "Python objects" not in message
    assert _peak_mb() - before < 50


def test_an_npz_zip_bomb_is_refused_before_it_inflates(tmp_path):
    path = _npz(tmp_path / "bomb.npz", {"x_train": ((80 << 20,), 80 << 20), "y_train": ((10,), 10)}, compress=True)
    assert path.stat().st_size < 200_000  # 80 MiB of zeros in ~80 KB
    before = _peak_mb()
    with pytest.raises(LightcycleError, match=r"bomb.npz: key 'x_train' \(shape \(83886080,\), uint8\) inflates from "
                                              r"0\.1 MiB to 80\.0 MiB \([\d,]+x; a zip bomb\?\); set data.max_bytes"):
        load_npz(path)
    assert _peak_mb() - before < 50
    with pytest.raises(LightcycleError, match=r"the arrays take more than 1.0 MiB in memory \(data.max_bytes=1048576\)"):
        load_npz(path, max_bytes=1 << 20)  # a limit the user set applies to the total instead


def test_an_honest_npz_still_loads(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.array([0, 1, 0, 1]))
    assert load_npz(path)["x_train"].shape == (4, 8, 8, 3)


def test_a_codes_file_of_100000_codes_is_one_line(tmp_path):
    root = make_camvid(tmp_path / "camvid", n=4)
    (root / "codes.txt").write_text("\n".join(f"code{i}" for i in range(100_000)) + "\n")
    dm = SegmentationDataModule(root, size=32, batch_size=2, num_workers=0, valid_pct=0.5)
    with pytest.raises(LightcycleError, match=r"codes.txt: 100,000 codes, more than the 1,000 a segmentation model may have"):
        dm.setup("fit")


def test_a_csv_with_a_million_columns_or_an_endless_line_is_refused_before_it_is_read(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("fname,label," + ",".join(f"c{i}" for i in range(20_000)) + "\na.png,cat\n")
    with pytest.raises(LightcycleError, match=r"wide.csv: the header has 20,002 columns, more than 10,000"):
        read_csv_rows(wide, ["fname", "label"])
    rows = tmp_path / "rows.csv"
    rows.write_text("fname,label\na.png,cat\n" + "b.png,dog" + ",x" * 20_000 + "\n")
    with pytest.raises(LightcycleError, match=r"rows.csv: row 3 has 20,002 columns"):
        read_csv_rows(rows, ["fname", "label"])
    endless = tmp_path / "endless.csv"
    with open(endless, "w") as f:
        f.write("fname,label\n")
        f.write("x" * (3 << 20))  # one line of 3 MB, no newline: a 1 GB one stops at the same point
    before = _peak_mb()
    with pytest.raises(LightcycleError, match=r"endless.csv: line 2 is longer than 1,048,576 characters"):
        read_csv_rows(endless, ["fname", "label"])
    with pytest.raises(LightcycleError, match=r"endless.csv: line 2 is longer than"):
        read_name_list(endless)
    assert _peak_mb() - before < 30
    good = tmp_path / "good.csv"
    good.write_text("\nfname,label,extra\na.png,cat\n\nb.png,dog,1\n")  # blank lines and short rows, as before
    assert read_csv_rows(good, ["fname"]) == [(2, {"fname": "a.png", "label": "cat", "extra": ""}),
                                             (3, {"fname": "b.png", "label": "dog", "extra": "1"})]


def test_a_label_file_naming_more_classes_than_a_model_may_have_is_one_line():
    with pytest.raises(LightcycleError, match=r"classification: 10,001 classes, more than the 10,000 a model may have"):
        ClassificationTask([f"c{i}" for i in range(10_001)])
    assert ClassificationTask([f"c{i}" for i in range(10_000)]).num_classes == 10_000
