"""Files written beside a prediction table, one per image (segmentation's mask PNGs), named after it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightcycle.atomic import atomic_path


def _palette(n: int) -> list[int]:
    """A fixed, distinct colour per code index (values stay code indices: the PNG reads back as a mask)."""
    rng = np.random.default_rng(0)
    colours = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
    colours += [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, 256 - len(colours)))]
    return [c for rgb in colours[:256] for c in rgb]


def mask_image(mask: torch.Tensor, num_classes: int) -> Image.Image:
    """Code indices as a palette image (or 16-bit greyscale beyond 256 codes), like CamVid's masks."""
    arr = mask.cpu().numpy()
    if num_classes <= 256:
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette(_palette(num_classes))
    else:
        img = Image.fromarray(arr.astype(np.uint16))
    return img


def save_mask(mask: torch.Tensor, path: Path, num_classes: int) -> None:
    """The mask as a PNG file (`mask_image`), written atomically."""
    img = mask_image(mask, num_classes)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


class SideFiles:
    """Files written beside a prediction table, one per image, named after the image.

    A name's folders are kept (`a/b.jpg` -> `<folder>/a/b_P.png`), names that would leave the folder
    are flattened, and two images with one stem (a.jpg, a.png) get distinct files.
    """

    def __init__(self, folder: Path, output: Path) -> None:
        self.folder, self.output = folder, output
        self.used: set[Path] = set()

    def reserve(self, name: str, suffix: str) -> Path:
        """A fresh path for the side file of image `name`, ending in `suffix` (e.g. `_P.png`)."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            rel = Path(rel.name)
        path = self.folder / rel.parent / f"{rel.stem}{suffix}"
        k = 1
        while path in self.used:  # a.jpg and a.png in one folder
            path = self.folder / rel.parent / f"{rel.stem}-{k}{suffix}"
            k += 1
        self.used.add(path)
        return path

    def relative(self, path: Path) -> str:
        """`path` as the table names it: relative to the output file's folder, with forward slashes."""
        return Path(os.path.relpath(path, self.output.parent)).as_posix()

    def mask(self, name: str, mask: torch.Tensor, num_classes: int) -> str:
        """Save image `name`'s mask as `{stem}_P.png`; returns its path relative to the output."""
        path = self.reserve(name, "_P.png")
        save_mask(mask, path, num_classes)
        return self.relative(path)
