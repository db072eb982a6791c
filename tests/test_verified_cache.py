"""The verified-files cache: a second run decodes only new or changed files, never trusts a changed
file, never lists a bad one, and survives several processes writing it at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image

from lightcycle.data import FolderDataModule, verified
from lightcycle.data.checks import find_bad_images
from lightcycle.data.verified import VerifiedFiles
from lightcycle.errors import LightcycleError


def test_a_second_run_decodes_only_what_changed(image_folder, tmp_path, decodes):
    cache = tmp_path / "cache"
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    assert len(decodes) == 48
    files = list((cache / "verified").glob("folder-*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())["files"]) == 48

    decodes.clear()
    dm = FolderDataModule(image_folder, num_workers=0, cache_dir=cache)
    dm.setup()
    assert decodes == [] and len(dm.train_samples) == 36

    # a file rewritten with the same size and its old mtime put back: ctime still tells, so it is decoded again
    red0 = image_folder / "train" / "red" / "red_0.jpg"
    stat = red0.stat()
    time.sleep(0.02)
    red0.write_bytes(b"x" * stat.st_size)  # same size, not an image any more
    os.utime(red0, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert red0.stat().st_size == stat.st_size and red0.stat().st_mtime_ns == stat.st_mtime_ns
    (image_folder / "train" / "red" / "new.png").write_bytes(b"not a png")
    with pytest.raises(LightcycleError, match=r"2 bad item\(s\)") as info:
        FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    assert "red_0.jpg" in str(info.value) and "new.png" in str(info.value)
    assert sorted(p.name for p in decodes) == ["new.png", "red_0.jpg"]
    listed = json.loads(files[0].read_text())["files"]
    assert "train/red/red_0.jpg" not in listed and "train/red/new.png" not in listed  # bad files are never listed

    decodes.clear()  # and they are decoded (and reported) on every run until fixed
    with pytest.raises(LightcycleError, match=r"2 bad item\(s\)"):
        FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    assert sorted(p.name for p in decodes) == ["new.png", "red_0.jpg"]


def test_the_switch_the_settings_and_recent_files(image_folder, tmp_path, decodes, monkeypatch):
    cache = tmp_path / "cache"
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache, verify_cache=False).setup()
    assert len(decodes) == 48 and not (cache / "verified").exists()
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    decodes.clear()
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache, max_pixels=10**6).setup()
    assert len(decodes) == 48  # another pixel limit may give other verdicts: its own cache file
    assert len(list((cache / "verified").iterdir())) == 2

    monkeypatch.setattr(verified, "RECENT_NS", 3600 * 10**9)  # every file "changed in the last hour"
    fresh = VerifiedFiles(image_folder, cache_dir=tmp_path / "other")
    assert find_bad_images([image_folder / "train" / "red" / "red_1.jpg"], cache=fresh) == []
    assert not fresh.path.exists()  # nothing settled enough to list, so nothing is written


def test_an_unreadable_or_foreign_cache_file_counts_as_empty(image_folder, tmp_path, decodes):
    cache = tmp_path / "cache"
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    (path,) = (cache / "verified").iterdir()
    path.write_text('{"root": "/elsewhere", "settings": {}, "files": {"train/red/red_0.jpg": [1, 2, 3]}}')
    decodes.clear()
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    assert len(decodes) == 48
    path.write_text('{"root": "half a fi')
    decodes.clear()
    FolderDataModule(image_folder, num_workers=0, cache_dir=cache).setup()
    assert len(decodes) == 48 and json.loads(path.read_text())["files"]


WRITER = """
import sys
from pathlib import Path
from lightcycle.data import verified
from lightcycle.data.checks import find_bad_images
verified.RECENT_NS = 0
root, cache, first, count, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
paths = [Path(root) / f"{i}.png" for i in range(first, first + count)]
for r in range(rounds):
    mine = paths[: (r + 1) * len(paths) // rounds]
    assert find_bad_images(mine, workers=2, cache=verified.VerifiedFiles(root, cache_dir=cache)) == []
"""


@pytest.mark.slow
def test_processes_sharing_the_cache_never_see_half_a_file_or_a_wrong_entry(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    for i in range(120):
        Image.new("L", (8, 8), i).save(root / f"{i}.png")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(cache), str(first), "80", "8"],
                         env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"), stderr=subprocess.PIPE, text=True)
        for first in (0, 40)  # files 0-79 and 40-119: some only one writer lists, some both
    ]
    target = VerifiedFiles(root, cache_dir=cache).path
    reads = 0
    while any(w.poll() is None for w in writers):
        if target.exists():
            json.loads(target.read_text())  # always whole: never a JSONDecodeError
            reads += 1
        time.sleep(0.005)
    for w in writers:
        assert w.wait() == 0, w.stderr.read()[-2000:]
    assert reads > 0
    files = json.loads(target.read_text())["files"]
    assert files and set(files) <= {f"{i}.png" for i in range(120)}
    for name, (size, mtime, ctime) in files.items():  # whatever was lost, what is there is true
        st = (root / name).stat()
        assert (size, mtime, ctime) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    assert not list(cache.rglob("*.partial"))  # no temp file left behind
