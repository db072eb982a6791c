"""Single-label classification data in the two layouts people have: class folders, or a CSV of labels."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch

from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.checks import is_image_file
from lightcycle.data.edits import CsvEdits, FolderEdits
from lightcycle.data.files import FileResolver, listed_twice, read_csv_rows
from lightcycle.data.framing import CLASSIFICATION_FRAMING
from lightcycle.data.splits import split_by_pct
from lightcycle.errors import LightcycleError, printable
from lightcycle.tasks import ClassificationTask

log = logging.getLogger(__name__)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


class _ClassificationBase(ImageDataModule):
    task_name = "classification"
    reduced_decoding = True  # a label does not depend on the pixel grid

    def __init__(self, *args: Any, resize: str = CLASSIFICATION_FRAMING.resize,
                 min_scale: float = CLASSIFICATION_FRAMING.min_scale, **kwargs: Any) -> None:
        super().__init__(*args, resize=resize, min_scale=min_scale, **kwargs)
        self.classes: list[str] = []

    @staticmethod
    def encode(image: np.ndarray, sample: Sample, transform: A.Compose) -> tuple[torch.Tensor, torch.Tensor]:
        return transform(image=image)["image"], torch.tensor(sample.target, dtype=torch.long)

    def make_task(self) -> ClassificationTask:
        self.setup("fit")
        return ClassificationTask(class_names=list(self.classes))

    def setup(self, stage: str | None = None) -> None:
        first = not self._ready
        super().setup(stage)
        if first:  # say so once: a class whose every training image was skipped cannot be learned
            counts = Counter(s.target for s in self.train_samples)
            empty = [name for i, name in enumerate(self.classes) if not counts[i]]
            if empty:
                log.warning("class(es) %s have no training images (after skipping bad files or splitting); "
                            "the model cannot learn them", ", ".join(repr(c) for c in empty))

    def _require_two_classes(self, where: Path) -> None:
        if len(self.classes) < 2:
            found = f"only {self.classes[0]!r}" if self.classes else "none"
            raise LightcycleError(f"{where}: classification needs at least 2 classes, found {found}")


class FolderDataModule(_ClassificationBase):
    """ImageFolder layout: `train/<class>/*` and `valid/<class>/*`, or one folder of class folders
    split by `valid_pct` with a fixed `seed` (fastai's `ImageDataLoaders.from_folder`)."""

    def __init__(self, *args: Any, train: str = "train", valid: str = "valid", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_folder = train
        self.valid_folder = valid

    def _scan(self, folder: Path, problems: list[tuple[Path, str]], guard: FileResolver) -> dict[str, list[Path]]:
        """Images per class folder; reports empty class folders, images that are links out of
        data.root (as the CSV layouts do, unless data.allow_outside_root) and counts ignored non-image files."""
        by_class: dict[str, list[Path]] = {}
        ignored: Counter[str] = Counter()
        for entry in sorted(p for p in folder.iterdir() if _visible(p)):
            if not entry.is_dir():
                ignored["(outside class folders)"] += 1
                continue
            files = sorted(p for p in entry.rglob("*") if p.is_file() and _visible(p))
            images = []
            for p in files:
                if not is_image_file(p):
                    ignored[p.suffix or "(no extension)"] += 1
                elif why := guard.outside(p):
                    problems.append((p, why))
                else:
                    images.append(p)
            if not images:
                problems.append((entry, "class folder has no images (the class is left out)"))
                continue
            by_class[printable(entry.name)] = images  # a non-UTF-8 folder name becomes a printable class name
        if ignored:
            log.warning("%s: ignored %d file(s) that are not images in class folders: %s",
                        printable(folder), sum(ignored.values()), {printable(k): v for k, v in ignored.items()})
        return by_class

    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        problems: list[tuple[Path, str]] = []
        train_dir, valid_dir = root / self.train_folder, root / self.valid_folder
        has_split = train_dir.is_dir() and valid_dir.is_dir()
        source = train_dir if train_dir.is_dir() else root
        guard = FileResolver(root, root, self.allow_outside_root)
        train_by_class = self._scan(source, problems, guard)
        self.classes = sorted(train_by_class)
        self._require_two_classes(source)
        index = {name: i for i, name in enumerate(self.classes)}
        train = [Sample(p, index[c]) for c in self.classes for p in train_by_class[c]]
        if has_split:
            valid = []
            for name, paths in self._scan(valid_dir, problems, guard).items():
                if name not in index:
                    problems += [(p, f"class {name!r} is in {self.valid_folder}/ but not in {self.train_folder}/") for p in paths]
                    continue
                valid += [Sample(p, index[name]) for p in paths]
        else:
            train, valid = split_by_pct(train, self.valid_pct, self.seed)
        return train, valid, problems

    def edits(self, root: Path) -> FolderEdits:
        """Removed images move aside; relabelled ones into their new class folder of the same split."""
        return FolderEdits(root, self.train_folder, self.valid_folder)


class CsvDataModule(_ClassificationBase):
    """A CSV of `fname,label` rows; images beside it or in `folder`. File names may omit the extension.

    An optional boolean column (`valid_col`, fastai's `is_valid`) fixes the split; otherwise `valid_pct`.
    """

    def __init__(
        self,
        *args: Any,
        csv_file: str = "labels.csv",
        folder: str | None = None,
        fn_col: str = "fname",
        label_col: str = "label",
        valid_col: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.csv_file = csv_file
        self.folder = folder
        self.fn_col, self.label_col, self.valid_col = fn_col, label_col, valid_col

    def collect(self, root: Path) -> tuple[list[Sample], list[Sample], list[tuple[Path, str]]]:
        csv_path = root / self.csv_file
        rows = read_csv_rows(csv_path, [self.fn_col, self.label_col] + ([self.valid_col] if self.valid_col else []))
        image_dir = root / self.folder if self.folder else root
        resolver = FileResolver(image_dir, root, self.allow_outside_root)
        problems: list[tuple[Path, str]] = []
        entries: list[tuple[Path, str, bool]] = []
        seen: dict[Path, tuple[int, str]] = {}
        for line, row in rows:
            where = f"{csv_path.name} line {line}"
            label = row[self.label_col].strip()
            path, why = resolver.resolve(row[self.fn_col])
            if path is None:
                problems.append((image_dir / row[self.fn_col].strip(), f"{why} ({where})"))
            elif not label:
                problems.append((path, f"empty label ({where})"))
            elif path in seen:
                first, first_label = seen[path]
                labels = f", labels {first_label!r} and {label!r}" if label != first_label else ""
                problems.append((path, listed_twice(csv_path.name, first, line, labels)))
            else:
                seen[path] = (line, label)
                is_valid = _truthy(row[self.valid_col]) if self.valid_col else False
                entries.append((path, label, is_valid))
        if self.valid_col:
            train_rows = [(p, label) for p, label, v in entries if not v]
            valid_rows = [(p, label) for p, label, v in entries if v]
        else:
            train_rows, valid_rows = split_by_pct(
                [Sample(p, label) for p, label, _ in entries], self.valid_pct, self.seed
            )
            train_rows = [(s.path, s.target) for s in train_rows]
            valid_rows = [(s.path, s.target) for s in valid_rows]
        # The classes are the labels the model can learn: those with training rows. A label seen only
        # in validation rows is reported (with a random split: a rare label that all landed in valid).
        self.classes = sorted({label for _, label in train_rows})
        self._require_two_classes(csv_path)
        index = {name: i for i, name in enumerate(self.classes)}
        for p, label in valid_rows:
            if label not in index:
                problems.append((p, f"label {label!r} has no training rows, only validation ones ({csv_path.name} line {seen[p][0]})"))
        train = [Sample(p, index[label]) for p, label in train_rows]
        valid = [Sample(p, index[label]) for p, label in valid_rows if label in index]
        return train, valid, problems

    def edits(self, root: Path) -> CsvEdits:
        """Removed images lose their rows and move aside; relabelled ones get a new label column."""
        return CsvEdits(root, self.csv_file, self.folder, self.fn_col, self.label_col,
                        allow_outside_root=self.allow_outside_root)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "y", "t")
