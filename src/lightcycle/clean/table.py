"""The cleaner's table: every training and validation image with its label, prediction and loss, and
the most similar image pairs; saved as JSON (`<run dir>/cleaning/scores.json`) so the page and
`apply` can reload what was scored.

Rows keep the file's size and modification time as scored (`FileState`): apply leaves alone a
file that changed since. `Scores.worst` pages through the images worst first, filtered by split,
label and prediction, without re-sorting the whole table per request.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lightcycle.atomic import write_text
from lightcycle.errors import LightcycleError, brief_cause

FORMAT = "lightcycle-clean-scores"
VERSION = 1
SPLITS = ("train", "valid")


@dataclass(frozen=True)
class FileState:
    """A file as it was when scored; apply refuses a file whose state differs."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "FileState":
        stat = os.stat(path)
        return cls(int(stat.st_size), int(stat.st_mtime_ns))

    def matches(self, path: str | os.PathLike) -> bool:
        """Whether `path` still has this size and modification time (False when it is gone)."""
        try:
            return FileState.of(path) == self
        except OSError:
            return False


@dataclass(frozen=True)
class ScoredImage:
    """One image: where it is (relative to data.root, POSIX), its label and the model's prediction
    (class name, tag list, points [[x, y], ...] in original pixels; None for segmentation, whose
    truth is the mask among `companions`), and its loss (higher = worse; NaN when nothing in it is scored)."""

    key: int
    split: str
    path: str
    label: Any
    prediction: Any
    loss: float
    state: FileState
    companions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "split": self.split, "path": self.path, "label": self.label,
            "prediction": self.prediction, "loss": self.loss if math.isfinite(self.loss) else None,
            "size": self.state.size, "mtime_ns": self.state.mtime_ns, "companions": list(self.companions),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "ScoredImage":
        loss = row.get("loss")
        return cls(
            key=int(row["key"]), split=str(row["split"]), path=str(row["path"]), label=row.get("label"),
            prediction=row.get("prediction"), loss=float("nan") if loss is None else float(loss),
            state=FileState(int(row["size"]), int(row["mtime_ns"])),
            companions=tuple(str(c) for c in row.get("companions", ())),
        )


@dataclass(frozen=True)
class SimilarPair:
    """Two images (keys, a < b) by the cosine of the backbone's pooled features; 1.0 for identical files."""

    a: int
    b: int
    similarity: float
    leak: bool  # one in train, the other in valid
    labels_differ: bool

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "similarity": self.similarity, "leak": self.leak, "labels_differ": self.labels_differ}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "SimilarPair":
        return cls(int(row["a"]), int(row["b"]), float(row["similarity"]), bool(row["leak"]), bool(row["labels_differ"]))


def _has(value: Any, wanted: Any) -> bool:
    """A label or prediction filter: equal, or (tag lists) one of its tags."""
    return wanted in value if isinstance(value, list) and not isinstance(wanted, list) else value == wanted


@dataclass
class Scores:
    """Every scored image (`images`, row `key` = its index) and the most similar pairs, most similar first."""

    task: str
    classes: list[str]
    root: Path
    data: dict[str, Any]
    images: list[ScoredImage]
    pairs: list[SimilarPair] = field(default_factory=list)
    _order: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, key: int) -> ScoredImage:
        """The row with `key` (rows are stored in key order)."""
        if not 0 <= key < len(self.images) or self.images[key].key != key:
            raise LightcycleError(f"no scored image with key {key}")
        return self.images[key]

    def file(self, image: ScoredImage) -> Path:
        """The image's file on disk."""
        return self.root / image.path

    @property
    def order(self) -> list[int]:
        """Keys by loss, highest first (NaN losses last), ties in key order; computed once."""
        if self._order is None:
            keys = [math.inf if math.isnan(r.loss) else -r.loss for r in self.images]
            self._order = sorted(range(len(keys)), key=keys.__getitem__)
        return self._order

    def worst(self, split: str | None = None, label: Any = None, prediction: Any = None,
              offset: int = 0, limit: int | None = 50) -> list[ScoredImage]:
        """A page of images, worst loss first, of one split and/or one label and/or prediction (a class
        name; for tag lists, one tag they contain). None = any."""
        if split is not None and split not in SPLITS:
            raise LightcycleError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        rows = self._filtered(split, label, prediction)
        return self._page(rows, offset, limit)

    def count(self, split: str | None = None, label: Any = None, prediction: Any = None) -> int:
        """How many images `worst` pages through with these filters."""
        return sum(1 for _ in self._filtered(split, label, prediction))

    def similar(self, leak: bool | None = None, labels_differ: bool | None = None,
                offset: int = 0, limit: int | None = 50) -> list[SimilarPair]:
        """A page of the similar pairs, most similar first, optionally only leaks or pairs whose labels differ."""
        rows = (p for p in self.pairs if (leak is None or p.leak == leak)
                and (labels_differ is None or p.labels_differ == labels_differ))
        return self._page(rows, offset, limit)

    def _filtered(self, split: str | None, label: Any, prediction: Any) -> Iterable[ScoredImage]:
        for key in self.order:
            row = self.images[key]
            if split is not None and row.split != split:
                continue
            if label is not None and not _has(row.label, label):
                continue
            if prediction is not None and not _has(row.prediction, prediction):
                continue
            yield row

    @staticmethod
    def _page(rows: Iterable[Any], offset: int, limit: int | None) -> list[Any]:
        offset = max(0, int(offset))
        out: list[Any] = []
        for i, row in enumerate(rows):
            if i < offset:
                continue
            if limit is not None and len(out) >= limit:
                break
            out.append(row)
        return out

    # --- JSON --------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "task": self.task, "classes": list(self.classes),
            "root": str(self.root), "data": self.data,
            "images": [r.to_json() for r in self.images], "pairs": [p.to_json() for p in self.pairs],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Scores":
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, this lightcycle reads version {VERSION}")
        images = [ScoredImage.from_json(r) for r in doc["images"]]
        if any(r.key != i for i, r in enumerate(images)):
            raise ValueError("image keys are not 0..n-1 in order")
        return cls(task=str(doc["task"]), classes=[str(c) for c in doc["classes"]], root=Path(doc["root"]),
                   data=dict(doc.get("data") or {}), images=images,
                   pairs=[SimilarPair.from_json(p) for p in doc.get("pairs", [])])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON (atomically: a reader sees the old file or the new one, whole)."""

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(self.to_json(), allow_nan=False, separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Scores":
        """Read a table `save` wrote; anything else is one LightcycleError naming the file."""
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise LightcycleError(f"{path}: scores not found (lightcycle.clean.score writes them)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LightcycleError(f"{path}: not a cleaner's scores file ({brief_cause(exc, 120)})") from None
