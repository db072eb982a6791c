"""Reading images safely, and finding the ones that cannot be read, before training starts.

A bad file found by a DataLoader worker surfaces as a traceback from inside PIL in another process;
finding every bad file once at setup lets us name them all in one message instead.

Images are untrusted input: every decode first checks the pixel count from the header against
`max_pixels` (default: PIL's own limit), so a small file that would inflate to gigabytes
(a decompression bomb) is refused with an error naming it, before any pixel is decoded. PIL's
DecompressionBombWarning is turned into an error too.

The check before training decodes every file, but it needs to know only that a file decodes, not its
RGB pixels: it decodes in the file's own mode (1 byte a pixel for bilevel, grey and palette scans,
where RGB would take 4), JPEGs at 1/8 scale (libjpeg still reads every byte, so truncation and
corrupt data are found alike), converts only a corner to RGB (that the mode converts is what can
fail), and runs as many decodes at once as fit a memory budget (`DECODE_BUDGET_BYTES`), so a folder
of huge images decodes one or two at a time while small ones use every core.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import threading
import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lightcycle.errors import LightcycleError


class CheckCache(Protocol):
    """Files checked before (data/verified.py's `VerifiedFiles`, which builds on this module)."""

    def unverified(self, paths: Sequence[Path], pool: Executor | None = None) -> list[Path]: ...

    def update(self, good: Sequence[Path], bad: Sequence[Path] = ()) -> None: ...


log = logging.getLogger(__name__)

# A warning is not a guard: PIL's "could be decompression bomb" warning becomes an exception in any
# process that reads images through lightcycle (the size check below does not depend on it).
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
BAD_POLICIES: tuple[str, ...] = ("error", "skip")
# Decoded bytes the check holds at once (256 Mpixel of PIL's 4-byte RGB): one image bigger than this
# decodes alone, small ones decode on every core.
DECODE_BUDGET_BYTES = 1 << 30
_CORNER = 32  # pixels a side of the corner converted to RGB to prove the mode converts


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, the way a person would see the picture."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit greyscale: 0..65535 -> 0..255, as a viewer shows it (a dark 16-bit scan stays dark)
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "I":
        # 32-bit integers: 16-bit data unless every value fits in 8 bits
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else 255.0)
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent areas of icons and logos are white to a viewer, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel cap in force: `max_pixels`, or PIL's `Image.MAX_IMAGE_PIXELS` when None.

    A cap above PIL's raises PIL's own limit to match (the user asked for bigger images), so PIL
    does not refuse what lightcycle allows.
    """
    if max_pixels is None:
        return int(Image.MAX_IMAGE_PIXELS or 0) or 2**62
    max_pixels = int(max_pixels)
    if max_pixels < 1:
        raise LightcycleError(f"data.max_pixels must be a positive number of pixels, got {max_pixels}")
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    return max_pixels


def _check_pixels(img: Image.Image, limit: int) -> None:
    width, height = img.size
    if width * height > limit:
        raise _TooLarge(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of {limit} "
            "(data.max_pixels; a decompression bomb?)"
        )


class _TooLarge(Exception):
    pass


class ImageTooLarge(LightcycleError):
    """An image refused from its header for having more pixels than the limit (`data.max_pixels`)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _TooLarge):
        return str(exc)
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a possible decompression bomb ({exc})"
    if isinstance(exc, UnidentifiedImageError):  # PIL's message repeats the path
        return "UnidentifiedImageError: cannot identify image file (not an image, or a format PIL cannot decode)"
    return f"{type(exc).__name__}: {exc}"


def _decode(path: str | os.PathLike, limit: int, decode_size: int | None = None) -> np.ndarray:
    with Image.open(path) as img:
        _check_pixels(img, limit)
        if decode_size and img.format == "JPEG":  # scale 1/2, 1/4 or 1/8 with both sides >= decode_size
            img.draft(img.mode, (int(decode_size), int(decode_size)))
        if img.getexif().get(0x0112, 1) != 1:  # rotated: exif_transpose copies, so only then
            img = ImageOps.exif_transpose(img)
        # convert("RGB") of RGB is a copy; np.array (not asarray) so the pixels are writable for torch
        return np.array(img if img.mode == "RGB" else _to_rgb(img))


def load_image(path: str | os.PathLike, max_pixels: int | None = None, decode_size: int | None = None) -> np.ndarray:
    """Decode `path` into an HxWx3 uint8 array, upright per its EXIF orientation.

    Images with more than `max_pixels` pixels (default: PIL's limit, about 89 million) are refused
    from the header, before decoding. `decode_size`: a JPEG at least twice as large on both sides
    decodes at the largest reduced scale (libjpeg's 1/2, 1/4, 1/8) that keeps both sides at least
    this long, several times faster than a full decode. Raises LightcycleError naming the file when
    it cannot be decoded.
    """
    limit = pixel_limit(max_pixels)
    try:
        return _decode(path, limit, decode_size)
    except LightcycleError:
        raise
    except _TooLarge as exc:
        raise ImageTooLarge(f"{path}: {exc}") from None
    except Exception as exc:  # PIL raises many types: OSError, SyntaxError, ValueError, DecompressionBombError
        raise LightcycleError(f"{path}: cannot read image ({_describe(exc)})") from exc


def load_image_bytes(data: bytes, name: str = "upload", max_pixels: int | None = None) -> np.ndarray:
    """`load_image` for an image held in memory (an upload): the same header check, EXIF rotation and
    conversion to RGB as training's decoding, errors naming `name`."""
    if not data:
        raise LightcycleError(f"{name}: empty file")
    limit = pixel_limit(max_pixels)
    try:
        return _decode(io.BytesIO(data), limit)
    except (_TooLarge, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{name}: {_describe(exc)}") from None
    except Exception as exc:
        raise LightcycleError(f"{name}: cannot read image ({_describe(exc)})") from None


class DecodeBudget:
    """Bytes of decoded pixels that may be held at once, shared by the threads of one check.

    A reservation larger than the whole budget is cut to the budget, so a huge image waits until it
    can decode alone instead of waiting forever.
    """

    def __init__(self, total: int = DECODE_BUDGET_BYTES) -> None:
        self.total = max(1, int(total))
        self.used = 0
        self.peak = 0  # the most reserved at once: what tests and benchmarks look at
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        nbytes = min(max(0, int(nbytes)), self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + nbytes <= self.total)
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def _bytes_per_pixel(mode: str) -> int:
    """What PIL stores per pixel in memory: 1 for 1-bit, grey and palette, 2 for 16-bit, else 4."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _verify(path: str | os.PathLike, limit: int, budget: DecodeBudget | None) -> None:
    """Raise what `load_image` would raise for `path`, holding far fewer decoded bytes than it does.

    The whole file is decoded (PIL's `verify()` misses truncation), in its own mode and, for JPEG,
    at 1/8 scale; the EXIF rotation is applied; a corner is converted to RGB the way `load_image`
    converts, which proves the mode converts.
    """
    with Image.open(path) as img:
        _check_pixels(img, limit)
        if img.format == "JPEG":
            img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
        width, height = img.size
        cost = 2 * width * height * _bytes_per_pixel(img.mode)  # the decode, and a rotated copy
        with budget.reserve(cost) if budget is not None else contextlib.nullcontext():
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            corner = _to_rgb(img.crop((0, 0, min(img.size[0], _CORNER), min(img.size[1], _CORNER))))
    if corner.size[0] < 1 or corner.size[1] < 1:
        raise ValueError("image has no pixels")


def check_image(
    path: str | os.PathLike, max_pixels: int | None = None, budget: DecodeBudget | None = None
) -> str | None:
    """Return why `path` is not a usable image, or None when `load_image` will read it.

    Every byte is decoded, the EXIF rotation applied and the conversion to RGB tried, so a file
    that passes cannot fail later in a DataLoader worker, and a truncated file, which
    `Image.verify()` would miss, is caught. `budget` bounds the decoded bytes held at once across
    threads (see `find_bad_images`).
    """
    limit = pixel_limit(max_pixels)
    try:
        if os.path.isdir(path):
            return "a folder, not an image file"
        if os.path.getsize(path) == 0:
            return "empty file"
        _verify(path, limit, budget)
    except Exception as exc:
        return _describe(exc)
    return None


def default_check_workers() -> int:
    """Threads of the check: one per core (PIL releases the GIL while decoding)."""
    return os.cpu_count() or 1


def find_bad_images(
    paths: Sequence[Path],
    workers: int | None = None,
    max_pixels: int | None = None,
    cache: CheckCache | None = None,
    budget_bytes: int = DECODE_BUDGET_BYTES,
) -> list[tuple[Path, str]]:
    """Decode every image once and list the bad ones, as (path, reason) in the order given.

    `workers` threads (default: one per core) share a `budget_bytes` budget of decoded pixels.
    With a `cache` (`VerifiedFiles`), files it verified before, unchanged since, are not decoded
    again, and the files found good now are added to it.
    """
    unique = list(dict.fromkeys(paths))
    pixel_limit(max_pixels)  # validate, and raise PIL's limit before the threads start
    workers = default_check_workers() if workers is None else max(1, int(workers))
    budget = DecodeBudget(budget_bytes)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        todo = cache.unverified(unique, pool) if cache is not None else unique
        reasons = list(pool.map(lambda p: check_image(p, max_pixels, budget), todo))
    bad = [(p, r) for p, r in zip(todo, reasons) if r is not None]
    if cache is not None:
        cache.update(good=[p for p, r in zip(todo, reasons) if r is None], bad=[p for p, _ in bad])
    return bad


_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as `load_image` will return the picture (EXIF rotation applied), header only.

    Raises LightcycleError naming the file when it cannot be opened.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except Exception as exc:
        raise LightcycleError(f"{path}: cannot read image ({_describe(exc)})") from exc
    return width, height


# --- lightcycle-data verify: find, move or delete the images that cannot be read ---------------------------
def list_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under `root` (by extension, hidden files and `exclude` left out), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (exclude is None or (here / d).resolve() != exclude.resolve()))
        found += [here / f for f in sorted(filenames) if not f.startswith(".") and is_image_file(f)]
    return found


def verify_images(
    root: str | os.PathLike, move_to: str | os.PathLike | None = None, delete: bool = False,
    workers: int | None = None,
) -> tuple[int, list[tuple[Path, str]], list[Path]]:
    """Decode every image under `root`; returns (images checked, bad (path, reason) pairs, where each went).

    `move_to`: move bad files there, keeping their path relative to `root` (a folder of rejects to look
    at); `delete`: remove them (fastai's `verify_images` + `unlink`). Neither: only report.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LightcycleError(f"{root}: {'not a folder' if root.exists() else 'folder not found'}")
    if move_to is not None and delete:
        raise LightcycleError("verify: choose one of move_to and delete")
    target = Path(move_to).expanduser() if move_to is not None else None
    images = list_images(root, exclude=target)
    bad = find_bad_images(images, workers=workers)
    handled: list[Path] = []
    for path, _ in bad:
        try:
            if delete:
                path.unlink()
                handled.append(path)
            elif target is not None:
                dest = target / path.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                n = 1
                while dest.exists():  # never overwrite an earlier reject with the same name
                    dest = dest.with_name(f"{path.stem}_{n}{path.suffix}")
                    n += 1
                shutil.move(str(path), dest)
                handled.append(dest)
        except OSError as exc:
            raise LightcycleError(f"{path}: cannot {'delete' if delete else 'move'} it ({exc})") from exc
    return len(images), bad, handled
