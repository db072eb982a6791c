"""The data sets of bench/task_defaults.py: every task's demo and a harder variant made from photographs.

Each set is written in its task's own layout (the one `data=<task>` reads) with a fixed validation
split, so lightcycle and fastai train and score on exactly the same files.

The demo sets are lightcycle's built-in ones (64 px shapes on textures), cut to `n_train` / `n_valid`
images (every k-th, so classes and tags stay represented). The harder variants are generated offline
from the photographs and greyscale texture photos that bench/photos.py finds inside installed packages:

- classification `photos_imbalanced`: one class per photograph (11), non-square 320x240 crops,
  training counts falling geometrically from `most` to `most / 10` per class (10x imbalance), a
  balanced validation set; validation crops come from a part of each photograph training never saw.
- multilabel `photo_tags`: non-square 160x120 tinted texture photos with 1-3 small photo patches
  (blobs 15-30% of the height across); the tags are the patches' photographs, their frequencies
  falling from 1 in 2 to 1 in 14.
- segmentation `photo_camvid`: 160x120 tinted textures, 1-3 small photo-filled blobs of 3 classes;
  background is about 85% of the pixels, and only 160 training images (CamVid's scale of problem).
- points `photo_headpose`: the portrait's head pasted at a random place, size and mirroring on a
  tinted texture with 1-2 distractor photo patches; the point is the nose (head-pose style).

Training images take their texture and photo crops from the left 62% of each photograph, validation
images from the right 38%, so validation shows scenes and backgrounds never trained on.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import photos

VERSION = 1
WIDTH, HEIGHT = 160, 120  # non-square, photo aspect
TRAIN_BAND, VALID_BAND = (0.0, photos.SPLIT_AT), (photos.SPLIT_AT, 1.0)
SEG_CLASSES = ("cat", "flower", "coffee")
TAGS = ("cat", "flower", "coffee", "astronaut", "rocket", "temple", "tissue", "motorcycle")
# Head crop of the portrait (left, top, right, bottom) and the nose inside it, in the photo's pixels.
HEAD_BOX = (150, 20, 380, 350)
NOSE = (265.0, 235.0)


# --- drawing --------------------------------------------------------------------------------------
def texture_canvas(rng: np.random.Generator, band: tuple[float, float]) -> np.ndarray:
    """A WIDTHxHEIGHT RGB background: a crop of a texture photograph, tinted and offset at random."""
    textures = photos.textures()
    texture = textures[sorted(textures)[int(rng.integers(len(textures)))]].astype(np.float32)
    crop = photos.random_crop(texture, band, rng, WIDTH / HEIGHT)
    grey = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR), np.float32)
    tint, offset = rng.uniform(0.35, 1.0, 3), rng.uniform(0, 90, 3)
    return np.clip(grey[..., None] * tint + offset, 0, 255)


def blob_alpha(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    """HEIGHTxWIDTH coverage in [0, 1] of a wobbly round blob (drawn at 4x, averaged down: soft edges)."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = 1 + sum(rng.uniform(-0.15, 0.15) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3))
    squash = rng.uniform(0.75, 1.0)
    xs, ys = cx + r * wobble * np.cos(t), cy + r * squash * wobble * np.sin(t)
    big = Image.new("L", (WIDTH * 4, HEIGHT * 4), 0)
    ImageDraw.Draw(big).polygon([(4 * x, 4 * y) for x, y in zip(xs, ys)], fill=255)
    return np.asarray(big.resize((WIDTH, HEIGHT), Image.Resampling.BOX), np.float32) / 255


def photo_fill(rng: np.random.Generator, photo: np.ndarray, band: tuple[float, float], r: float) -> np.ndarray:
    """A crop of `photo` resized to cover a blob of radius `r` anywhere: WIDTHxHEIGHT RGB (float)."""
    crop = photos.random_crop(photo, band, rng, 1.0)
    side = max(4, int(2 * r + 4))
    patch = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BILINEAR), np.float32)
    return np.tile(patch, (HEIGHT // side + 2, WIDTH // side + 2, 1))[:HEIGHT, :WIDTH]


def paste(canvas: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> None:
    canvas *= 1 - alpha[..., None]
    canvas += layer * alpha[..., None]


def shifted(layer: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """`layer` rolled so its top-left tile corner sits at the blob's corner (the patch lands on it)."""
    return np.roll(layer, (int(cy - r), int(cx - r)), axis=(0, 1))


def centre(rng: np.random.Generator, r: float) -> tuple[float, float]:
    return float(rng.uniform(r, WIDTH - r)), float(rng.uniform(r, HEIGHT - r))


def save_jpeg(canvas: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(path, quality=90)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# --- the harder variants -----------------------------------------------------------------------------
def photos_imbalanced(out: Path, most: int, valid: int, seed: int) -> None:
    """ImageFolder train/<photo>/*.jpg (counts `most` down to most/10), valid/<photo>/*.jpg (`valid` each)."""
    rng = np.random.default_rng(seed)
    names = sorted(photos.photographs())
    counts = np.round(most * 0.1 ** (np.arange(len(names)) / (len(names) - 1))).astype(int).clip(2)
    for name, n_train in zip(names, counts):
        photo = photos.photographs()[name]
        for split, n, band in (("train", int(n_train), TRAIN_BAND), ("valid", valid, VALID_BAND)):
            for i in range(n):
                crop = photos.random_crop(photo, band, rng, 320 / 240)
                image = Image.fromarray(crop).resize((320, 240), Image.Resampling.BICUBIC)
                (out / split / name).mkdir(parents=True, exist_ok=True)
                image.save(out / split / name / f"{name}_{i:03d}.jpg", quality=88)


def photo_tags(out: Path, n_train: int, n_valid: int, seed: int) -> None:
    """Planet layout: labels.csv (image_name,tags), train/*.jpg, valid.txt."""
    pics = photos.photographs()
    freq = 0.5 * (1 / 7) ** (np.arange(len(TAGS)) / (len(TAGS) - 1))  # 1 in 2 ... 1 in 14
    rows, valid = [], []
    for i in range(n_train + n_valid):
        rng = np.random.default_rng([seed, 1, i])
        band = TRAIN_BAND if i < n_train else VALID_BAND
        chosen = [t for t, p in zip(TAGS, freq) if rng.random() < p][:3] or [TAGS[int(rng.integers(len(TAGS)))]]
        canvas = texture_canvas(rng, band)
        for tag in chosen:
            r = float(rng.uniform(0.08, 0.15) * HEIGHT)
            cx, cy = centre(rng, r)
            paste(canvas, shifted(photo_fill(rng, pics[tag], band, r), cx, cy, r), blob_alpha(rng, cx, cy, r))
        name = f"tags_{i:04d}"
        save_jpeg(canvas, out / "train" / f"{name}.jpg")
        rows.append([name, " ".join(sorted(chosen))])
        if i >= n_train:
            valid.append(f"{name}.jpg")
    write_csv(out / "labels.csv", ["image_name", "tags"], rows)
    write_lines(out / "valid.txt", valid)


def photo_camvid(out: Path, n_train: int, n_valid: int, seed: int) -> None:
    """CamVid layout: images/*.jpg, labels/<stem>_P.png (codes), codes.txt, valid.txt."""
    pics = photos.photographs()
    valid = []
    for i in range(n_train + n_valid):
        rng = np.random.default_rng([seed, 2, i])
        band = TRAIN_BAND if i < n_train else VALID_BAND
        canvas = texture_canvas(rng, band)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(SEG_CLASSES)))
            r = float(rng.uniform(0.12, 0.24) * HEIGHT)
            cx, cy = centre(rng, r)
            alpha = blob_alpha(rng, cx, cy, r)
            paste(canvas, shifted(photo_fill(rng, pics[SEG_CLASSES[k]], band, r), cx, cy, r), alpha)
            mask[alpha >= 0.5] = k + 1
        stem = f"scene_{i:04d}"
        save_jpeg(canvas, out / "images" / f"{stem}.jpg")
        (out / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").save(out / "labels" / f"{stem}_P.png")
        if i >= n_train:
            valid.append(f"{stem}.jpg")
    write_lines(out / "codes.txt", ["background", *SEG_CLASSES])
    write_lines(out / "valid.txt", valid)


def photo_headpose(out: Path, n_train: int, n_valid: int, seed: int) -> None:
    """BIWI layout: points.csv (fname,x0,y0 in pixels), images/*.jpg, valid.txt."""
    pics = photos.photographs()
    left, top, right, bottom = HEAD_BOX
    head = pics["portrait"][top:bottom, left:right].astype(np.float32)
    distractors = [n for n in sorted(pics) if n != "portrait"]
    rows, valid = [], []
    for i in range(n_train + n_valid):
        rng = np.random.default_rng([seed, 3, i])
        band = TRAIN_BAND if i < n_train else VALID_BAND
        canvas = texture_canvas(rng, band)
        for _ in range(int(rng.integers(1, 3))):
            r = float(rng.uniform(0.08, 0.16) * HEIGHT)
            cx, cy = centre(rng, r)
            pic = pics[distractors[int(rng.integers(len(distractors)))]]
            paste(canvas, shifted(photo_fill(rng, pic, band, r), cx, cy, r), blob_alpha(rng, cx, cy, r))
        h = float(rng.uniform(0.35, 0.65) * HEIGHT)
        w = h * (right - left) / (bottom - top)
        x0, y0 = float(rng.uniform(0, WIDTH - w)), float(rng.uniform(0, HEIGHT - h))
        mirror = bool(rng.random() < 0.5)
        patch = head[:, ::-1] if mirror else head
        patch = np.asarray(Image.fromarray(patch.astype(np.uint8)).resize((round(w), round(h)), Image.Resampling.BILINEAR), np.float32)
        patch = patch * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
        layer = np.zeros_like(canvas)
        ix, iy = int(round(x0)), int(round(y0))
        layer[iy : iy + patch.shape[0], ix : ix + patch.shape[1]] = patch[: HEIGHT - iy, : WIDTH - ix]
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
        ellipse = ((xx - ix - w / 2) / (w / 2)) ** 2 + ((yy - iy - h / 2) / (h / 2)) ** 2 <= 1
        paste(canvas, layer, ellipse.astype(np.float32))
        nx = (NOSE[0] - left) / (right - left)
        nose_x = ix + (1 - nx if mirror else nx) * patch.shape[1]
        nose_y = iy + (NOSE[1] - top) / (bottom - top) * patch.shape[0]
        fname = f"head_{i:04d}.jpg"
        save_jpeg(canvas, out / "images" / fname)
        rows.append([fname, f"{nose_x:.2f}", f"{nose_y:.2f}"])
        if i >= n_train:
            valid.append(fname)
    write_csv(out / "points.csv", ["fname", "x0", "y0"], rows)
    write_lines(out / "valid.txt", valid)


# --- demo sets, cut -------------------------------------------------------------------------------
def demo_cut(task: str, out: Path, n_train: int, n_valid: int, seed: int) -> None:
    """The built-in demo of `task`, every k-th training and validation image (symlinks, same layout)."""
    from lightcycle.data.demo import demo_root

    root = demo_root(task, None)
    if task == "classification":
        for split, n in (("train", n_train), ("valid", n_valid)):
            classes = sorted(p for p in (root / split).iterdir() if p.is_dir())
            for cls in classes:
                files = sorted(cls.iterdir())
                keep = files[:: max(1, len(files) // max(1, n // len(classes)))][: max(1, n // len(classes))]
                (out / split / cls.name).mkdir(parents=True, exist_ok=True)
                for f in keep:
                    os.symlink(f, out / split / cls.name / f.name)
        return
    folder = {"multilabel": "train", "segmentation": "images", "points": "images"}[task]
    valid_names = set((root / "valid.txt").read_text().split())
    names = sorted(p.name for p in (root / folder).iterdir())
    train = [n for n in names if n not in valid_names]
    valid = sorted(valid_names)
    train, valid = train[:: max(1, len(train) // n_train)][:n_train], valid[:: max(1, len(valid) // n_valid)][:n_valid]
    (out / folder).mkdir(parents=True)
    for name in train + valid:
        os.symlink(root / folder / name, out / folder / name)
    write_lines(out / "valid.txt", valid)
    if task == "segmentation":
        (out / "labels").mkdir()
        for name in train + valid:
            mask = f"{Path(name).stem}_P.png"
            os.symlink(root / "labels" / mask, out / "labels" / mask)
        os.symlink(root / "codes.txt", out / "codes.txt")
    else:
        csv_name = "labels.csv" if task == "multilabel" else "points.csv"
        keep = {Path(n).stem for n in train + valid} | set(train + valid)
        with (root / csv_name).open() as f:
            lines = f.read().splitlines()
        (out / csv_name).write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.split(",")[0] in keep]) + "\n")


def train_count(root: Path) -> int:
    """Training images of a set in any of the layouts above (all images but those of valid/ or valid.txt)."""
    if (root / "valid").is_dir():
        return sum(1 for p in (root / "train").rglob("*") if p.is_file())
    folder = next(root / f for f in ("train", "images") if (root / f).is_dir())
    valid = set((root / "valid.txt").read_text().split())
    return sum(1 for p in folder.iterdir() if p.name not in valid)


GENERATORS: dict[str, Callable[..., None]] = {
    "photos_imbalanced": photos_imbalanced,
    "photo_tags": photo_tags,
    "photo_camvid": photo_camvid,
    "photo_headpose": photo_headpose,
}


def build(kind: str, out: Path, **settings: int) -> Path:
    """Write set `kind` (a GENERATORS name or `demo:<task>`) into `out` once; returns `out`."""
    marker = out / "set.json"
    wanted = {"version": VERSION, "kind": kind, **settings}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return out
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    if kind.startswith("demo:"):
        demo_cut(kind.split(":", 1)[1], out, **settings)
    else:
        GENERATORS[kind](out, **settings)
    marker.write_text(json.dumps(wanted))
    return out
