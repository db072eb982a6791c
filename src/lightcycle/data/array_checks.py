"""Reading and vetting image and label arrays (ArrayDataModule): one error line per problem, naming the key.

Images arrive as N x H x W x C uint8 (channels last, C = 1 or 3, or N x H x W greyscale) or as
N x C x H x W floats in [0, 1] (channels first, torch's layout); both become N x H x W x 3 uint8,
the form every lightcycle pipeline reads. Labels are checked against their task: class indices,
multi-hot rows, masks of code indices the size of their images, or points inside their images.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.lib import format as npy

from lightcycle.errors import LightcycleError

ARRAY_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_valid", "y_valid", "classes")
ARRAY_TASKS: tuple[str, ...] = ("classification", "multilabel", "segmentation", "points")
DEFAULT_MAX_BYTES = 4 << 30  # the arrays of an .npz, all together, as loaded into memory (data.max_bytes)
MAX_INFLATION = 200  # a compressed member may hold at most this many times its compressed size...
INFLATION_FLOOR = 64 << 20  # ...once it is larger than this: deflate gives real images 1-10x


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_npz_members(path: Path, max_bytes: int | None = None) -> None:
    """Read every member's .npy header (shape, dtype: a few hundred bytes) and refuse, before any array
    is inflated: object arrays (they need pickle), a shape the member's bytes cannot hold, arrays
    larger than `max_bytes` together (default DEFAULT_MAX_BYTES), and, unless `max_bytes` is given,
    a compressed member that inflates more than MAX_INFLATION times (a zip bomb)."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    if limit < 1:
        raise LightcycleError(f"data.max_bytes must be a positive number of bytes, got {max_bytes}")
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as member:
                version = npy.read_magic(member)
                read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _, dtype = read(member)
            if dtype.hasobject:
                raise LightcycleError(
                    f"{path}: key {key!r} holds Python objects, which are not unpickled; store numbers, or "
                    "class names as a string array (np.array(names, dtype=str))"
                )
            declared = math.prod(int(d) for d in shape) * dtype.itemsize
            where = f"{path}: key {key!r} (shape {tuple(shape)}, {dtype})"
            if declared > info.file_size:
                raise LightcycleError(f"{where} declares {declared:,} bytes but holds {info.file_size:,}: truncated or crafted")
            inflation = declared / max(info.compress_size, 1)
            if (max_bytes is None and info.compress_type != zipfile.ZIP_STORED and declared > INFLATION_FLOOR
                    and inflation > MAX_INFLATION):
                raise LightcycleError(
                    f"{where} inflates from {_size(info.compress_size)} to {_size(declared)} ({inflation:,.0f}x; a zip "
                    f"bomb?); set data.max_bytes to accept arrays this large"
                )
            total += declared
            if total > limit:
                raise LightcycleError(
                    f"{where}: the arrays take more than {_size(limit)} in memory (data.max_bytes={limit}); "
                    "raise data.max_bytes if the machine has the memory"
                )


def load_npz(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, loaded without pickle (an object array is refused, never unpickled),
    their declared sizes checked before any is inflated (`check_npz_members`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LightcycleError(f"data.path {path}: file not found (an .npz with {', '.join(ARRAY_KEYS[:4])})")
    try:
        check_npz_members(path, max_bytes)
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            unknown = sorted(set(keys) - set(ARRAY_KEYS))
            if unknown:
                raise LightcycleError(f"{path}: unknown key(s) {unknown}; expected {', '.join(ARRAY_KEYS)}")
            arrays = {}
            for key in keys:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:  # object arrays need pickle, which is never used
                    raise LightcycleError(
                        f"{path}: key {key!r} holds Python objects, which are not unpickled; store numbers, or "
                        "class names as a string array (np.array(names, dtype=str))"
                    ) from exc
    except LightcycleError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise LightcycleError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise LightcycleError(f"{path}: key {key!r} is missing (found {', '.join(keys) or 'none'})")
    if ("x_valid" in arrays) != ("y_valid" in arrays):
        have, lack = ("x_valid", "y_valid") if "x_valid" in arrays else ("y_valid", "x_valid")
        raise LightcycleError(f"{path}: has {have!r} but not {lack!r}; give both or neither (then data.valid_pct splits)")
    return arrays


def as_numpy(key: str, value: Any) -> np.ndarray:
    """A numpy array from numpy or torch input (torch stays optional here)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        else:
            raise LightcycleError(f"{key}: expected a numpy array or torch tensor, got {type(value).__name__}")
    return value


def as_images(key: str, x: Any) -> np.ndarray:
    """N x H x W x 3 uint8 from N x H x W x C uint8 (C = 1, 3), N x H x W uint8 or N x C x H x W floats in [0, 1]."""
    x = as_numpy(key, x)
    layouts = "N x H x W x C uint8 (C = 1 or 3) or N x C x H x W floats in [0, 1]"
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            hint = " (channels first? uint8 images are channels last)" if x.ndim == 4 and x.shape[1] in (1, 3) else ""
            raise LightcycleError(f"{key}: shape {x.shape} is not {layouts}{hint}")
        images = x
    elif np.issubdtype(x.dtype, np.floating):
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            hint = " (channels last? float images are channels first)" if x.ndim == 4 and x.shape[-1] in (1, 3) else ""
            raise LightcycleError(f"{key}: shape {x.shape} is not {layouts}{hint}")
        if x.size and not np.isfinite(x).all():
            raise LightcycleError(f"{key}: has NaN or infinite values")
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if low < -1e-6 or high > 1 + 1e-6:
            raise LightcycleError(
                f"{key}: float images must be in [0, 1], got values from {low:.3g} to {high:.3g} "
                "(already normalised? pass the unnormalised pictures; lightcycle normalises with the backbone's statistics)"
            )
        images = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    else:
        raise LightcycleError(f"{key}: dtype {x.dtype} is not an image type; expected {layouts}")
    if len(images) == 0:
        raise LightcycleError(f"{key}: has no images")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.ascontiguousarray(images)


def infer_task(y: np.ndarray, images: np.ndarray, key: str = "y_train") -> str:
    """The task y's shape implies: [N] classes, [N, C] multi-hot tags, [N, H, W] masks, [N, K, 2] points."""
    if y.ndim == 1:
        return "classification"
    if y.ndim == 2:
        return "multilabel"
    if y.ndim == 3 and y.shape[1:] == images.shape[1:3]:
        return "segmentation"
    if y.ndim == 3 and y.shape[-1] == 2:
        return "points"
    raise LightcycleError(
        f"{key}: shape {y.shape} is none of N (class indices), N x C (multi-hot tags), N x H x W (masks the size of "
        f"the {images.shape[1]}x{images.shape[2]} images) or N x K x 2 (points); set data.task"
    )


def _integers(key: str, y: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise LightcycleError(f"{key}: {what} must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def check_labels(task: str, key: str, y: Any, images: np.ndarray) -> np.ndarray:
    """y checked for `task` against its images (same count; masks the images' size; points inside them)."""
    y = as_numpy(key, y)
    n, height, width = images.shape[:3]
    if y.ndim == 0 or len(y) != n:
        raise LightcycleError(f"{key}: has {len(y) if y.ndim else 'no'} labels but x_{key[2:]} has {n} images")
    if task == "classification":
        if y.ndim != 1:
            raise LightcycleError(f"{key}: classification labels must be N class indices, got shape {y.shape}")
        y = _integers(key, y, "class indices")
    elif task == "multilabel":
        if y.ndim != 2 or y.shape[1] < 1:
            raise LightcycleError(f"{key}: multi-label targets must be N x C multi-hot rows, got shape {y.shape}")
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or not np.isin(y, (0, 1)).all():
            raise LightcycleError(f"{key}: multi-label targets must be 0 or 1 (multi-hot rows)")
        y = y.astype(np.float32)
    elif task == "segmentation":
        if y.ndim != 3 or y.shape[1:] != (height, width):
            raise LightcycleError(f"{key}: masks must be N x {height} x {width} (the images' size), got shape {y.shape}")
        y = _integers(key, y, "mask codes")
        y = y.astype(np.uint8) if y.size and y.min() >= 0 and y.max() < 256 else y.astype(np.int32)
    elif task == "points":
        if y.ndim != 3 or y.shape[-1] != 2 or y.shape[1] < 1:
            raise LightcycleError(f"{key}: points must be N x K x 2 (x, y) pixel coordinates, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_:
            raise LightcycleError(f"{key}: point coordinates must be numbers, got dtype {y.dtype}")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise LightcycleError(f"{key}: point coordinates are not all finite")
        outside = (y[..., 0] < 0) | (y[..., 0] > width) | (y[..., 1] < 0) | (y[..., 1] > height)
        if outside.any():
            i, k = (int(v) for v in np.argwhere(outside)[0])
            raise LightcycleError(
                f"{key}[{i}]: point {k} ({y[i, k, 0]:g}, {y[i, k, 1]:g}) is outside the {width}x{height} image "
                f"({int(outside.any(1).sum())} image(s) have points outside)"
            )
    else:
        raise LightcycleError(f"data.task must be one of auto, {', '.join(ARRAY_TASKS)}, got {task!r}")
    return y


def check_range(key: str, y: np.ndarray, names: list[str] | None, what: str) -> None:
    """Integer labels (`what`: class indices, mask codes) must be >= 0 and index `names` when given."""
    count = len(names) if names is not None else None
    bad = sorted(int(v) for v in np.unique(y) if v < 0 or (count is not None and v >= count)) if y.size else []
    if bad and count is not None:
        shown = ", ".join(names[:5]) + (", ..." if count > 5 else "")  # type: ignore[index]
        raise LightcycleError(f"{key}: value(s) {bad[:5]} are not {what} of the {count} classes ({shown}: 0..{count - 1})")
    if bad:
        raise LightcycleError(f"{key}: value(s) {bad[:5]} are negative; {what} count from 0")


def names_from(value: Any, key: str = "classes") -> list[str] | None:
    """Class names from a list or a 1-D string array (bytes decoded); None when not given."""
    if value is None:
        return None
    arr = as_numpy(key, value) if not isinstance(value, (list, tuple)) else np.asarray(value, dtype=object)
    if arr.ndim != 1:
        raise LightcycleError(f"{key}: expected a 1-D list of names, got shape {arr.shape}")
    names = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]
    if len(set(names)) != len(names):
        raise LightcycleError(f"{key}: duplicate names {sorted({n for n in names if names.count(n) > 1})}")
    return names


def default_names(count: int) -> list[str]:
    return [str(i) for i in range(count)]


def max_label(arrays: Sequence[np.ndarray]) -> int:
    return max((int(a.max()) for a in arrays if a.size), default=-1)
