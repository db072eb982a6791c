"""bench/gpu.py runs unattended: its tiny CPU mode goes through every part (the three training loops,
the loader ceiling on real JPEGs, DDP, torch.compile) and writes one JSON with a number for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_tiny_mode_fills_every_part(tmp_path):
    pytest.importorskip("fastai")
    pytest.importorskip("skimage")  # bench/photos.py's photographs
    out = tmp_path / "gpu.json"
    env = dict(os.environ, LIGHTCYCLE_CACHE=str(tmp_path / "cache"), NO_ALBUMENTATIONS_UPDATE="1")
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--tiny", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert set(parts) == {"train", "loader", "ddp", "compile"}
    rate = lambda result: result.get("images_per_s", 0)  # noqa: E731  a failed contender holds its error instead
    for model in ("resnet50", "efficientnet_lite0"):
        for contender in ("plain", "lightcycle", "fastai"):
            assert rate(parts["train"][model][contender]) > 0, (model, contender, parts["train"][model])
        assert rate(parts["compile"][model]) > 0, parts["compile"]
    for contender in ("lightcycle", "torchvision_uint8", "lightcycle_resnet50_from_jpegs"):
        assert rate(parts["loader"][contender]) > 0, parts["loader"]
    assert parts["ddp"].get("processes") == 2 and rate(parts["ddp"]["resnet50"]) > 0, parts["ddp"]
