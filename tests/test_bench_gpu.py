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
    for model in ("resnet50", "efficientnet_lite0"):
        for contender in ("plain", "lightcycle", "fastai"):
            assert parts["train"][model][contender]["images_per_s"] > 0, (model, contender, parts["train"][model])
        assert parts["compile"][model]["images_per_s"] > 0, parts["compile"]
    assert parts["loader"]["lightcycle"]["images_per_s"] > 0 and parts["loader"]["torchvision_uint8"]["images_per_s"] > 0
    assert parts["loader"]["lightcycle_resnet50_from_jpegs"]["images_per_s"] > 0, parts["loader"]
    assert parts["ddp"]["processes"] == 2 and parts["ddp"]["resnet50"]["images_per_s"] > 0, parts["ddp"]
