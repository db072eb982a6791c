"""Multi-label data in Planet's layout: a CSV of `image_name,tags` and the images in one folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch

from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.edits import TagCsvEdits
from lightcycle.data.files import FileResolver, listed_twice, read_csv_rows
from lightcycle.data.splits import split_samples
from lightcycle.errors import LightcycleError
from lightcycle.tasks import MultiLabelTask

log = logging.getLogger(__name__)


class MultiLabelDataModule(ImageDataModule):
    """Planet layout: `labels.csv` with `image_name,tags` (tags split by `delimiter`), images in
    `folder`, names with or without extension (`suffix` is appended when given).

    The split comes from `valid_file` (names relative to `folder`) when it exists, else `valid_pct`.
    `thresh` and `beta` configure the task's metrics (accuracy_multi, F-beta, F1).
    """

    task_name = "multilabel"
    reduced_decoding = True  # tags do not depend on the pixel grid

    def __init__(
        self,
        *args: Any,
        csv_file: str = "labels.csv",
        folder: str | None = "train",
        fn_col: str = "image_name",
        label_col: str = "tags",
        delimiter: str = " ",
        suffix: str = "",
        valid_file: str | None = "valid.txt",
        thresh: float = 0.5,
        beta: float = 2.0,
        batch_size: int | str = 64,
        **kwargs: Any,
    ) -> None:
        # 64, not `auto`: multi-label F2 was best at 64 on both measured sets (docs/benchmarks.md, task defaults).
        super().__init__(*args, batch_size=batch_size, **kwargs)
        if not 0.0 < float(thresh) < 1.0:
            raise LightcycleError(f"data.thresh must be between 0 and 1, got {thresh}")
        if float(beta) <= 0:
            raise LightcycleError(f"data.beta must be positive, got {beta}")
        self.csv_file, self.folder, self.suffix, self.valid_file = csv_file, folder, suffix, valid_file
        self.fn_col, self.label_col = fn_col, label_col
        self.delimiter = delimiter if delimiter not in (None, "") else " "
        self.thresh, self.beta = float(thresh), float(beta)
        self.classes: list[str] = []

    def split_tags(self, text: str) -> list[str]:
        """Tags of one row; a space delimiter also splits on runs of whitespace (Planet's CSV)."""
        parts = text.split() if self.delimiter.isspace() else text.split(self.delimiter)
        return sorted({t.strip() for t in parts if t.strip()})

    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        csv_path = root / self.csv_file
        rows = read_csv_rows(csv_path, [self.fn_col, self.label_col])
        image_dir = root / self.folder if self.folder else root
        resolver = FileResolver(image_dir, root, self.allow_outside_root)
        problems: list[tuple[Path, str]] = []
        entries: list[tuple[Path, list[str]]] = []
        seen: dict[Path, int] = {}
        for line, row in rows:
            name = row[self.fn_col].strip() + self.suffix
            path, why = resolver.resolve(name)
            if path is None:
                problems.append((image_dir / name, f"{why} ({csv_path.name} line {line})"))
            elif path in seen:
                problems.append((path, listed_twice(csv_path.name, seen[path], line)))
            else:
                seen[path] = line
                entries.append((path, self.split_tags(row[self.label_col])))
        self.classes = sorted({tag for _, tags in entries for tag in tags})
        if not self.classes:
            raise LightcycleError(f"{csv_path}: no tags found in column {self.label_col!r}")
        index = {tag: i for i, tag in enumerate(self.classes)}
        samples = []
        for path, tags in entries:
            hot = [0.0] * len(self.classes)
            for tag in tags:
                hot[index[tag]] = 1.0
            samples.append(Sample(path, tuple(hot)))
        valid_path = root / self.valid_file if self.valid_file else None
        train, valid, split_problems = split_samples(samples, valid_path, resolver, self.valid_pct, self.seed, problems)
        return train, valid, problems + split_problems

    def edits(self, root: Path) -> TagCsvEdits:
        """Removed images lose their row and valid.txt line and move aside; relabelled ones get new tags."""
        return TagCsvEdits(root, self.csv_file, self.folder, self.fn_col, self.label_col, suffix=self.suffix,
                           valid_file=self.valid_file, allow_outside_root=self.allow_outside_root,
                           delimiter=self.delimiter)

    @staticmethod
    def encode(image: np.ndarray, sample: Sample, transform: A.Compose) -> tuple[torch.Tensor, torch.Tensor]:
        return transform(image=image)["image"], torch.tensor(sample.target, dtype=torch.float32)

    def make_task(self) -> MultiLabelTask:
        self.setup("fit")
        return MultiLabelTask(class_names=list(self.classes), thresh=self.thresh, beta=self.beta)
