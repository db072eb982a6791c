"""The three training loops bench/gpu.py times, on synthetic uint8 batches normalised on the device:
a plain PyTorch loop, lightcycle (the Trainer lightcycle-train builds) and fastai (`to_bf16` +
channels_last). Each returns images/s over a window of steps after warm-up (`Window`).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

# --- shared pieces -------------------------------------------------------------------------------------
def device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Window:
    """Images/s between the starts of steps `warmup` and `warmup + steps`, synchronised at both ends."""

    def __init__(self, warmup: int, steps: int, images_per_step: int) -> None:
        self.warmup, self.steps, self.images = warmup, steps, images_per_step
        self.t0 = self.t1 = None
        self.first_done: float | None = None  # seconds from creation to the end of the first step (compile)
        self.created = time.perf_counter()

    def at(self, step: int) -> None:
        if step == 1 and self.first_done is None:
            sync()
            self.first_done = time.perf_counter() - self.created
        if step in (self.warmup, self.warmup + self.steps):
            sync()
            if step == self.warmup:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()

    def result(self) -> dict[str, Any]:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the timing window did not close: too few steps ran")
        out = {"images_per_s": round(self.steps * self.images / (self.t1 - self.t0), 1),
               "step_ms": round(1e3 * (self.t1 - self.t0) / self.steps, 2)}
        if self.first_done is not None:
            out["seconds_to_first_step"] = round(self.first_done, 2)
        return out


def synthetic_batches(cfg: dict[str, Any], count: int = 4) -> list[Any]:
    """`count` distinct (uint8 images, labels) batches in pinned memory, cycled by the loaders."""
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        x = torch.randint(0, 256, (cfg["batch_size"], 3, cfg["size"], cfg["size"]), dtype=torch.uint8, generator=g)
        y = torch.randint(0, cfg["classes"], (cfg["batch_size"],), generator=g)
        out.append((x.pin_memory(), y.pin_memory()) if torch.cuda.is_available() else (x, y))
    return out


class Cycled:
    """Dataset whose item i is pre-made batch i % k (a DataLoader with batch_size=None serves it)."""

    def __init__(self, batches: list[Any], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        return self.batches[i % len(self.batches)]


def make_module(backbone: str, classes: int, compile: Any = False) -> Any:
    import torch

    from lightcycle.module import VisionModule
    from lightcycle.tasks import ClassificationTask

    torch.manual_seed(0)
    return VisionModule(ClassificationTask(class_names=[f"c{i}" for i in range(classes)]), backbone=backbone,
                        pretrained=False, lr=1e-3, compile=compile)


def normalizer() -> Any:
    from lightcycle.data.transforms import Normalization, normalize_batch

    norm = Normalization()
    return lambda x: normalize_batch(x, norm)


# --- contenders ------------------------------------------------------------------------------------------------
def run_plain(backbone: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    dev, normalize = device(), normalizer()
    module = make_module(backbone, cfg["classes"])
    model = nn.Sequential(module.backbone, module.head).to(dev, memory_format=torch.channels_last)
    groups = module.param_groups()
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-5,
                                  fused=True if dev.type == "cuda" else None)  # as VisionModule on CUDA
    total = cfg["warmup"] + cfg["steps"] + 1
    # at least 20 scheduled steps: OneCycleLR divides by its warm-up length (0 steps of a tiny run's 4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=max(total, 20),
                                                    pct_start=0.25, div_factor=25.0, final_div_factor=4e3)
    window = Window(cfg["warmup"], cfg["steps"], cfg["batch_size"])
    batches = synthetic_batches(cfg)
    model.train()
    for step in range(total):
        window.at(step)
        x, y = batches[step % len(batches)]
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(normalize(x).contiguous(memory_format=torch.channels_last)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return window.result()


def lightcycle_fit(model: Any, datamodule: Any, window: Window, limit: int, preset: str = "bf16",
                   trainer_overrides: tuple[str, ...] = ("trainer.devices=1",)) -> None:
    """Fit `limit` steps in the Trainer lightcycle-train builds (its logger and callbacks) from
    `trainer=<preset>` plus overrides (one GPU unless told otherwise: `devices: auto` takes them all)."""
    import lightning as L
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lightcycle.run import build, build_trainer, config_callbacks, config_dir

    class Timer(L.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            window.images *= trainer.world_size  # DDP: images over every rank

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            window.at(trainer.global_step)

    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        overrides = [f"paths.output_dir={out}", f"trainer={preset}", "trainer.enable_progress_bar=false",
                     "callbacks.model_checkpoint=null", *trainer_overrides]
        cfg = compose("train", overrides=overrides)
        logger = build(cfg.logger)
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        trainer_cfg.update(enable_model_summary=False, max_epochs=-1, max_steps=limit, limit_val_batches=0,
                           num_sanity_val_steps=0, use_distributed_sampler=False)  # DDP: each rank its own batches
        trainer = build_trainer(trainer_cfg, config_callbacks(cfg, logger) + [Timer()], logger)
        trainer.fit(model, datamodule=datamodule)


def synthetic_datamodule(cfg: dict[str, Any]) -> Any:
    import lightning as L
    from torch.utils.data import DataLoader

    normalize = normalizer()
    total = cfg["warmup"] + cfg["steps"] + 1

    class Synthetic(L.LightningDataModule):
        """uint8 batches from pinned memory, normalised on the device after the transfer (as ImageDataModule)."""

        def train_dataloader(self) -> Any:
            return DataLoader(Cycled(synthetic_batches(cfg), total), batch_size=None, shuffle=False)

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            return [normalize(batch[0]), batch[1]]

    return Synthetic()


def run_lightcycle(backbone: str, cfg: dict[str, Any], compile: Any = False, preset: str = "bf16",
                   overrides: tuple[str, ...] = ("trainer.devices=1",)) -> dict[str, Any]:
    window = Window(cfg["warmup"], cfg["steps"], cfg["batch_size"])
    model = make_module(backbone, cfg["classes"], compile)
    lightcycle_fit(model, synthetic_datamodule(cfg), window, cfg["warmup"] + cfg["steps"] + 1, preset, overrides)
    return window.result()


def run_fastai(backbone: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import fastai.callback.channelslast  # noqa: F401  Learner.to_channelslast
    import fastai.callback.progress  # noqa: F401  Learner.no_bar
    import fastai.callback.schedule  # noqa: F401  Learner.fit_one_cycle
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader as FastaiDataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.optimizer import Adam
    from torch import nn

    dev, normalize = device(), normalizer()
    window = Window(cfg["warmup"], cfg["steps"], cfg["batch_size"])

    class Prepare(Callback):
        order = -50  # before ChannelsLast (-1) and MixedPrecision (10): uint8 -> normalised on the device

        def before_batch(self) -> None:
            if self.training:
                window.at(self.iter)
            self.learn.xb = (normalize(self.xb[0]),)

    module = make_module(backbone, cfg["classes"])
    total = cfg["warmup"] + cfg["steps"] + 1
    batches = synthetic_batches(cfg)
    one = lambda b: b[0]  # noqa: E731  items are whole batches
    train = FastaiDataLoader(Cycled(batches, total), bs=1, create_batch=one, shuffle=False, device=dev)
    valid = FastaiDataLoader(Cycled(batches, 1), bs=1, create_batch=one, device=dev)
    learn = Learner(DataLoaders(train, valid, device=dev), nn.Sequential(module.backbone, module.head),
                    loss_func=CrossEntropyLossFlat(), opt_func=Adam, wd=0.01, cbs=[Prepare()])
    learn.to_channelslast(amp_mode="bf16")
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, 1e-3)
    return window.result()
