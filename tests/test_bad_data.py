"""Bad data: unusual image modes load as upright RGB, bad files and rows are all named at setup,
non-UTF-8 names work, workers never show a traceback, oversized images are refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightcycle.data import CsvDataModule, FolderDataModule
from lightcycle.data.checks import check_image, find_bad_images, image_size, load_image
from lightcycle.errors import LightcycleError, printable

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _halves() -> np.ndarray:
    """8x12 RGB: left half red, right half blue."""
    arr = np.zeros((8, 12, 3), np.uint8)
    arr[:, :6], arr[:, 6:] = RED, BLUE
    return arr


def _assert_halves(arr: np.ndarray, tol: int = 0) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (8, 12, 3)
    assert np.abs(arr[:, :6].astype(int) - RED).max() <= tol
    assert np.abs(arr[:, 6:].astype(int) - BLUE).max() <= tol


def _write(kind: str, folder: Path) -> tuple[Path, callable]:
    """Write an image of one kind; return its path and a check of the decoded array."""
    rgb = Image.fromarray(_halves())
    if kind == "cmyk_jpeg":
        path = folder / "cmyk.jpg"
        rgb.convert("CMYK").save(path, quality=100)
        return path, lambda a: _assert_halves(a, tol=3)
    if kind == "cmyk_tiff":
        path = folder / "cmyk.tif"
        rgb.convert("CMYK").save(path)
        return path, _assert_halves
    if kind == "palette":
        path = folder / "palette.png"
        rgb.convert("P", palette=Image.ADAPTIVE, colors=2).save(path)
        return path, _assert_halves
    if kind == "palette_transparent":  # transparent index -> white, like a viewer shows it
        path = folder / "palette_t.png"
        img = rgb.convert("P", palette=Image.ADAPTIVE, colors=2)
        img.save(path, transparency=img.getpixel((0, 0)))

        def check(a):
            assert a.shape == (8, 12, 3) and (a[:, :6] == 255).all() and (a[:, 6:] == BLUE).all()
        return path, check
    if kind == "grayscale":
        path = folder / "gray.png"
        arr = np.tile(np.arange(12, dtype=np.uint8) * 20, (8, 1))
        Image.fromarray(arr, mode="L").save(path)

        def check(a):
            assert a.shape == (8, 12, 3) and (a == arr[..., None]).all()
        return path, check
    if kind == "gray16":  # 16-bit PNG: 0..65535 maps to 0..255, dark stays dark
        path = folder / "gray16.png"
        arr = np.zeros((8, 12), np.uint16)
        arr[:, :4], arr[:, 4:8], arr[:, 8:] = 65535, 32896, 200
        Image.fromarray(arr).save(path)
        assert Image.open(path).mode.startswith("I;16")

        def check(a):
            assert a.dtype == np.uint8 and a.shape == (8, 12, 3)
            assert (a[:, :4] == 255).all() and (a[:, 4:8] == 128).all() and (a[:, 8:] == 1).all()
        return path, check
    if kind == "rgba":  # alpha composited on white
        path = folder / "rgba.png"
        arr = np.dstack([_halves(), np.full((8, 12), 255, np.uint8)])
        arr[:, 6:, 3] = 0
        arr[0, 0, 3] = 128
        Image.fromarray(arr, mode="RGBA").save(path)

        def check(a):
            assert a.shape == (8, 12, 3) and (a[1:, :6] == RED).all() and (a[:, 6:] == 255).all()
            assert tuple(a[0, 0]) == (255, 127, 127) or tuple(a[0, 0]) == (255, 128, 128)
        return path, check
    if kind.startswith("exif_rotated"):  # stored 12 wide x 8 high, EXIF 6 = rotate 90 deg clockwise
        path = folder / ("exif.jpg" if kind.endswith("jpeg") else "exif.png")
        exif = rgb.getexif()
        exif[0x0112] = 6
        rgb.save(path, exif=exif, **({"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {}))
        tol = 3 if path.suffix == ".jpg" else 0

        def check(a):  # upright: 8 wide x 12 high, the red left half is now on top
            assert a.dtype == np.uint8 and a.shape == (12, 8, 3)
            assert np.abs(a[:5].astype(int) - RED).max() <= tol  # JPEG blurs the rows at the edge a little
            assert np.abs(a[7:].astype(int) - BLUE).max() <= tol
        return path, check
    raise ValueError(kind)


MODES = ["cmyk_jpeg", "cmyk_tiff", "palette", "palette_transparent", "grayscale", "gray16", "rgba",
         "exif_rotated_jpeg", "exif_rotated_png"]


@pytest.mark.parametrize("kind", MODES)
def test_image_modes_load_as_upright_rgb_uint8(tmp_path, kind):
    path, check = _write(kind, tmp_path)
    arr = load_image(path)
    check(arr)
    assert image_size(path) == (arr.shape[1], arr.shape[0])  # header-only size agrees (points, masks)
    assert check_image(path) is None


def test_every_mode_passes_setup_and_batches(image_folder):
    for kind in MODES:
        _write(kind, image_folder / "train" / "red")
    dm = FolderDataModule(image_folder, size=32, batch_size=45, num_workers=0, augment="none")
    dm.setup("fit")  # on_bad=error: none of them is reported
    assert len(dm.train_samples) == 36 + len(MODES)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (45, 3, 32, 32)


def test_truncated_empty_and_non_image_files_are_all_named(image_folder, caplog):
    red = image_folder / "train" / "red"
    (red / "red_0.jpg").write_bytes((red / "red_0.jpg").read_bytes()[:300])  # truncated JPEG
    Image.fromarray(_halves()).save(red / "cut.png")
    (red / "cut.png").write_bytes((red / "cut.png").read_bytes()[:-30])  # truncated PNG
    (red / "empty.jpg").write_bytes(b"")
    (red / "notes.jpg").write_text("these are my notes, not a picture")
    with pytest.raises(LightcycleError) as info:
        FolderDataModule(image_folder, num_workers=0).setup()
    message = str(info.value)
    assert message.startswith("4 bad item(s) in ")
    lines = {line.strip().split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in message.splitlines()[1:-1]}
    assert set(lines) == {"red_0.jpg", "cut.png", "empty.jpg", "notes.jpg"}
    assert "truncated" in lines["red_0.jpg"] and "empty file" in lines["empty.jpg"]
    assert "cannot identify image file" in lines["notes.jpg"]
    assert "data.on_bad=skip" in message

    caplog.set_level(logging.WARNING, logger="lightcycle")
    dm = FolderDataModule(image_folder, num_workers=0, on_bad="skip")
    dm.setup()
    assert len(dm.train_samples) == 35  # red_0 gone; the other three were never samples
    assert "skipped 4 bad item(s)" in caplog.text


def test_empty_class_folder_is_named_then_dropped_with_skip(image_folder, caplog):
    (image_folder / "train" / "purple").mkdir()
    (image_folder / "train" / "purple" / "readme.txt").write_text("todo")
    with pytest.raises(LightcycleError, match=r"purple: class folder has no images"):
        FolderDataModule(image_folder, num_workers=0).setup()
    caplog.set_level(logging.WARNING, logger="lightcycle")
    dm = FolderDataModule(image_folder, num_workers=0, on_bad="skip")
    dm.setup()
    assert dm.classes == ["blue", "green", "red"] and dm.make_task().class_names == dm.classes
    assert "skipped 1 bad item(s)" in caplog.text and "purple" in caplog.text


def test_a_class_whose_training_images_are_all_skipped_is_warned_about(image_folder, caplog):
    for path in (image_folder / "train" / "green").iterdir():
        path.write_bytes(b"")
    caplog.set_level(logging.WARNING, logger="lightcycle")
    dm = FolderDataModule(image_folder, num_workers=0, on_bad="skip")
    dm.setup()
    assert "skipped 12 bad item(s)" in caplog.text
    assert "class(es) 'green' have no training images" in caplog.text


def test_single_class_fails_clearly(csv_folder, image_folder, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    (image_folder / "train" / "red").rename(only / "red")
    with pytest.raises(LightcycleError, match=r"classification needs at least 2 classes, found only 'red'"):
        FolderDataModule(only, num_workers=0).setup()
    lines = (csv_folder / "labels.csv").read_text().splitlines()
    (csv_folder / "labels.csv").write_text("\n".join([lines[0]] + [f"{line.split(',')[0]},cat" for line in lines[1:]]))
    with pytest.raises(LightcycleError, match=r"labels.csv: classification needs at least 2 classes, found only 'cat'"):
        CsvDataModule(csv_folder, folder="images", num_workers=0).setup()


def test_csv_missing_files_duplicates_and_labels_only_in_valid_are_listed(csv_folder, caplog):
    rows = (csv_folder / "labels.csv").read_text().splitlines()
    header, body = rows[0] + ",is_valid", [f"{r},{i % 5 == 0}" for i, r in enumerate(rows[1:])]
    body += [
        "ghost,red,False",        # line 32: no such file
        "red1,red,False",         # line 33: same file and label again
        "red2,blue,False",        # line 34: same file, another label
        "green3,,False",          # line 35: empty label
    ]
    Image.fromarray(_halves()).save(csv_folder / "images" / "odd.jpg")
    body.append("odd,violet,True")  # line 36: a label with no training rows
    (csv_folder / "labels.csv").write_text("\n".join([header] + body) + "\n")
    with pytest.raises(LightcycleError) as info:
        CsvDataModule(csv_folder, folder="images", valid_col="is_valid", num_workers=0).setup()
    message = str(info.value)
    assert message.startswith("5 bad item(s)")
    assert "ghost: file not found (labels.csv line 32)" in message
    assert "red1.jpg: listed twice (labels.csv lines 3 and 33); the first row is used" in message
    assert "red2.jpg: listed twice (labels.csv lines 4 and 34, labels 'red' and 'blue')" in message
    assert "green3.jpg: empty label (labels.csv line 35)" in message
    assert "odd.jpg: label 'violet' has no training rows, only validation ones (labels.csv line 36)" in message

    dm = CsvDataModule(csv_folder, folder="images", valid_col="is_valid", num_workers=0, on_bad="skip")
    dm.setup()
    assert dm.classes == ["blue", "green", "red"]
    assert len(dm.train_samples) + len(dm.valid_samples) == 30
    assert {dm.classes[s.target] for s in dm.valid_samples} <= set(dm.classes)


def _bytes_name_supported(folder: Path) -> bool:
    try:
        probe = os.path.join(os.fsencode(folder), b"caf\xe9.probe")
        open(probe, "wb").close()
        os.remove(probe)
        return True
    except OSError:
        return False


def test_non_utf8_file_names_load_and_errors_print(image_folder):
    red = image_folder / "train" / "red"
    if not _bytes_name_supported(red):
        pytest.skip("this filesystem refuses non-UTF-8 names")
    good = os.path.join(os.fsencode(red), b"caf\xe9.png")
    Image.fromarray(_halves()).save(os.fsdecode(good))
    dm = FolderDataModule(image_folder, size=32, batch_size=37, num_workers=0, augment="none")
    dm.setup()
    names = [s.path.name for s in dm.train_samples]
    assert "caf\udce9.png" in names  # surrogateescape str, as os.listdir gives it
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[0] == 37

    bad = os.path.join(os.fsencode(red), b"na\xefve.jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(LightcycleError) as info:
        FolderDataModule(image_folder, num_workers=0).setup()
    message = str(info.value)
    message.encode("utf-8")  # printable: no lone surrogates left
    assert "na\\xefve.jpg: UnidentifiedImageError: cannot identify image file (not an image" in message
    assert printable("caf\udce9") == "caf\\xe9"


def test_a_file_broken_after_setup_fails_in_the_worker_with_one_line(image_folder):
    dm = FolderDataModule(image_folder, size=32, batch_size=36, num_workers=1, augment="none")
    dm.setup()
    (image_folder / "train" / "red" / "red_3.jpg").write_bytes(b"gone bad")
    batches = iter(dm.train_dataloader())
    try:
        with pytest.raises(LightcycleError) as info:
            next(batches)
    finally:
        batches._shutdown_workers()  # now, not at garbage collection (which stalls a later test for 5 s)
    message = str(info.value)
    assert "Traceback" not in message and "worker" not in message
    assert message == f"{image_folder / 'train' / 'red' / 'red_3.jpg'}: cannot read image (UnidentifiedImageError: " \
        "cannot identify image file (not an image, or a format PIL cannot decode))"


def test_too_many_pixels_is_refused_before_decoding(image_folder, monkeypatch):
    path = image_folder / "train" / "red" / "red_0.jpg"  # 48x40 = 1920 pixels
    with pytest.raises(LightcycleError, match=r"red_0.jpg: image is 48x40 = 1920 pixels, more than the limit of 1000"):
        load_image(path, max_pixels=1000)
    assert "more than the limit of 1000" in check_image(path, max_pixels=1000)
    # all 48 images are too large; the message names the first 20 (blue_0 first), bad_items.csv all of them
    with pytest.raises(LightcycleError, match=r"blue_0.jpg: image is 48x40 = 1920 pixels, more than the limit of 1000"):
        FolderDataModule(image_folder, num_workers=0, max_pixels=1000).setup()
    # PIL's own limit is the default cap
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(LightcycleError, match=r"red_0.jpg: .*1920 pixels"):
        load_image(path)
    assert find_bad_images([path])[0][0] == path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, max_pixels=5000).shape == (40, 48, 3)  # a higher cap is honoured, silently
    assert Image.MAX_IMAGE_PIXELS == 5000


@pytest.mark.slow
def test_cli_bad_file_is_one_error_line_and_exit_1(image_folder, tmp_path):
    red = image_folder / "train" / "red"
    name = os.path.join(os.fsencode(red), b"caf\xe9.jpg") if _bytes_name_supported(red) else str(red / "cafe.jpg")
    with open(name, "wb") as f:
        f.write(b"\x89PNG broken")
    result = subprocess.run(
        [sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={tmp_path / 'run'}", "data=folder",
         f"data.root={image_folder}", "model.backbone=test_resnet", "model.pretrained=false", "data.num_workers=0"],
        capture_output=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"), timeout=120,
    )
    stderr = result.stderr.decode("utf-8")  # strict: everything printed is valid UTF-8
    assert result.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "Logging error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lightcycle-train: error: ")]
    assert len(errors) == 1 and errors[0].startswith("lightcycle-train: error: 1 bad item(s) in ")
    assert ".jpg: UnidentifiedImageError: cannot identify image file" in stderr


@pytest.mark.slow
def test_decompression_bomb_warning_is_an_error_outside_pytest(image_folder):
    """pytest resets warning filters around each test, so this runs where users run: a fresh process."""
    path = image_folder / "train" / "red" / "red_0.jpg"
    code = (
        "import sys; from PIL import Image; from lightcycle.data.checks import load_image\n"
        "from lightcycle.errors import LightcycleError\n"
        "Image.MAX_IMAGE_PIXELS = 1000\n"
        "try: Image.open(sys.argv[1])\n"
        "except Image.DecompressionBombWarning: print('raised')\n"
        "try: load_image(sys.argv[1])\n"
        "except LightcycleError as e: print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "raised"
    assert "red_0.jpg: cannot read image (refused as a possible decompression bomb" in result.stdout
    assert "DecompressionBombWarning" not in result.stderr
