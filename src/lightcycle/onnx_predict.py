"""Run a `lightcycle-export` ONNX model with onnxruntime, numpy and Pillow only: no torch, no lightcycle.

    pip install onnxruntime numpy pillow
    python -m lightcycle.onnx_predict last.onnx photo1.jpg photo2.png   # reads last.onnx.json beside the model
    python -m lightcycle.onnx_predict last.onnx photo.jpg --resize pad  # another framing than the training's

Prints one JSON object per image: the label and probabilities (classification), the tags over their
thresholds (multi-label), the mask's size and class pixel counts (segmentation; `--masks DIR` saves
the masks as PNGs), or the points in pixels of the original image (points). The module imports nothing
of lightcycle (or torch): where lightcycle is not installed, copy this file and run `python onnx_predict.py ...`.

Pictures are framed like lightcycle's eval transform (`input.resize` in the JSON): squished, the centre
square of the short side (crop), or centred in a square of the long side (pad, reflected or black
border); masks and points come back through that window onto the original pixels. Shrinking averages
pixel areas like lightcycle (OpenCV's INTER_AREA, to within one grey level), and enlarging a smaller
picture blends neighbours as OpenCV's INTER_AREA does (to within a grey level or two).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load_rgb(path: str) -> Image.Image:
    """Upright (EXIF) 8-bit RGB; transparent pixels composited on white, as lightcycle reads images."""
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: how much of each input pixel falls into each output pixel (area averaging)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    j = np.arange(n_in)[None, :]
    overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
    return np.clip(overlap, 0, None) / scale


def enlarge_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: OpenCV's INTER_AREA when a side grows (two taps, pixel borders blended linearly)."""
    scale, weights = n_in / n_out, np.zeros((n_out, n_in))
    for i in range(n_out):
        j = int(np.floor(i * scale))
        f = (i + 1) - (j + 1) * n_out / n_in
        f = 0.0 if f <= 0 else f - np.floor(f)
        if j >= n_in - 1:
            j, f = n_in - 1, 0.0
        weights[i, j] += 1 - f
        weights[i, min(j + 1, n_in - 1)] += f
    return weights


def resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Squish an HxWx3 uint8 array to size x size like lightcycle's eval transform (OpenCV's INTER_AREA:
    area averaging when no side grows, else its two-tap blend on both axes)."""
    height, width = arr.shape[:2]
    weights = area_weights if width >= size and height >= size else enlarge_weights
    out = np.einsum("ij,jkc,lk->ilc", weights(height, size), arr.astype(np.float64), weights(width, size))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def window(width: int, height: int, resize_method: str) -> tuple[int, int, int, int]:
    """(x0, y0, w, h): the part of the picture the input shows (negative x0/y0: padding)."""
    if resize_method not in ("crop", "pad"):
        return 0, 0, width, height
    if resize_method == "crop":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    side = max(width, height)  # pad: the picture starts (side - width) // 2 pixels into the square
    return -((side - width) // 2), -((side - height) // 2), side, side


def frame(img: Image.Image, spec: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """RGB image -> (the square picture before resizing as uint8 HxWx3, its window)."""
    arr = np.asarray(img)
    x0, y0, w, h = win = window(img.width, img.height, spec.get("resize", "squish"))
    if x0 >= 0 and y0 >= 0:  # squish (the whole picture) or a crop
        return arr[y0 : y0 + h, x0 : x0 + w], win
    top, left = -y0, -x0
    pads = ((top, h - img.height - top), (left, w - img.width - left), (0, 0))
    return (np.pad(arr, pads, mode="reflect") if spec.get("pad_mode") == "reflect" else np.pad(arr, pads)), win


def preprocess(img: Image.Image, spec: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """RGB image -> (normalised [3, size, size] float32, the window of the picture it shows)."""
    square, win = frame(img, spec)
    x = resize(square, int(spec["size"])).astype(np.float32) * np.float32(spec["scale"])
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return x.transpose(2, 0, 1), win


def activate(logits: np.ndarray, activation: dict) -> np.ndarray:
    """Logits -> what the export's JSON says the model's outputs mean (probabilities, ranges)."""
    name = activation["name"]
    if name == "softmax":
        z = logits - logits.max(axis=activation["axis"], keepdims=True)
        e = np.exp(z)
        out = e / e.sum(axis=activation["axis"], keepdims=True)
    elif name in ("sigmoid", "sigmoid_range"):
        out = 1.0 / (1.0 + np.exp(-logits))
        if name == "sigmoid_range":
            out = out * (activation["high"] - activation["low"]) + activation["low"]
    else:
        out = logits
    return out.reshape(activation["reshape"]) if "reshape" in activation else out


def describe(out: np.ndarray, config: dict, original: tuple[int, int], win: tuple[int, int, int, int],
             name: str, masks: Path | None) -> dict:
    """One image's activated output -> a JSON-ready answer in the original image's frame."""
    task, names = config["task"], config["class_names"]
    width, height = original
    x0, y0, win_w, win_h = win
    if task == "classification":
        i = int(out.argmax())
        return {"file": name, "label": names[i], "probabilities": dict(zip(names, out.tolist()))}
    if task == "multilabel":
        tags = [n for n, p, t in zip(names, out.tolist(), config["thresholds"]) if p > t]
        return {"file": name, "tags": tags, "probabilities": dict(zip(names, out.tolist()))}
    if task == "segmentation":
        if x0 > 0 or y0 > 0:
            raise SystemExit(f"{name}: a centre crop leaves out part of the picture, so no mask; pass --resize pad or squish")
        small = Image.fromarray(out.argmax(0).astype(np.uint8))
        mask = np.asarray(small.resize((win_w, win_h), Image.Resampling.NEAREST))[-y0 : height - y0, -x0 : width - x0]
        record = {"file": name, "size": [width, height], "pixels": {n: int((mask == i).sum()) for i, n in enumerate(names)}}
        if masks is not None:
            masks.mkdir(parents=True, exist_ok=True)
            record["mask"] = str(masks / f"{Path(name).stem}_P.png")
            Image.fromarray(mask).save(record["mask"])
        return record
    if task == "points":
        size = config["input"]["size"]
        x = x0 + ((out[:, 0] + 1) * size - 1) / 2 * win_w / size
        y = y0 + ((out[:, 1] + 1) * size - 1) / 2 * win_h / size
        return {"file": name, "points": np.stack([x, y], 1).tolist()}
    raise ValueError(f"unknown task {task!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .onnx file (its .onnx.json must lie beside it)")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--masks", type=Path, help="segmentation: save masks (code indices) as PNGs here")
    parser.add_argument("--resize", choices=("crop", "pad", "squish"), help="frame pictures this way instead of input.resize")
    args = parser.parse_args(argv)
    config = json.loads(Path(f"{args.model}.json").read_text())
    spec = config["input"]
    if args.resize:
        spec["resize"] = args.resize
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    for name in args.images:
        img = load_rgb(name)
        x, win = preprocess(img, spec)
        logits = session.run([config["output"]["name"]], {spec["name"]: x[None]})[0]
        out = activate(logits, config["activation"])[0]
        print(json.dumps(describe(out, config, img.size, win, name, args.masks)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
