"""What fastai 2.8 and timm users expect on top of the toolbox: MixUp/CutMix, label smoothing, EMA of
the weights, gradient accumulation in optimizer steps, stochastic depth, a look at the batch and
class activation heatmaps; each with the rest of the toolbox."""

from __future__ import annotations

import json
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from timm.data import Mixup

from lightcycle.callbacks import EMA, LRFinder, MixUp, SnapshotEnsemble
from lightcycle.callbacks.ema import warmed_decay
from lightcycle.callbacks.mixup import BatchMixer
from lightcycle.callbacks.progressive_resize import ProgressiveResize
from lightcycle.callbacks.unfreeze import GradualUnfreezing
from lightcycle.data.show import show_batch
from lightcycle.errors import LightcycleError
from lightcycle.interpretation.heatmaps import grad_cam
from lightcycle.module import VisionModule
from lightcycle.predict import Predictor
from lightcycle.tasks import ClassificationTask, MultiLabelTask
from tests.helpers import quick_trainer, run_train, tiny_datamodule, train_checkpoint

SGDR = {"name": "sgdr", "cycle_len": 1, "cycle_mult": 1, "n_cycles": 2, "lr_min": 0.0, "warmup_steps": 0}


def _model(dm, **kwargs) -> VisionModule:
    torch.manual_seed(0)
    return VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2, **kwargs)


class TaskLossSpy(L.Callback):
    """Record (training?, soft targets?) of every loss the task computes, without changing it."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, bool]] = []

    def setup(self, trainer, pl_module, stage):
        for name in ("loss", "validation_loss"):
            original = getattr(pl_module.task, name)

            def spy(output, target, original=original):
                self.calls.append((pl_module.training, target.is_floating_point() and target.ndim == 2))
                return original(output, target)

            setattr(pl_module.task, name, spy)


# --- MixUp / CutMix and label smoothing -------------------------------------------------------------------
def test_soft_targets_are_not_smoothed_twice():
    task = ClassificationTask(["a", "b", "c"], label_smoothing=0.1)
    output, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    mixer = BatchMixer(Mixup(mixup_alpha=0.4, prob=0.0, **task.mix_settings()))  # prob 0: targets only
    x, soft = mixer(torch.randn(6, 3, 8, 8), target)
    assert soft.shape == (6, 3) and soft.is_floating_point()
    assert task.loss(output, soft) == pytest.approx(float(F.cross_entropy(output, target, label_smoothing=0.1)), rel=1e-6)
    assert task.loss(output, target) == pytest.approx(float(F.cross_entropy(output, target, label_smoothing=0.1)))
    # validation reports the unsmoothed loss (as timm does), comparable with tta_loss and ensemble_loss
    assert task.validation_loss(output, target) == pytest.approx(float(F.cross_entropy(output, target)))


def test_odd_batches_mix_all_but_the_last_image():
    task = MultiLabelTask(["a", "b"])
    mixer = BatchMixer(Mixup(mixup_alpha=1.0, prob=1.0, **task.mix_settings()))
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]])
    mixed_x, mixed_y = mixer(x.clone(), y)
    assert mixed_x.shape == x.shape and mixed_y.shape == (5, 2)
    assert torch.equal(mixed_x[-1], x[-1]) and torch.equal(mixed_y[-1], y[-1].float())
    assert ((mixed_y >= 0) & (mixed_y <= 1)).all()
    lam = float(mixed_y[0, 0])  # image 0 mixes with image 3 (the first four reversed): [1, 0] and [0, 0]
    assert torch.allclose(mixed_x[0], lam * x[0] + (1 - lam) * x[3], atol=1e-5)


@pytest.mark.parametrize("task", ["segmentation", "points"])
def test_dense_tasks_refuse_mixing_and_label_smoothing(tmp_path, task):
    dm = tiny_datamodule(task, tmp_path)
    dm.setup("fit")
    model = _model(dm)
    with pytest.raises(LightcycleError, match="cannot be mixed"):
        MixUp(mixup_alpha=0.4).setup(quick_trainer(), model, "fit")
    with pytest.raises(LightcycleError, match="model.label_smoothing=0.1: the .* task has no label smoothing"):
        _model(dm, label_smoothing=0.1)


def test_mixing_reaches_training_and_the_range_test_only(tmp_path):
    """Training steps and the LR range test's sweep see soft (mixed) targets; validation sees plain ones."""
    dm = tiny_datamodule("classification", tmp_path)
    spy = TaskLossSpy()
    model = _model(dm, label_smoothing=0.1)
    finder = LRFinder(num_it=8, plot=False, stop_div=False)
    quick_trainer(max_epochs=1, num_sanity_val_steps=1, callbacks=[spy, MixUp(0.4, 1.0), finder]).fit(model, datamodule=dm)
    training = [soft for train, soft in spy.calls if train]
    validation = [soft for train, soft in spy.calls if not train]
    assert len(training) == 8 + 3 and all(training)  # 8 sweep iterations + 3 training steps, all mixed
    assert validation and not any(validation)
    assert model.task.to_config()["label_smoothing"] == 0.1
    assert model._mix is None  # removed when the fit ends: a later fit without MixUp trains unmixed


def test_no_mixing_while_training_on_precomputed_activations(tmp_path):
    dm = tiny_datamodule("classification", tmp_path)
    dm.setup("fit")
    model = _model(dm)
    calls = []
    model.mix_batches(lambda x, y: calls.append(1) or (x, y))
    features = torch.randn(4, model.head[0].num_features)
    model.use_precomputed(True)
    model.training_step((features, torch.tensor([0, 1, 2, 0])), 0)
    assert not calls and model.precomputed
    model.use_precomputed(False)
    model.training_step((torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), 0)
    assert calls == [1]


def test_label_smoothing_lives_in_the_task_and_the_checkpoint(tmp_path):
    dm = tiny_datamodule("classification", tmp_path)
    model = _model(dm, label_smoothing=0.1, drop_path=0.1)
    trainer = quick_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = VisionModule.load(tmp_path / "m.ckpt")
    assert loaded.task.label_smoothing == 0.1 and loaded.hparams.drop_path == 0.1
    assert torch.load(tmp_path / "m.ckpt", weights_only=True)["hyper_parameters"]["task"]["label_smoothing"] == 0.1


# --- stochastic depth ---------------------------------------------------------------------------------------
def test_drop_path_reaches_timm_and_backbones_without_it_refuse(tmp_path):
    from timm.layers import DropPath

    task = ClassificationTask(["a", "b"])
    model = VisionModule(task, backbone="test_resnet", pretrained=False, drop_path=0.1)
    assert any(isinstance(m, DropPath) and m.drop_prob > 0 for m in model.backbone.modules())
    plain = VisionModule(task, backbone="test_resnet", pretrained=False)
    assert not any(isinstance(m, DropPath) for m in plain.backbone.modules())
    with pytest.raises(LightcycleError, match=r"model.drop_path=0.1: timm's vgg11 has no stochastic depth"):
        VisionModule(task, backbone="vgg11", pretrained=False, drop_path=0.1)
    with pytest.raises(LightcycleError, match=r"model.drop_path must be in \[0, 1\)"):
        VisionModule(task, backbone="test_resnet", pretrained=False, drop_path=1.5)


# --- EMA ------------------------------------------------------------------------------------------------------
def test_ema_decay_warms_up_like_timm():
    assert warmed_decay(0.999, 0) == 0.0
    assert warmed_decay(0.999, 7) == pytest.approx(1 - 8 ** (-2 / 3))
    assert warmed_decay(0.999, 10**6) == 0.999
    assert warmed_decay(0.99, 3, warmup=False) == 0.99
    with pytest.raises(LightcycleError, match="ema.decay must be between 0 and 1"):
        EMA(decay=1.5)


class AtFitEnd(L.Callback):
    """What TTA, snapshot scoring and interpretation see at the end of training (they run in on_fit_end)."""

    def __init__(self, ema: EMA) -> None:
        self.ema, self.same = ema, None

    def on_fit_end(self, trainer, pl_module):
        averaged = self.ema._average_model.module.state_dict()
        self.same = all(torch.equal(v, averaged[k]) for k, v in pl_module.state_dict().items())


def test_ema_weights_are_validated_checkpointed_snapshotted_and_served(tmp_path):
    dm = tiny_datamodule("classification", tmp_path)
    model = _model(dm, schedule=SGDR)
    ema = EMA(decay=0.9)
    snapshots = SnapshotEnsemble(keep=2, dirpath=tmp_path / "ck")
    at_end = AtFitEnd(ema)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)  # saved at every epoch end, mid-training
    trainer = quick_trainer(max_epochs=2, enable_checkpointing=True, callbacks=[ema, snapshots, at_end, checkpoint])
    trainer.fit(model, datamodule=dm)
    assert at_end.same  # the module holds the averaged weights when TTA and interpretation run

    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    averaged, raw = last["state_dict"], last["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)
    final = model.state_dict()
    assert all(torch.equal(final[k], averaged[k]) for k in averaged)
    # the snapshot of the last cycle (its last step is the run's last) holds the averaged weights too
    snapshot = torch.load(tmp_path / "ck" / "snapshot-cycle2.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(snapshot[k], averaged[k]) for k in averaged)

    # validation reported on the averaged weights, and every checkpoint reader gets them
    logged = float(trainer.callback_metrics["val_loss"])
    assert float(trainer.validate(model, datamodule=dm, verbose=False)[0]["val_loss"]) == pytest.approx(logged, rel=1e-5)
    raw_model = _model(dm)
    raw_model.load_state_dict(raw)
    raw_loss = quick_trainer().validate(raw_model, datamodule=dm, verbose=False)[0]["val_loss"]
    assert raw_loss != pytest.approx(logged, rel=1e-4)
    loaded = VisionModule.load(tmp_path / "ck" / "last.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], averaged[k]) for k in averaged)
    predictor = Predictor.from_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert all(torch.equal(predictor.models[0].state_dict()[k], averaged[k]) for k in averaged)


class AtTrainStart(L.Callback):
    def __init__(self, ema: EMA) -> None:
        self.ema, self.averaged, self.current = ema, None, None

    def on_train_start(self, trainer, pl_module):
        self.averaged = {k: v.clone() for k, v in self.ema._average_model.module.state_dict().items()}
        self.current = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_resume_restores_both_weights_and_old_checkpoints_still_load(tmp_path):
    dm = tiny_datamodule("classification", tmp_path)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1, filename="{epoch}")
    quick_trainer(max_epochs=1, enable_checkpointing=True, callbacks=[EMA(decay=0.9), ckpt]).fit(_model(dm), datamodule=dm)
    saved = torch.load(tmp_path / "ck" / "epoch=0.ckpt", weights_only=True)

    ema = EMA(decay=0.9)
    probe = AtTrainStart(ema)
    quick_trainer(max_epochs=2, callbacks=[ema, probe]).fit(_model(dm), datamodule=dm, ckpt_path=tmp_path / "ck" / "epoch=0.ckpt",
                                                           weights_only=True)
    assert all(torch.equal(probe.averaged[k], v) for k, v in saved["state_dict"].items())
    assert all(torch.equal(probe.current[k], v) for k, v in saved["current_model_state"].items())
    assert ema._latest_update_step == 3 + 3

    # a checkpoint made without EMA (or by an older lightcycle, without the new settings) loads and resumes
    plain = tmp_path / "plain.ckpt"
    trainer = quick_trainer(max_epochs=1)
    trainer.fit(_model(dm), datamodule=dm)
    trainer.save_checkpoint(plain)
    state = torch.load(plain, weights_only=True)
    for key in ("label_smoothing", "drop_path"):
        state["hyper_parameters"].pop(key)
    torch.save(state, plain)
    assert VisionModule.load(plain).hparams.get("drop_path", 0.0) == 0.0
    ema = EMA(decay=0.9)
    probe = AtTrainStart(ema)
    quick_trainer(max_epochs=2, callbacks=[ema, probe]).fit(_model(dm), datamodule=dm, ckpt_path=plain, weights_only=True)
    assert all(torch.equal(probe.averaged[k], v) for k, v in state["state_dict"].items())


# --- gradient accumulation: every schedule counts optimizer steps -----------------------------------------
class StepTrace(L.Callback):
    """The lr of every group at every optimizer step, the trainable parameters in every epoch, and
    the batches the LR range test ran (training_step calls before the first training batch)."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.trainable: list[int] = []
        self.sweep_batches = 0
        self._training = False

    def setup(self, trainer, pl_module, stage):
        step = pl_module.training_step

        def counting(batch, batch_idx):
            self.sweep_batches += not self._training
            return step(batch, batch_idx)

        pl_module.training_step = counting

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._training = True
        if batch_idx == 0:  # after every callback's epoch start (unfreezing): what this epoch trains
            self.trainable.append(sum(p.requires_grad for p in pl_module.parameters()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self._training:  # the range test's sweep steps through the same hook
            self.lrs.append([g["lr"] for g in optimizer.param_groups])



def _accumulated_run(tmp_path, batch_size: int, accumulate: int, schedule: dict, extra=()):
    L.seed_everything(0)
    dm = tiny_datamodule("classification", tmp_path / f"b{batch_size}")
    dm.batch_size = batch_size
    dm.augment = "none"
    trace = StepTrace()
    finder = LRFinder(num_it=8, plot=False, apply=False, stop_div=False)
    snapshots = [SnapshotEnsemble(keep=2, dirpath=tmp_path / f"s{batch_size}", evaluate=False)] if schedule["name"] == "sgdr" else []
    callbacks = [trace, finder, *snapshots, *extra]
    trainer = quick_trainer(max_epochs=2, accumulate_grad_batches=accumulate, callbacks=callbacks, limit_val_batches=0)
    trainer.fit(_model(dm, schedule=schedule), datamodule=dm)
    return trainer, trace, finder, snapshots


@pytest.mark.parametrize("schedule", [{"name": "one_cycle"}, SGDR], ids=["one_cycle", "sgdr"])
def test_accumulated_batches_follow_the_schedule_of_the_large_batch(tmp_path, schedule):
    # 18 training images: batch 6 -> 3 optimizer steps per epoch; batch 3 with accumulation 2 -> 6 batches, 3 steps
    def toolbox():
        return [GradualUnfreezing(milestones=[1]), ProgressiveResize({0: 32, 1: 40})]

    big, big_trace, big_finder, big_snaps = _accumulated_run(tmp_path, 6, 1, schedule, toolbox())
    small, small_trace, small_finder, small_snaps = _accumulated_run(tmp_path, 3, 2, schedule, toolbox())
    assert big.global_step == small.global_step == 6
    assert len(big_trace.lrs) == len(small_trace.lrs) == 6
    for a, b in zip(big_trace.lrs, small_trace.lrs):
        assert a == pytest.approx(b, rel=1e-12)
    assert big_trace.trainable == small_trace.trainable and big_trace.trainable[0] < big_trace.trainable[1]
    # the range test: one iteration is one optimizer step of the accumulated batch
    assert big_finder.result.lrs == pytest.approx(small_finder.result.lrs)
    assert len(big_finder.result.lrs) == 8
    assert small_trace.sweep_batches == 2 * big_trace.sweep_batches == 16
    if schedule["name"] == "sgdr":  # snapshots at the same optimizer steps: the cycle ends 2 and 5
        assert [s["step"] for s in big_snaps[0].snapshots] == [s["step"] for s in small_snaps[0].snapshots] == [2, 5]


# --- a look at the batch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["classification", "multilabel", "segmentation", "points"])
def test_show_batch_draws_each_task_its_own_way(tmp_path, task):
    dm = tiny_datamodule(task, tmp_path)
    fig = show_batch(dm, n=4, seed=0)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4
    titles = " ".join(ax.get_title() for ax in axes)
    if task == "classification":
        assert any(name in titles for name in ("red", "green", "blue"))
    if task == "segmentation":  # the mask is painted over the picture: colours the plain picture lacks
        assert "square" in titles
    if task == "points":
        assert all(ax.collections for ax in axes)  # the points are drawn
    again = show_batch(dm, n=4, seed=0)
    first = [ax.images[0].get_array() for ax in axes]
    second = [ax.images[0].get_array() for ax in again.axes if ax.images]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # seeded: the same grid every time


@pytest.mark.slow
def test_lightcycle_data_show_composes_the_train_config(tmp_path):
    from tests.helpers import make_camvid

    root = make_camvid(tmp_path / "camvid")
    out = tmp_path / "look.png"
    args = [sys.executable, "-m", "lightcycle.cli.data", "show", "data=segmentation", f"data.root={root}",
            "data.void_code=void", "data.size=48", "model.backbone=test_resnet", f"output={out}", "n=4"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 augmented training samples (segmentation, 48 px" in result.stdout
    from PIL import Image

    assert Image.open(out).size[0] > 300
    bad = subprocess.run([sys.executable, "-m", "lightcycle.cli.data", "show", "data=nonsense"], capture_output=True,
                         text=True, timeout=240)
    assert bad.returncode == 1 and "Could not find 'data/nonsense'" in bad.stderr and "Traceback" not in bad.stderr


# --- class activation heatmaps -----------------------------------------------------------------------------------
def test_grad_cam_where_the_head_starts_and_at_the_original_size(tmp_path):
    ckpt, dm = train_checkpoint("classification", tmp_path)
    model = VisionModule.load(ckpt).eval()
    x = dm.batch_transform(torch.stack([dm.dataset(dm.valid_samples, train=False)[i][0] for i in range(3)]))
    with torch.no_grad():  # the map is taken exactly where the head starts
        split = model.head(model.backbone.forward_head(model.backbone.forward_features(x)))
        assert torch.allclose(split, model(x), atol=1e-5)
    cams = grad_cam(model, x)
    peaks = cams.amax((1, 2))
    assert cams.shape == (3, 32, 32) and cams.min() >= 0 and (peaks > 0).any()
    assert all(p == 0 or p == pytest.approx(1.0) for p in peaks.tolist())  # scaled to [0, 1] per image
    assert not torch.equal(grad_cam(model, x, index=0), grad_cam(model, x, index=1))  # a map per class

    predictor = Predictor.from_checkpoint(ckpt)
    image = dm.valid_samples[0].path
    cam = predictor.heatmap(image)
    assert cam.shape == (40, 48) and 0 <= cam.min() and cam.max() <= 1  # the file is 48 x 40 pixels

    seg_ckpt, seg_dm = train_checkpoint("segmentation", tmp_path / "seg")
    with pytest.raises(LightcycleError, match="heatmaps: the segmentation task's outputs are already positions"):
        Predictor.from_checkpoint(seg_ckpt).heatmap(seg_dm.valid_samples[0].path)


# --- everything at once, through lightcycle-train ----------------------------------------------------------------
@pytest.mark.slow
def test_every_extra_with_the_whole_toolbox_through_the_command_line(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train([
        "data=folder", f"data.root={image_folder}", "data.size=32", "data.batch_size=6", "data.num_workers=0",
        "model.backbone=test_resnet", "model.pretrained=false", "trainer.accelerator=cpu",
        "mixup.alpha=0.4", "cutmix.alpha=1.0", "model.label_smoothing=0.1", "ema.decay=0.9",
        "trainer.accumulate_grad_batches=2", "model.drop_path=0.05", "model.lr=auto", "lr_find.num_it=8",
        "schedule=sgdr", "schedule.cycle_len=1", "schedule.n_cycles=2", "snapshots.keep=2", "tta.n=2",
        "unfreeze.milestones=[1]", "resize.sizes={0:32,1:40}", "interpret.top_k=4", "show_batch.n=4",
    ], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val_accuracy", "tta_accuracy", "ensemble_accuracy"} <= set(metrics)
    assert (run_dir / "train_batch.png").is_file() and (run_dir / "lr_find.png").is_file()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" in last and last["global_step"] == 2 * 3  # 36 images / 6 = 6 batches = 3 steps
    assert last["hyper_parameters"]["task"]["label_smoothing"] == 0.1
    assert len(list((run_dir / "checkpoints").glob("snapshot-cycle*.ckpt"))) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    assert "data/train_batch" in tags

    from omegaconf import OmegaConf

    from lightcycle.cli.interpret import interpret

    out = tmp_path / "interpret"
    written = interpret(OmegaConf.create({"ckpt": str(run_dir / "checkpoints" / "last.ckpt"), "run_dir": None,
                                          "output_dir": str(out), "top_k": 4, "device": "cpu", "heatmaps": True,
                                          "data": {"num_workers": 0}}))
    assert written["heatmaps_png"] == out / "heatmaps.png" and (out / "heatmaps.png").is_file()
