"""Shared fixtures: tiny generated image folders in every layout users have."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import CLASSES, make_image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tiny tensors on 2 cores: intra-op threads only contend (10-20x slower); CLI subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: extra intra-op threads only spin against other processes; a test that changes
    the thread count gets it back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """Count the files the image check decodes; files changed 'recently' count as settled (no 2 s wait)."""
    from lightcycle.data import checks, verified

    monkeypatch.setattr(verified, "RECENT_NS", 0)
    seen: list[Path] = []
    real = checks._verify

    def counting(path, limit, budget):
        seen.append(Path(path))
        return real(path, limit, budget)

    monkeypatch.setattr(checks, "_verify", counting)
    return seen


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """ImageFolder with train/ and valid/ splits."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for split, n in (("train", 12), ("valid", 4)):
        for i, cls in enumerate(CLASSES):
            for j in range(n):
                make_image(root / split / cls / f"{cls}_{j}.jpg", i, rng)
    return root


@pytest.fixture
def flat_folder(tmp_path: Path) -> Path:
    """One folder of class folders, to be split by valid_pct."""
    rng = np.random.default_rng(1)
    root = tmp_path / "flat"
    for i, cls in enumerate(CLASSES):
        for j in range(10):
            make_image(root / cls / f"{j}.png", i, rng)
    return root


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    """labels.csv with fname,label; images in images/, names written without extension."""
    rng = np.random.default_rng(2)
    root = tmp_path / "csvdata"
    rows = []
    for i, cls in enumerate(CLASSES):
        for j in range(10):
            make_image(root / "images" / f"{cls}{j}.jpg", i, rng)
            rows.append((f"{cls}{j}", cls))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fname", "label"])
        writer.writerows(rows)
    return root


# --- trained once per session: a tiny checkpoint of every task, and lightcycle-serve for each -------------
SERVE_TASKS = ("classification", "multilabel", "segmentation", "points")
# The classification server also carries small limits, so the refusals can be tested on it.
SERVE_LIMITS = {"classification": ["max_upload_mb=0.05", "data.max_pixels=10000"]}


@pytest.fixture(scope="session")
def demo_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """task -> (one-epoch checkpoint, its data folder), for classification, multilabel, segmentation, points."""
    from tests.helpers import train_checkpoint

    root = tmp_path_factory.mktemp("demo-checkpoints")
    out = {}
    for task in SERVE_TASKS:
        ckpt, dm = train_checkpoint(task, root / task)
        out[task] = (ckpt, Path(dm.root))
    return out


# Idle LitServe servers still poll their queues: a pool is closed right after the last test that uses it,
# so the tests after it run on a quiet machine.
_last_user: dict[str, str] = {}
_open_pools: dict[str, object] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in ("served", "served_torch"):
            if name in getattr(item, "fixturenames", ()):
                _last_user[name] = item.nodeid


def pytest_runtest_teardown(item: pytest.Item) -> None:
    for name, nodeid in _last_user.items():
        if item.nodeid == nodeid and name in _open_pools:
            _open_pools.pop(name).close()


@pytest.fixture(scope="session")
def served(demo_checkpoints, tmp_path_factory: pytest.TempPathFactory):
    """task -> a running `lightcycle-serve` of that task's demo checkpoint (`served.get(task)`)."""
    from tests.serving import ServerPool

    pool = ServerPool({t: c for t, (c, _) in demo_checkpoints.items()}, tmp_path_factory.mktemp("servers"), SERVE_LIMITS)
    _open_pools["served"] = pool
    yield pool
    if _open_pools.pop("served", None) is not None:
        pool.close()


@pytest.fixture(scope="session")
def served_torch(demo_checkpoints, tmp_path_factory: pytest.TempPathFactory):
    """As `served`, with `runtime=torch` (the default on a CPU is ONNX Runtime); started on first use."""
    from tests.serving import ServerPool

    pool = ServerPool({t: c for t, (c, _) in demo_checkpoints.items()}, tmp_path_factory.mktemp("servers-torch"),
                      SERVE_LIMITS, common=("runtime=torch",))
    _open_pools["served_torch"] = pool
    yield pool
    if _open_pools.pop("served_torch", None) is not None:
        pool.close()
