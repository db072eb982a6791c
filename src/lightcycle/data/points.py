"""Point data (BIWI head pose): a CSV of `fname,x0,y0[,x1,y1,...]` in pixels, images in one folder.

Coordinates travel through the augmentation as albumentations keypoints, then are scaled to [-1, 1]
with the *transformed* image's size (pixel centres at integers, -1 and 1 the outer edges, so a
horizontal flip is exactly x -> -x), so any resize, crop, flip or rotation moves the target with
the picture; `to_original_pixels` maps predictions back to the CSV's pixels. Points that an augmentation pushes out
of the frame are kept (the loss still needs them) and counted per epoch in the log.

A target is a [K + 1, 2] float tensor: the K points, then the (width, height) in original pixels that
the input frame spans (the original size when squished; the square's side when cropped or padded,
data/framing.py), which lets `val_distance_px` report errors in original pixels at any training size
and framing.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch

from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.checks import image_size
from lightcycle.data.edits import RemoveOnlyCsvEdits
from lightcycle.data.files import FileResolver, listed_twice, read_csv_rows
from lightcycle.data.splits import split_samples
from lightcycle.errors import LightcycleError
from lightcycle.point_coords import scale_points, unscale_points  # noqa: F401  (public here too)
from lightcycle.tasks import PointsTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointsTarget:
    """What `encode` needs about one image: its points in pixels, its size and the symmetric pairs."""

    xy: tuple[tuple[float, float], ...]
    size: tuple[int, int]  # original (width, height)
    flip_pairs: tuple[tuple[int, int], ...] = ()


def _signed_area(p: np.ndarray) -> float:
    (x0, y0), (x1, y1), (x2, y2) = p
    return float((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))


def to_original_pixels(
    coords: np.ndarray | torch.Tensor, size: tuple[int, int], original: tuple[int, int]
) -> Any:
    """Predicted [-1, 1] coordinates on a `size` (w, h) input -> pixels of the `original` (w, h) image.

    albumentations' Resize scales keypoints as x * scale (no half-pixel shift), so the inverse
    divides by the same scale; this reproduces the CSV's own coordinates exactly.
    """
    pixels = unscale_points(coords, size[0], size[1])
    scale = [original[0] / size[0], original[1] / size[1]]
    return pixels * (np.asarray(scale) if isinstance(pixels, np.ndarray) else torch.tensor(scale, dtype=pixels.dtype))


def transform_points(
    image: np.ndarray, target: PointsTarget, transform: A.Compose
) -> tuple[torch.Tensor, np.ndarray, bool]:
    """Augment image and points together; returns (image tensor, points in pixels, mirrored?)."""
    x, points, mirrored, _ = frame_points(image, target, transform)
    return x, points, mirrored


def frame_points(
    image: np.ndarray, target: PointsTarget, transform: A.Compose
) -> tuple[torch.Tensor, np.ndarray, bool, tuple[float, float]]:
    """`transform_points` plus the frame's `extent`.

    Three probe points (a triangle) ride along: if the transform reversed their orientation, the
    picture was mirrored an odd number of times (flips, not rotations), so left/right labels swap.
    Their spacing gives the `extent`: the (width, height) in original pixels that the output frame
    spans (the original size when squished, the short side when cropped, the long side when padded).
    """
    height, width = image.shape[:2]
    probes = [(0.0, 0.0), (float(width), 0.0), (0.0, float(height))]
    out = transform(image=image, keypoints=list(target.xy) + probes)
    keypoints = np.asarray(out["keypoints"], dtype=np.float64).reshape(-1, 2)
    points, moved = keypoints[: len(target.xy)], keypoints[len(target.xy):]
    mirrored = _signed_area(np.asarray(probes)) * _signed_area(moved) < 0
    x = out["image"]
    across = (float(np.linalg.norm(moved[1] - moved[0])) / width, float(np.linalg.norm(moved[2] - moved[0])) / height)
    extent = (x.shape[-1] / across[0], x.shape[-2] / across[1])  # output pixels / (output pixels per original pixel)
    return x, points, mirrored, extent


class OutOfFrameReport:
    """Count the training points that augmentation (a rotation, zoom or crop) pushed out of the frame
    and log their share once per epoch: they are kept for the loss, and a large share says so.

    For DataModules whose batches are (images, [B, K + 1, 2] point targets) when `uses_keypoints`.
    """

    uses_keypoints: bool
    _out_of_frame: list[int]
    _epoch: int

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]  # images normalised on the device
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training and self.uses_keypoints
        if training and isinstance(batch, (tuple, list)) and len(batch) == 2:
            if trainer.current_epoch != getattr(self, "_epoch", -1):
                self._report_out_of_frame()
                self._epoch = trainer.current_epoch
            coords = batch[1][:, :-1]
            counts = getattr(self, "_out_of_frame", [0, 0])
            # a device tensor: read once an epoch, not a wait for the accelerator every step
            counts[0] = counts[0] + (coords.abs() > 1).any(-1).sum()
            counts[1] += int(coords.shape[0] * coords.shape[1])
            self._out_of_frame = counts
        return batch

    def _report_out_of_frame(self) -> None:
        outside, total = getattr(self, "_out_of_frame", [0, 0])
        outside = int(outside)
        if total and outside:
            log.info(
                "points: %d of %d training points (%.1f%%) were outside the frame after augmentation in epoch %d "
                "(kept for the loss)", outside, total, 100 * outside / total, getattr(self, "_epoch", -1),
            )
        self._out_of_frame = [0, 0]

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self._report_out_of_frame()


class PointsDataModule(OutOfFrameReport, ImageDataModule):
    """BIWI layout: `points.csv` with `fname,x0,y0[,x1,y1,...]` in pixels, images in `folder`,
    `valid.txt` (names relative to `folder`) or `valid_pct`.

    `flip_pairs`: pairs of point indices that swap under a horizontal flip (left/right eye).
    `head`: `heatmap` (soft-argmax on the feature maps, the default: far more precise, docs/benchmarks.md)
    or `pooled` (fastai's regression head), see PointsTask.
    `y_range`: with `head=pooled`, squash outputs into (low, high) with a scaled sigmoid (fastai's
    `y_range`); null = linear.
    """

    task_name = "points"
    uses_keypoints = True

    def __init__(
        self,
        *args: Any,
        csv_file: str = "points.csv",
        folder: str | None = "images",
        fn_col: str = "fname",
        valid_file: str | None = "valid.txt",
        flip_pairs: list[list[int]] | None = None,
        y_range: list[float] | None = None,
        head: str = "heatmap",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.csv_file, self.folder, self.fn_col, self.valid_file = csv_file, folder, fn_col, valid_file
        self.flip_pairs = tuple(tuple(int(i) for i in pair) for pair in (flip_pairs or []))
        if any(len(pair) != 2 for pair in self.flip_pairs):
            raise LightcycleError(f"data.flip_pairs must be pairs of point indices like [[0, 1]], got {flip_pairs}")
        self.y_range = list(y_range) if y_range is not None else None
        if head not in ("pooled", "heatmap"):
            raise LightcycleError(f"data.head must be pooled or heatmap, got {head!r}")
        if self.y_range is not None and head != "pooled":
            raise LightcycleError(
                f"data.y_range={self.y_range} needs data.head=pooled: the {head} head's soft-argmax already "
                "stays inside the frame; add data.head=pooled or drop data.y_range"
            )
        self.head = head
        self.num_points = 0
        self._out_of_frame = [0, 0]  # (points outside, points seen) this training epoch
        self._epoch = -1

    def point_columns(self, header: list[str], where: Path) -> list[tuple[str, str]]:
        """(x, y) column pairs: `x0,y0,x1,y1,...` by name, else every column after `fn_col` in pairs."""
        named: dict[int, dict[str, str]] = {}
        for col in header:
            m = re.fullmatch(r"([xy])(\d+)", col.strip())
            if m:
                named.setdefault(int(m.group(2)), {})[m.group(1)] = col
        if named and all(set(named[i]) == {"x", "y"} for i in range(len(named))) and sorted(named) == list(range(len(named))):
            return [(named[i]["x"], named[i]["y"]) for i in range(len(named))]
        rest = [c for c in header if c != self.fn_col]
        if not rest or len(rest) % 2:
            raise LightcycleError(f"{where}: expected {self.fn_col},x0,y0[,x1,y1,...]; the header has {header}")
        return list(zip(rest[::2], rest[1::2]))

    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        csv_path = root / self.csv_file
        rows = read_csv_rows(csv_path, [self.fn_col])
        columns = self.point_columns(list(rows[0][1]), csv_path)
        self.num_points = len(columns)
        for a, b in self.flip_pairs:
            if not (0 <= a < self.num_points and 0 <= b < self.num_points) or a == b:
                raise LightcycleError(f"data.flip_pairs: {[a, b]} is not a pair of point indices 0..{self.num_points - 1}")
        image_dir = root / self.folder if self.folder else root
        resolver = FileResolver(image_dir, root, self.allow_outside_root)
        problems: list[tuple[Path, str]] = []
        entries: list[tuple[Path, tuple[tuple[float, float], ...], int]] = []
        seen: dict[Path, int] = {}
        for line, row in rows:
            where = f"{csv_path.name} line {line}"
            path, why = resolver.resolve(row[self.fn_col])
            if path is None:
                problems.append((image_dir / row[self.fn_col].strip(), f"{why} ({where})"))
                continue
            if path in seen:
                problems.append((path, listed_twice(csv_path.name, seen[path], line)))
                continue
            try:
                xy = tuple((float(row[cx]), float(row[cy])) for cx, cy in columns)
            except ValueError:
                problems.append((path, f"coordinates are not all numbers ({where})"))
                continue
            if not all(np.isfinite(xy).ravel()):
                problems.append((path, f"coordinates are not all finite ({where})"))
                continue
            seen[path] = line
            entries.append((path, xy, line))
        with ThreadPoolExecutor(max_workers=8) as pool:
            sizes = list(pool.map(lambda e: _size_or_reason(e[0]), entries))
        samples = []
        for (path, xy, line), size in zip(entries, sizes):
            if isinstance(size, str):
                problems.append((path, size))
                continue
            width, height = size
            outside = [i for i, (x, y) in enumerate(xy) if not (0 <= x <= width and 0 <= y <= height)]
            if outside:
                i = outside[0]
                problems.append(
                    (path, f"point {i} ({xy[i][0]:g}, {xy[i][1]:g}) is outside the {width}x{height} image "
                           f"({csv_path.name} line {line})")
                )
                continue
            samples.append(Sample(path, PointsTarget(xy, (width, height), self.flip_pairs)))
        valid_path = root / self.valid_file if self.valid_file else None
        train, valid, split_problems = split_samples(samples, valid_path, resolver, self.valid_pct, self.seed, problems)
        return train, valid, problems + split_problems

    def edits(self, root: Path) -> RemoveOnlyCsvEdits:
        """Removed images lose their row and valid.txt line and move aside; points are not edited here."""
        return RemoveOnlyCsvEdits(root, self.csv_file, self.folder, self.fn_col, valid_file=self.valid_file,
                                  allow_outside_root=self.allow_outside_root)

    @staticmethod
    def encode(image: np.ndarray, sample: Sample, transform: A.Compose) -> tuple[torch.Tensor, torch.Tensor]:
        target: PointsTarget = sample.target
        x, points, mirrored, extent = frame_points(image, target, transform)
        coords = scale_points(points, x.shape[-1], x.shape[-2])
        if mirrored and target.flip_pairs:
            order = list(range(len(coords)))
            for a, b in target.flip_pairs:
                order[a], order[b] = b, a
            coords = coords[order]
        out = np.concatenate([coords, np.asarray([extent], dtype=np.float64)])
        return x, torch.as_tensor(out, dtype=torch.float32)

    def make_task(self) -> PointsTask:
        self.setup("fit")
        return PointsTask(
            self.num_points, y_range=self.y_range, flip_pairs=[list(p) for p in self.flip_pairs], head=self.head
        )


def _size_or_reason(path: Path) -> tuple[int, int] | str:
    try:
        return image_size(path)
    except LightcycleError as exc:
        return str(exc).split(": ", 1)[-1]
