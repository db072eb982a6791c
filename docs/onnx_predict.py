"""Run a `lightcycle-export` ONNX model with onnxruntime, numpy and Pillow only: no torch, no lightcycle.

    pip install onnxruntime numpy pillow
    python onnx_predict.py last.onnx photo1.jpg photo2.png      # reads last.onnx.json beside the model

Prints one JSON object per image: the label and probabilities (classification), the tags over their
thresholds (multi-label), the mask's size and class pixel counts (segmentation; `--masks DIR` saves
the masks as PNGs), or the points in pixels of the original image (points). Copy this file anywhere.

Shrinking averages pixel areas like lightcycle's eval transform (OpenCV's INTER_AREA, to within one grey
level); enlarging a smaller image uses Pillow's bilinear filter, close to but not exactly OpenCV's.
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


def resize(img: Image.Image, size: int) -> np.ndarray:
    """Squish to size x size (no crop) as uint8 RGB, like lightcycle's eval transform."""
    if img.width >= size and img.height >= size:
        arr = np.asarray(img, dtype=np.float64)
        out = np.einsum("ij,jkc,lk->ilc", area_weights(img.height, size), arr, area_weights(img.width, size))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def preprocess(img: Image.Image, spec: dict) -> np.ndarray:
    """RGB image -> normalised [3, size, size] float32."""
    x = resize(img, int(spec["size"])).astype(np.float32) * np.float32(spec["scale"])
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return x.transpose(2, 0, 1)


def activate(logits: np.ndarray, activation: dict) -> np.ndarray:
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


def describe(out: np.ndarray, config: dict, original: tuple[int, int], name: str, masks: Path | None) -> dict:
    """One image's activated output -> a JSON-ready answer in the original image's frame."""
    task, names = config["task"], config["class_names"]
    width, height = original
    if task == "classification":
        i = int(out.argmax())
        return {"file": name, "label": names[i], "probabilities": dict(zip(names, out.tolist()))}
    if task == "multilabel":
        tags = [n for n, p, t in zip(names, out.tolist(), config["thresholds"]) if p > t]
        return {"file": name, "tags": tags, "probabilities": dict(zip(names, out.tolist()))}
    if task == "segmentation":
        small = Image.fromarray(out.argmax(0).astype(np.uint8))
        mask = np.asarray(small.resize((width, height), Image.Resampling.NEAREST))
        record = {"file": name, "size": [width, height], "pixels": {n: int((mask == i).sum()) for i, n in enumerate(names)}}
        if masks is not None:
            masks.mkdir(parents=True, exist_ok=True)
            record["mask"] = str(masks / f"{Path(name).stem}_P.png")
            Image.fromarray(mask).save(record["mask"])
        return record
    if task == "points":
        size = config["input"]["size"]
        x = ((out[:, 0] + 1) * size - 1) / 2 * width / size
        y = ((out[:, 1] + 1) * size - 1) / 2 * height / size
        return {"file": name, "points": np.stack([x, y], 1).tolist()}
    raise ValueError(f"unknown task {task!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .onnx file (its .onnx.json must lie beside it)")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--masks", type=Path, help="segmentation: save masks (code indices) as PNGs here")
    args = parser.parse_args(argv)
    config = json.loads(Path(f"{args.model}.json").read_text())
    spec = config["input"]
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    for name in args.images:
        img = load_rgb(name)
        logits = session.run([config["output"]["name"]], {spec["name"]: preprocess(img, spec)[None]})[0]
        out = activate(logits, config["activation"])[0]
        print(json.dumps(describe(out, config, img.size, name, args.masks)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
