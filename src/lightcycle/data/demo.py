"""Built-in demo datasets: coloured shapes on textured backgrounds, in the layouts real users have.

The product trains out of the box on this data, so it is generated on first use (no download) into
`<cache>/demo/<task>-v1-seed<seed>`, deterministically from the seed, in a few seconds per task.
Every task is learnable by a small CNN from scratch, but only through the shape itself: colours
are random and never tied to a class, backgrounds carry gradients, blobs, stripes and noise, and
scale, rotation and position vary, so a pipeline that scrambles labels, masks or points cannot
score well.

Layouts (relative to the dataset root):

- classification: ImageFolder, `train/<class>/<class>_<i>.jpg` and `valid/<class>/<class>_<i>.jpg`.
- multilabel: Planet, `labels.csv` (`image_name,tags`, names without extension), `train/train_<i>.jpg`,
  `valid.txt` (names relative to `train/`).
- segmentation: CamVid, `images/<stem>.jpg`, `labels/<stem>_P.png` (palette codes), `codes.txt`
  (`background`, four shapes, `void` last; void marks the antialiased shape boundaries), `valid.txt`.
- points: BIWI-like, `points.csv` (`fname,x0,y0`, the shape's centroid in pixels, pixel centres at
  integer coordinates), `images/<stem>.jpg`, `valid.txt`.

A folder is only ever published complete: it is generated into a temporary sibling, the
`.complete` marker is written last, and the folder is renamed into place, so an interrupted run
never leaves a half-written dataset behind that looks valid; processes that need it at the same
time (DDP ranks, nodes on a shared filesystem) let one of them generate it and wait for it
(lightcycle.publish).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lightcycle.atomic import TEMP_SUFFIX
from lightcycle.cache import cache_root
from lightcycle.publish import publish_once

log = logging.getLogger(__name__)

DEMO_TASKS = ("classification", "multilabel", "segmentation", "points")
SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
SEG_SHAPES = ("circle", "square", "triangle", "star")
SEG_CODES = ("background", *SEG_SHAPES, "void")

VERSION = 1
MARKER = ".complete"
SIZE = 64  # image side in pixels
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-downsampled: antialiased edges, exact coverage
JPEG_QUALITY = 92
VALID_EVERY = 5  # every 5th image is validation: 20%, spread evenly over the generation order
CONTRAST = 60.0  # minimum luminance gap between a shape and the canvas under it (0-255 scale)
STALE_TMP_S = 3600.0  # temporary folders older than this belong to a killed run

CLASSIFICATION_COUNTS = (240, 60)  # train, valid per class
MULTILABEL_COUNT = 1200
SEGMENTATION_COUNT = 800
POINTS_COUNT = 1000

_LUMA = np.array([0.299, 0.587, 0.114])
_GRID = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5  # (y, x) in [-0.5, 0.5]
_SEG_PALETTE = [0, 0, 0, 230, 60, 60, 60, 200, 60, 60, 110, 230, 240, 200, 40, 255, 255, 255]


def _check_task(task: str) -> None:
    if task not in DEMO_TASKS:
        raise ValueError(f"unknown demo task {task!r}; choose one of: {', '.join(DEMO_TASKS)}")


# --- drawing -----------------------------------------------------------------------------------
def _outline(name: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape whose circumscribed circle is (cx, cy, r), rotated by `angle`."""
    if name == "circle":  # a 64-gon: within 0.2% of the radius of a true circle
        t, rho = np.arange(64) * np.pi / 32, np.ones(64)
    elif name == "square":
        t, rho = np.arange(4) * np.pi / 2 + np.pi / 4, np.ones(4)
    elif name == "triangle":
        t, rho = np.arange(3) * 2 * np.pi / 3, np.ones(3)
    elif name == "hexagon":
        t, rho = np.arange(6) * np.pi / 3, np.ones(6)
    elif name == "star":
        t, rho = np.arange(10) * np.pi / 5, np.tile([1.0, 0.45], 5)
    elif name == "cross":
        w = 0.32  # arm half-width; the arm ends' corners lie on the circumscribed circle
        arm = np.sqrt(1 - w * w)
        quarter = [(arm, w), (w, w), (w, arm)]
        rotations = ((1, 0), (0, 1), (-1, 0), (0, -1))
        pts = np.array([(x * c - y * s, x * s + y * c) for c, s in rotations for x, y in quarter])
        t, rho = np.arctan2(pts[:, 1], pts[:, 0]), np.hypot(pts[:, 0], pts[:, 1])
    else:
        raise ValueError(f"no outline for shape {name!r}")
    t = t + angle
    return list(zip(cx + r * rho * np.cos(t), cy + r * rho * np.sin(t)))


def _blob_outline(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """An irregular ellipse: a distractor that is no shape of the vocabulary."""
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ry = r * rng.uniform(0.4, 0.7)
    wobble = 1 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3))
    x, y = r * np.cos(t) * wobble, ry * np.sin(t) * wobble
    a = rng.uniform(0, np.pi)
    return list(zip(cx + x * np.cos(a) - y * np.sin(a), cy + x * np.sin(a) + y * np.cos(a)))


def _coverage(polygon: list[tuple[float, float]]) -> np.ndarray:
    """Fraction of each pixel covered by the polygon, from a 4x drawing box-downsampled.

    Coordinates put pixel centres at integers. PIL fills whole hi-res pixels and floors fractional
    coordinates, so each point goes to its hi-res position (4v + 1.5) rounded (+0.5, floored).
    """
    hi = Image.new("L", (SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), 0)
    offset = (SUPERSAMPLE - 1) / 2 + 0.5
    ImageDraw.Draw(hi).polygon([(SUPERSAMPLE * x + offset, SUPERSAMPLE * y + offset) for x, y in polygon], fill=255)
    # reduce() box-averages in C; a pixel is 255 only if fully covered and 0 only if untouched
    return np.asarray(hi.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


def _background(rng: np.random.Generator) -> np.ndarray:
    """HxWx3 float canvas: smooth gradient + low-frequency blobs + optional stripes."""
    yy, xx = _GRID
    base = rng.uniform(50, 205, 3)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(theta) + yy * np.sin(theta)
    canvas = base + ramp[..., None] * rng.uniform(-50, 50, 3)
    coarse = rng.normal(0, 1, (3, 4, 4)).astype(np.float32)
    smooth = [Image.fromarray(c).resize((SIZE, SIZE), Image.Resampling.BICUBIC) for c in coarse]
    blobs = np.stack([np.asarray(c) for c in smooth], axis=-1)
    canvas += blobs * rng.uniform(4, 12)
    if rng.random() < 0.5:
        phi, period = rng.uniform(0, np.pi), rng.uniform(8, 24)
        along = (SIZE - 1) * (xx * np.cos(phi) + yy * np.sin(phi))  # pixels along the stripes' normal
        wave = np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        canvas += wave[..., None] * rng.uniform(5, 15) * rng.uniform(0.3, 1.0, 3)
    return canvas


def _paint(canvas: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> None:
    """Composite a random colour through `alpha`, far enough in luminance from what lies under it."""
    under = float((canvas[alpha >= 0.5] @ _LUMA).mean()) if (alpha >= 0.5).any() else float((canvas @ _LUMA).mean())
    for _ in range(32):
        colour = rng.uniform(0, 255, 3)
        if abs(colour @ _LUMA - under) >= CONTRAST:
            break
    else:
        colour = np.full(3, 20.0 if under > 128 else 235.0)
    canvas += alpha[..., None] * (colour - canvas)


def _save_jpeg(canvas: np.ndarray, rng: np.random.Generator, path: Path) -> None:
    """Add per-pixel sensor noise and write the JPEG that users would have."""
    noisy = canvas + rng.normal(0, rng.uniform(3, 8), canvas.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)).save(path, quality=JPEG_QUALITY)


def _place(
    rng: np.random.Generator, radii: list[float], min_gap: Callable[[float, float], float]
) -> list[tuple[float, float]]:
    """Centres keeping every circumscribed circle inside the frame and apart by `min_gap(ri, rj)`."""
    for _ in range(200):
        centres: list[tuple[float, float]] = []
        for r in radii:
            for _ in range(50):
                c = rng.uniform(r + 0.5, SIZE - 1.5 - r, 2)
                if all(np.hypot(*(c - p)) >= min_gap(r, radii[j]) for j, p in enumerate(centres)):
                    centres.append((float(c[0]), float(c[1])))
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres
    raise RuntimeError(f"cannot place circles of radii {radii} in a {SIZE}px frame")


def _shape_alpha(rng: np.random.Generator, name: str, radius: float, centre: tuple[float, float]) -> np.ndarray:
    """Coverage of shape `name` at a random rotation."""
    return _coverage(_outline(name, centre[0], centre[1], radius, float(rng.uniform(0, 2 * np.pi))))


# --- one image per task ------------------------------------------------------------------------
def _classification_image(rng: np.random.Generator, name: str, path: Path) -> None:
    """One shape (35-80% of the side) and up to two distractor blobs beside it."""
    canvas = _background(rng)
    r = rng.uniform(0.35, 0.80) * SIZE / 2
    (centre,) = _place(rng, [r], lambda a, b: 0.0)
    _paint(canvas, _shape_alpha(rng, name, r, centre), rng)
    for _ in range(rng.integers(0, 3)):
        rb = rng.uniform(0.12, 0.20) * SIZE / 2
        for _ in range(20):
            c = rng.uniform(rb + 0.5, SIZE - 1.5 - rb, 2)
            if np.hypot(c[0] - centre[0], c[1] - centre[1]) >= r + rb + 1.5:
                _paint(canvas, _coverage(_blob_outline(rng, float(c[0]), float(c[1]), rb)), rng)
                break
    _save_jpeg(canvas, rng, path)


def _multilabel_image(rng: np.random.Generator, path: Path) -> list[str]:
    """1-3 distinct, non-overlapping shapes (25-45% of the side); returns their sorted names."""
    canvas = _background(rng)
    names = [SHAPES[i] for i in rng.choice(len(SHAPES), size=rng.integers(1, 4), replace=False)]
    radii = list(rng.uniform(0.25, 0.45, len(names)) * SIZE / 2)
    centres = _place(rng, radii, lambda a, b: a + b + 1.5)
    for name, r, c in zip(names, radii, centres):
        _paint(canvas, _shape_alpha(rng, name, r, c), rng)
    _save_jpeg(canvas, rng, path)
    return sorted(names)


def _segmentation_image(rng: np.random.Generator, image_path: Path, mask_path: Path) -> None:
    """1-3 shapes (25-50% of the side) that may overlap a little; mask codes with a void boundary.

    Each layer's share of every pixel is tracked through the compositing: a pixel made of one
    region only gets that region's code, a mixed (antialiased) pixel gets void.
    """
    for _ in range(100):
        canvas = _background(rng)
        codes = list(rng.integers(1, len(SEG_SHAPES) + 1, rng.integers(1, 4)))
        radii = list(rng.uniform(0.25, 0.50, len(codes)) * SIZE / 2)
        centres = _place(rng, radii, lambda a, b: 0.8 * (a + b))
        share = [np.ones((SIZE, SIZE), np.float32)]  # background first, then each shape in drawing order
        full = []
        for code, r, c in zip(codes, radii, centres):
            alpha = _shape_alpha(rng, SEG_SHAPES[code - 1], r, c)
            _paint(canvas, alpha, rng)
            share = [s * (1 - alpha) for s in share] + [alpha]
            full.append(int((alpha == 1).sum()))
        share_arr = np.stack(share)
        owner = share_arr.argmax(axis=0)
        pure = share_arr.max(axis=0) >= 1 - 1e-6
        visible = [int(((owner == k + 1) & pure).sum()) for k in range(len(codes))]
        if all(v >= 0.6 * f for v, f in zip(visible, full)):
            break
    else:
        raise RuntimeError("cannot lay out a segmentation image with every shape visible")
    mask = np.asarray([0, *codes], dtype=np.uint8)[owner]
    mask[~pure] = len(SEG_CODES) - 1
    _save_jpeg(canvas, rng, image_path)
    img = Image.fromarray(mask)
    img.putpalette(_SEG_PALETTE)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(mask_path)


def _points_image(rng: np.random.Generator, path: Path) -> tuple[float, float]:
    """One shape (30-55% of the side), fully inside, centre in the central ~70%; returns its centroid.

    Every shape of the vocabulary is point-symmetric or regular, so its centroid is the centre
    of its circumscribed circle.
    """
    canvas = _background(rng)
    name = SHAPES[rng.integers(len(SHAPES))]
    r = rng.uniform(0.30, 0.55) * SIZE / 2
    lo, hi = max(0.15 * SIZE, r + 0.5), min(0.85 * SIZE, SIZE - 1.5 - r)
    centre = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    _paint(canvas, _shape_alpha(rng, name, r, centre), rng)
    _save_jpeg(canvas, rng, path)
    return centre


# --- layouts -----------------------------------------------------------------------------------
def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _is_valid(i: int) -> bool:
    return i % VALID_EVERY == VALID_EVERY - 1


def _generate_classification(root: Path, seed: int) -> None:
    n_train, n_valid = CLASSIFICATION_COUNTS
    for k, name in enumerate(SHAPES):
        for i in range(n_train + n_valid):
            split = "train" if i < n_train else "valid"
            rng = np.random.default_rng([seed, 0, k * (n_train + n_valid) + i])
            _classification_image(rng, name, root / split / name / f"{name}_{i}.jpg")


def _generate_multilabel(root: Path, seed: int) -> None:
    rows, valid = [], []
    for i in range(MULTILABEL_COUNT):
        tags = _multilabel_image(np.random.default_rng([seed, 1, i]), root / "train" / f"train_{i}.jpg")
        rows.append([f"train_{i}", " ".join(tags)])
        if _is_valid(i):
            valid.append(f"train_{i}.jpg")
    _write_csv(root / "labels.csv", ["image_name", "tags"], rows)
    _write_lines(root / "valid.txt", valid)


def _generate_segmentation(root: Path, seed: int) -> None:
    valid = []
    for i in range(SEGMENTATION_COUNT):
        stem = f"shapes_{i:04d}"
        rng = np.random.default_rng([seed, 2, i])
        _segmentation_image(rng, root / "images" / f"{stem}.jpg", root / "labels" / f"{stem}_P.png")
        if _is_valid(i):
            valid.append(f"{stem}.jpg")
    _write_lines(root / "codes.txt", list(SEG_CODES))
    _write_lines(root / "valid.txt", valid)


def _generate_points(root: Path, seed: int) -> None:
    rows, valid = [], []
    for i in range(POINTS_COUNT):
        fname = f"shape_{i:04d}.jpg"
        x, y = _points_image(np.random.default_rng([seed, 3, i]), root / "images" / fname)
        rows.append([fname, f"{x:.2f}", f"{y:.2f}"])
        if _is_valid(i):
            valid.append(fname)
    _write_csv(root / "points.csv", ["fname", "x0", "y0"], rows)
    _write_lines(root / "valid.txt", valid)


_GENERATORS: dict[str, Callable[[Path, int], None]] = {
    "classification": _generate_classification,
    "multilabel": _generate_multilabel,
    "segmentation": _generate_segmentation,
    "points": _generate_points,
}


# --- cache -------------------------------------------------------------------------------------
def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and p.name != MARKER)


def _is_complete(root: Path, task: str, seed: int) -> bool:
    """True when `root` holds a finished dataset: its marker matches and no file has gone missing."""
    try:
        marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = {"version": VERSION, "task": task, "seed": seed}
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in expected.items()):
        return False
    return marker.get("files") == _count_files(root)


def generate_demo(task: str, root: str | Path, seed: int = 0) -> None:
    """Write the demo dataset of `task` into `root` (absent or empty), the `.complete` marker last."""
    _check_task(task)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; the demo data is only generated into a new folder")
    root.mkdir(parents=True, exist_ok=True)
    _GENERATORS[task](root, seed)
    marker = {"version": VERSION, "task": task, "seed": seed, "files": _count_files(root)}
    (root / MARKER).write_text(json.dumps(marker), encoding="utf-8")


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Delete temporary folders that a killed run left behind (live ones of racing ranks are young)."""
    for p in parent.glob(f".{name}.*{TEMP_SUFFIX}"):
        try:
            if time.time() - p.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def is_demo_root(path: str | Path) -> bool:
    """Whether `path` is a demo folder generated into a cache: `demo_root` rebuilds it from scratch as
    soon as its files change, so nothing there should be edited in place (copy it first)."""
    path = Path(path)
    return path.parent.name == "demo" and (path / MARKER).is_file() and re.fullmatch(r"\w+-v\d+-seed\d+", path.name) is not None


def demo_root(task: str, cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Return the root folder of the demo dataset for `task`, generating it first if absent or incomplete.

    Safe for several processes at once (DDP ranks, nodes on a shared filesystem): one of them
    generates it (`lightcycle.publish.publish_once`), the others wait and then read the published folder.
    """
    _check_task(task)
    parent = cache_root(cache_dir) / "demo"
    final = parent / f"{task}-v{VERSION}-seed{seed}"
    if _is_complete(final, task, seed):
        return final
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(parent, final.name)

    def generate(tmp: Path) -> None:
        log.info("generating the %s demo data (seed %d) into %s", task, seed, final)
        generate_demo(task, tmp, seed)

    return publish_once(final, generate, is_complete=lambda p: _is_complete(p, task, seed), what=f"the {task} demo data")
