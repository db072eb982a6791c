"""What many test files share: tiny generated datasets in every task's layout, a quiet CPU Trainer,
one-epoch checkpoints of every task, and running `lightcycle-train` as a subprocess or in this process.

Test files import these from here (never from each other), so a test module can be run on its own
and a helper has one home.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

CLASSES = ("red", "green", "blue")


# --- tiny datasets, one per layout -----------------------------------------------------------------------
def make_image(path: Path, cls_index: int, rng: np.random.Generator, size: tuple[int, int] = (40, 48)) -> None:
    """A noisy image whose dominant channel is the class: learnable in a few steps."""
    arr = (rng.random((size[0], size[1], 3)) * 90).astype(np.uint8)
    arr[..., cls_index] += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_files(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    """Write `files` (path relative to `root` -> bytes) under `root`; returns `files`, to compare with later."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def make_classification(root: Path) -> Path:
    """ImageFolder train/ and valid/ of CLASSES (6 and 2 images per class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 2)):
        for i, cls in enumerate(CLASSES):
            for j in range(n):
                make_image(root / split / cls / f"{cls}_{j}.jpg", i, rng)
    return root


def make_planet(root: Path, n: int = 24, delimiter: str = " ", n_valid: int = 6) -> Path:
    """Planet layout: labels.csv (names without extension), train/*.jpg, valid.txt.

    Tag `red` = red top half, `green` = green bottom half: learnable in a few steps.
    """
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    rows = []
    for i in range(n):
        arr = (rng.random((36, 44, 3)) * 60).astype(np.uint8)
        tags = []
        if i % 2:
            arr[:18, :, 0] += 150
            tags.append("red")
        if i % 3:
            arr[18:, :, 1] += 150
            tags.append("green")
        Image.fromarray(arr).save(root / "train" / f"train_{i}.jpg")
        rows.append((f"train_{i}", delimiter.join(tags)))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "tags"])
        writer.writerows(rows)
    (root / "valid.txt").write_text("\n".join(f"train_{i}" for i in range(n - n_valid, n)) + "\n")
    return root


CODES = ("background", "square", "void")


def make_camvid(root: Path, n: int = 12, size: tuple[int, int] = (36, 44)) -> Path:
    """CamVid layout: images/*.jpg, labels/{stem}_P.png (palette), codes.txt with void last, valid.txt."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("\n".join(CODES) + "\n")
    h, w = size
    for i in range(n):
        arr = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = int(rng.integers(0, h - 14)), int(rng.integers(0, w - 14))
        arr[y : y + 12, x : x + 12] = 230
        mask[y : y + 12, x : x + 12] = 1
        mask[y + 12, x : x + 12] = 2  # a void edge, as CamVid has between objects
        Image.fromarray(arr).save(root / "images" / f"img{i}.jpg")
        pal = Image.fromarray(mask, mode="P")
        pal.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * (256 - 3) * 3)
        pal.save(root / "labels" / f"img{i}_P.png")
    (root / "valid.txt").write_text("img9.jpg\nimg10\nimg11.jpg\n")
    return root


def make_biwi(root: Path, n: int = 12) -> Path:
    """points.csv (fname,x0,y0,x1,y1 in pixels), images/ of two sizes, valid.txt.

    Point 0 is a bright square's centre, point 1 sits 6 px to its right.
    """
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        h, w = (40, 48) if i % 2 else (32, 32)
        arr = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        x, y = int(rng.integers(5, w - 12)), int(rng.integers(5, h - 5))
        arr[y - 3 : y + 4, x - 3 : x + 4] = 240
        Image.fromarray(arr).save(root / "images" / f"face{i}.jpg")
        rows.append((f"face{i}", x, y, x + 6, y))
    with open(root / "points.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fname", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)
    (root / "valid.txt").write_text("face9.jpg\nface10.jpg\nface11.jpg\n")
    return root


# --- training ---------------------------------------------------------------------------------------------
def quick_trainer(**kwargs: Any) -> L.Trainer:
    """A CPU Trainer that writes nothing and prints nothing (no logger, checkpoints, progress bar,
    model summary or sanity validation); `kwargs` add to or override these settings."""
    settings: dict[str, Any] = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    settings.update(kwargs)
    return L.Trainer(**settings)


def tiny_datamodule(task: str, root: Path):
    """A small DataModule of `task` (classification, multilabel, segmentation, points) under `root`."""
    from lightcycle.data import (
        FolderDataModule,
        MultiLabelDataModule,
        PointsDataModule,
        SegmentationDataModule,
    )

    common = dict(size=32, batch_size=6, num_workers=0, backbone="test_resnet")
    if task == "classification":
        return FolderDataModule(make_classification(root / "data"), **common)
    if task == "multilabel":
        return MultiLabelDataModule(make_planet(root / "data", n=12, n_valid=4), **common)
    if task == "segmentation":
        return SegmentationDataModule(make_camvid(root / "data"), void_code="void", **common)
    if task == "points":
        return PointsDataModule(make_biwi(root / "data"), y_range=[-1.1, 1.1], head="pooled", flip_pairs=None, **common)
    raise ValueError(task)


def train_checkpoint(task: str, root: Path, epochs: int = 1) -> tuple[Path, object]:
    """Fit one epoch and save `root/checkpoints/last.ckpt` the way lightcycle-train does; returns (path, datamodule)."""
    from lightcycle.module import VisionModule

    dm = tiny_datamodule(task, root)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    trainer = quick_trainer(max_epochs=epochs, default_root_dir=root)
    trainer.fit(model, datamodule=dm)
    path = root / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path, dm


class RunsCode:
    """A pickle payload: unpickling it creates `marker`, the proof that loading executed something."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def run_train(args: list[str], run_dir: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """`lightcycle-train hydra.run.dir=<run_dir> <args>` in a subprocess, output captured."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    cmd = [sys.executable, "-m", "lightcycle.cli.train", f"hydra.run.dir={run_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)



def command_here(main: Any, argv: list[str], monkeypatch: Any) -> int:
    """A console script's `main()` run in this process with `argv` as its command line (no interpreter
    start-up); its exit status, 0 when it returns. The logging handlers Hydra configures for the job
    (a console handler on this test's captured stream, the job's log file) are taken away afterwards,
    so later tests never log into a closed stream or into this job's files."""
    import logging

    loggers = [logging.getLogger(), logging.getLogger("lightcycle")]
    before = [(logger, list(logger.handlers), logger.level) for logger in loggers]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    try:
        main()
    except SystemExit as stop:
        return int(stop.code or 0)
    finally:
        for logger, handlers, level in before:
            for handler in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(level)
    return 0


def train_here(args: list[str], run_dir: Path, monkeypatch: Any) -> int:
    """`lightcycle-train hydra.run.dir=<run_dir> <args>` through its entry point in this process (for a
    run a test only needs to exist); its exit status. The run's log file is closed afterwards, so nothing
    this process logs later lands in the run."""
    import logging

    from lightcycle.cli.train import main

    code = command_here(main, ["lightcycle-train", f"hydra.run.dir={run_dir}", *args], monkeypatch)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(Path(run_dir).resolve()):
            root.removeHandler(handler)
            handler.close()
    return code
