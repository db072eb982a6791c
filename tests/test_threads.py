"""The training process's intra-op threads on CPU: the cores the DataLoader workers leave, unless the user chose."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch

from lightcycle.data.base import available_cores
from lightcycle.run.threads import set_training_threads, training_threads, user_thread_setting


def test_the_training_process_takes_the_cores_the_workers_leave():
    assert training_threads(cores=2, workers=1) == 1  # the 2-core machine: 1 worker + 1 thread, not 1 + 2
    assert training_threads(cores=16, workers=3) == 13
    assert training_threads(cores=32, workers=7, processes=4) == 1  # 4 processes of 8 cores, 7 workers each
    assert training_threads(cores=1, workers=0) == 1
    assert training_threads(cores=2, workers=4) == 1  # more workers than cores: never 0 threads


def test_cpu_fits_set_the_threads_and_an_explicit_setting_wins(monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    datamodule = SimpleNamespace(num_workers=0)
    torch.set_num_threads(1)
    assert set_training_threads(trainer, datamodule) == available_cores()
    assert torch.get_num_threads() == available_cores()

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert user_thread_setting() == "OMP_NUM_THREADS=1"
    assert set_training_threads(trainer, datamodule) is None
    assert torch.get_num_threads() == 1  # the user's choice stands

    gpu_like = SimpleNamespace(accelerator=object(), num_devices=1)  # not a CPU accelerator: untouched
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert set_training_threads(gpu_like, datamodule) is None
    assert torch.get_num_threads() == 1
