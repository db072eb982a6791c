"""Real-photo benchmark folders built offline from the photographs that ship inside pip packages.

No photo dataset can be downloaded on the benchmark machine, but scikit-image, scikit-learn and
matplotlib ship a dozen real colour photographs (an astronaut, a cat, coffee, a rocket, a motorcycle,
a deep-field image, a retina, a stained tissue slide, a Chinese temple, a flower, Grace Hopper) and
real greyscale textures (brick, grass, gravel). From them this script writes an ImageFolder that a
pretrained model has to generalise on:

- one class per photograph;
- every image is a random crop of its photograph, resized to a non-square 320x240 JPEG (photo
  aspect, so framing matters: squishing to a square distorts it);
- training crops come from the left 62 % of each photograph and validation crops from the right
  38 %, so validation images show parts of the scene the model never saw.

    python bench/photos.py OUT [--train 60 --valid 20 --width 320 --height 240 --seed 0]

`textures()` returns the greyscale texture photos for benchmarks that need photo-like backgrounds.
Needs the bench extra (`pip install -e ".[bench]"`: scikit-image).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_AT = 0.62  # training crops left of this fraction of the width, validation crops right of it
VERSION = 1


def photographs() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 RGB photograph, from the files inside installed packages (no download)."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    photos: dict[str, np.ndarray] = {
        "astronaut": sk.astronaut(),
        "cat": sk.chelsea(),
        "coffee": sk.coffee(),
        "rocket": sk.rocket(),
        "deep_field": sk.hubble_deep_field(),
        "retina": sk.retina(),
        "tissue": sk.immunohistochemistry(),
        "motorcycle": sk.stereo_motorcycle()[0],
    }
    for name, image in zip(("temple", "flower"), load_sample_images().images):
        photos[name] = image
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photos["portrait"] = np.asarray(Image.open(f).convert("RGB"))
    return {k: np.ascontiguousarray(v[..., :3]).astype(np.uint8) for k, v in photos.items()}


def textures() -> dict[str, np.ndarray]:
    """name -> HxW uint8 greyscale texture photograph (brick, grass, gravel)."""
    import skimage.data as sk

    return {"brick": sk.brick(), "grass": sk.grass(), "gravel": sk.gravel()}


def random_crop(photo: np.ndarray, x_range: tuple[float, float], rng: np.random.Generator, aspect: float) -> np.ndarray:
    """A crop of `photo` inside the horizontal band `x_range` (fractions of the width), about `aspect` w/h."""
    height, width = photo.shape[:2]
    x0, x1 = int(x_range[0] * width), int(x_range[1] * width)
    band = x1 - x0
    crop_w = int(band * rng.uniform(0.45, 0.95))
    crop_h = min(height, int(crop_w / (aspect * rng.uniform(0.85, 1.15))))
    crop_w = min(crop_w, band)
    left = x0 + int(rng.integers(0, band - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return photo[top : top + crop_h, left : left + crop_w]


def write_folder(out: Path, n_train: int, n_valid: int, width: int, height: int, seed: int) -> Path:
    """Write `out/train/<class>/*.jpg` and `out/valid/<class>/*.jpg`; returns `out`."""
    marker = out / "photos.json"
    settings = {"version": VERSION, "train": n_train, "valid": n_valid, "width": width, "height": height, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return out
    rng = np.random.default_rng(seed)
    for name, photo in photographs().items():
        for split, n, band in (("train", n_train, (0.0, SPLIT_AT)), ("valid", n_valid, (SPLIT_AT, 1.0))):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                crop = random_crop(photo, band, rng, width / height)
                image = Image.fromarray(crop).resize((width, height), Image.Resampling.BICUBIC)
                image.save(folder / f"{name}_{i:04d}.jpg", quality=88)
    marker.write_text(json.dumps(settings))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=60, help="training images per class")
    parser.add_argument("--valid", type=int, default=20, help="validation images per class")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = write_folder(args.out, args.train, args.valid, args.width, args.height, args.seed)
    classes = sorted(p.name for p in (out / "train").iterdir())
    print(f"{out}: {len(classes)} classes ({', '.join(classes)}), {args.train}/{args.valid} images each")


if __name__ == "__main__":
    main()
