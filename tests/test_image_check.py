"""The pre-training image check: same verdict as a full decode, bounded memory, every core for small images."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightcycle.data import checks
from lightcycle.data.checks import DecodeBudget, check_image, find_bad_images, load_image
from lightcycle.errors import LightcycleError


def _encoded(kind: str) -> tuple[bytes, str]:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    if kind == "jpeg":
        rgb.save(buf, "JPEG", quality=90)
    elif kind == "progressive_jpeg":
        rgb.save(buf, "JPEG", quality=90, progressive=True)
    elif kind == "png":
        rgb.save(buf, "PNG")
    elif kind == "palette_png":
        rgb.convert("P", palette=Image.ADAPTIVE, colors=16).save(buf, "PNG", transparency=3)
    elif kind == "bilevel_png":
        rgb.convert("1").save(buf, "PNG")
    elif kind == "gif":
        rgb.convert("P", palette=Image.ADAPTIVE).save(buf, "GIF")
    return buf.getvalue(), ".gif" if kind == "gif" else ".jpg" if "jpeg" in kind else ".png"


@pytest.mark.parametrize("kind", ["jpeg", "progressive_jpeg", "png", "palette_png", "bilevel_png", "gif"])
def test_the_check_accepts_exactly_what_load_image_can_read(tmp_path, kind):
    """Truncations and flipped bytes: the check (own mode, JPEG at 1/8 scale, a corner to RGB) passes a
    file if and only if the full decode to RGB that training does succeeds."""
    data, suffix = _encoded(kind)
    rng = np.random.default_rng(7)
    verdicts = []
    for case in range(40):
        damaged = bytearray(data)
        if case % 2:
            damaged = damaged[: int(rng.integers(8, len(data)))]
        else:
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
                damaged[i] = int(rng.integers(0, 256))
        path = tmp_path / f"{case}{suffix}"
        path.write_bytes(bytes(damaged))
        try:
            load_image(path)
            loads = True
        except LightcycleError:
            loads = False
        verdicts.append(loads)
        assert (check_image(path) is None) == loads, (case, check_image(path))
    assert not all(verdicts)  # the damage did break some of them


def test_decode_budget_never_exceeds_its_total_and_a_huge_image_decodes_alone():
    budget = DecodeBudget(100)
    inside, peak, lock = [0], [0], threading.Lock()

    def decode(cost: int) -> None:
        with budget.reserve(cost):
            with lock:
                inside[0] += cost if cost <= 100 else 100
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= cost if cost <= 100 else 100

    threads = [threading.Thread(target=decode, args=(c,)) for c in [40, 40, 40, 40, 500, 30, 30, 30]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] <= 100 and budget.peak <= 100 and budget.used == 0
    assert budget.peak >= 70  # small ones did run side by side


def test_find_bad_images_uses_every_core_for_small_images_and_the_budget_for_large(tmp_path, monkeypatch):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (300, 200), i * 30).save(paths[-1])
    pools, budgets = [], []
    real_pool, real_budget = checks.ThreadPoolExecutor, checks.DecodeBudget
    monkeypatch.setattr(checks, "ThreadPoolExecutor",
                        lambda max_workers: pools.append(max_workers) or real_pool(max_workers))
    monkeypatch.setattr(checks, "DecodeBudget", lambda total: budgets.append(real_budget(total)) or budgets[-1])
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert find_bad_images(paths) == []
    assert pools == [6]  # one thread per core, not a fixed 8
    # 300x200 grey = 60,000 bytes, doubled for a rotated copy: a 130,000-byte budget holds one at a time
    assert find_bad_images(paths, budget_bytes=130_000) == []
    assert budgets[-1].peak == 120_000


CHILD = """
import json, resource, sys
from lightcycle.data.checks import find_bad_images
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
paths = sys.argv[1:]
before = rss()
bad = find_bad_images(paths, workers=len(paths))
print(json.dumps({"bad": bad, "grew": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}))
"""


@pytest.mark.slow
def test_large_bilevel_scans_are_checked_without_rgb_copies(tmp_path):
    """Four 6000x6000 1-bit PNGs (tiny files) checked at once by 4 threads: decoding each to RGB as
    training does would take about 4 x 250 MB; the check holds them as 1 byte a pixel (36 MB each); the bound leaves room for the allocator."""
    img = Image.new("1", (6000, 6000), 1)
    img.paste(0, (1000, 1000, 2000, 1400))
    first = tmp_path / "scan_0.png"
    img.save(first)
    paths = [first] + [tmp_path / f"scan_{i}.png" for i in range(1, 4)]
    for path in paths[1:]:
        path.write_bytes(first.read_bytes())
    result = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["bad"] == []
    assert out["grew"] < 600e6, f"the check grew by {out['grew'] / 1e6:.0f} MB"


def test_a_huge_image_within_the_limit_is_still_fully_checked(tmp_path):
    """A truncated large PNG is found although the check never builds its RGB copy."""
    path = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((1500, 1500)) > 0.5)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in check_image(path) or "broken" in check_image(path)
    assert find_bad_images([path])[0][0] == Path(path)
