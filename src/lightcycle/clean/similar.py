"""The most similar image pairs of a dataset (fastai 1's `DatasetFormatter.from_similars`): identical
files first, then the highest cosine similarities of the backbone's pooled features.

The top k over all n(n-1)/2 pairs is found a block of rows at a time, so memory stays at one block
of similarities (`block_elements` floats, 64 MB by default) plus the k best, whatever n: a
10^5-image set needs no 10^10-entry matrix. The work is still every pair's dot product.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from lightcycle.digest import file_sha256

Pair = tuple[int, int, float]  # (i, j, similarity), i < j
BLOCK_ELEMENTS = 1 << 24


def identical_files(paths: Sequence[str | os.PathLike]) -> list[list[int]]:
    """Groups (indices into `paths`, ascending) of files with the same bytes; only files whose size
    another file shares are hashed."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        by_size[os.stat(path).st_size].append(i)
    groups: list[list[int]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash: dict[str, list[int]] = defaultdict(list)
        for i in same_size:
            by_hash[file_sha256(paths[i])].append(i)
        groups += [sorted(g) for g in by_hash.values() if len(g) > 1]
    return sorted(groups)


def duplicate_pairs(groups: Iterable[Sequence[int]]) -> list[Pair]:
    """Every pair inside each group of identical files, similarity 1.0, in index order."""
    return sorted((a, b, 1.0) for g in groups for n, a in enumerate(g) for b in g[n + 1:])


def top_pairs(features: torch.Tensor, k: int, exclude: Iterable[tuple[int, int]] = (),
              block_elements: int = BLOCK_ELEMENTS) -> list[Pair]:
    """The `k` pairs (i < j) of rows of `features` [n, d] with the highest cosine similarity, highest
    first (ties by i, then j), leaving out the pairs in `exclude`; never more than `block_elements`
    similarities in memory at once."""
    n = len(features)
    if n < 2 or k <= 0:
        return []
    unit = F.normalize(features.float(), dim=1)
    skip: dict[int, list[int]] = defaultdict(list)
    for a, b in exclude:
        a, b = min(a, b), max(a, b)
        skip[a].append(b)
    rows = max(1, min(n, int(block_elements) // n))
    columns = torch.arange(n, device=unit.device)
    best_values = unit.new_empty(0)
    best_index = torch.empty(0, dtype=torch.long, device=unit.device)  # i * n + j
    for start in range(0, n - 1, rows):
        stop = min(n, start + rows)
        sims = unit[start:stop] @ unit.T  # [rows, n]
        sims.masked_fill_(columns[None, :] <= torch.arange(start, stop, device=unit.device)[:, None], -torch.inf)
        for a in range(start, stop):
            if a in skip:
                sims[a - start, skip[a]] = -torch.inf
        take = min(k, sims.numel())
        values, flat = sims.flatten().topk(take)
        keep = values > -torch.inf
        values, flat = values[keep], flat[keep]
        best_values = torch.cat([best_values, values])
        best_index = torch.cat([best_index, (flat // n + start) * n + flat % n])
        if len(best_values) > k:
            best_values, chosen = best_values.topk(k)
            best_index = best_index[chosen]
    pairs = [(int(f) // n, int(f) % n, float(v)) for v, f in zip(best_values.tolist(), best_index.tolist())]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))[:k]


def most_similar(features: torch.Tensor, paths: Sequence[str | os.PathLike], k: int,
                 block_elements: int = BLOCK_ELEMENTS) -> list[Pair]:
    """At most `k` pairs: identical files first (similarity 1.0), then `top_pairs` of the rest."""
    if len(features) != len(paths):
        raise ValueError(f"{len(features)} feature rows for {len(paths)} files")
    identical = duplicate_pairs(identical_files(paths))[: max(0, k)]
    return identical + top_pairs(features, k - len(identical), exclude=[(a, b) for a, b, _ in identical],
                                 block_elements=block_elements)
