"""Train/validation splits: a seeded random split, or the file names a `valid.txt` lists.

Every DataModule splits through these, so the same files land in validation on every run and a
name in `valid.txt` that matches no usable file is reported the same way everywhere, once.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

from lightcycle.data.files import FileResolver, read_name_list
from lightcycle.errors import LightcycleError

S = TypeVar("S")


def split_by_pct(samples: Sequence[S], valid_pct: float, seed: int) -> tuple[list[S], list[S]]:
    """Random split with a fixed seed (fastai's RandomSplitter): the same files land in valid every run."""
    if not 0.0 < valid_pct < 1.0:
        raise LightcycleError(f"data.valid_pct must be between 0 and 1, got {valid_pct}")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(len(samples) * valid_pct))
    valid_idx = set(order[:n_valid])
    train = [s for i, s in enumerate(samples) if i not in valid_idx]
    valid = [s for i, s in enumerate(samples) if i in valid_idx]
    return train, valid


def split_by_names(
    samples: Sequence[Any], valid_file: Path, resolver: FileResolver
) -> tuple[list[Any], list[Any], list[tuple[Path, str]]]:
    """Split samples (with `.path`) by a `valid.txt` naming files relative to the resolver's folder.

    Names that match no file, or a file without a label, are problems to report, not silent drops.
    """
    problems: list[tuple[Path, str]] = []
    valid_paths: set[Path] = set()
    for line, name in read_name_list(valid_file):
        path, why = resolver.resolve(name)
        if path is None:
            problems.append((resolver.folder / name, f"{why} ({valid_file.name} line {line})"))
        else:
            valid_paths.add(path)
    known = {s.path for s in samples}
    problems += [(p, f"listed in {valid_file.name} but has no label") for p in sorted(valid_paths - known)]
    train = [s for s in samples if s.path not in valid_paths]
    valid = [s for s in samples if s.path in valid_paths]
    return train, valid, problems


def split_samples(
    samples: Sequence[Any],
    valid_file: Path | None,
    resolver: FileResolver,
    valid_pct: float,
    seed: int,
    reported: Iterable[tuple[Path, str]] = (),
) -> tuple[list[Any], list[Any], list[tuple[Path, str]]]:
    """(train, valid, new problems): by `valid_file` when it exists, else `split_by_pct`.

    A file already in `reported` (a missing image, a bad mask, a duplicate row) is not reported a
    second time because `valid_file` names it too.
    """
    if valid_file is None or not valid_file.is_file():
        train, valid = split_by_pct(samples, valid_pct, seed)
        return train, valid, []
    train, valid, problems = split_by_names(samples, valid_file, resolver)
    known = {path for path, _ in reported}
    return train, valid, [(path, why) for path, why in problems if path not in known]
