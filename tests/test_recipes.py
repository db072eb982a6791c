"""experiment=fine_tune and experiment=world_class: stages, their learning rates, checkpoints, one timeline."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from lightcycle.errors import LightcycleError
from lightcycle.plan import optimizer_steps
from lightcycle.run.callbacks import lr_find_section
from lightcycle.run.recipe import parse_stages, resolve_budget, stage_config, stage_epochs
from tests.helpers import run_train, train_here

TINY = ["data=folder", "data.size=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=test_resnet",
        "model.pretrained=false", "trainer.accelerator=cpu"]


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for event_file in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                series.setdefault(tag, {})[e.step] = e.value
    return series


def _fastai_fine_tune_lrs(n_train: int, batch_size: int, epochs: int, base_lr: float) -> list[list[float]]:
    """Every optimizer step's [body lr, head lr] of fastai's own `Learner.fine_tune(epochs, base_lr)` on a
    model its splitter cuts in 2 groups, as `vision_learner` cuts a timm model (body, head)."""
    pytest.importorskip("fastai")
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    import fastai.callback.schedule  # noqa: F401  (Learner.fine_tune)
    import torch
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from torch import nn

    class Record(Callback):
        order = 70  # after ParamScheduler has set the batch's hyper-parameters

        def __init__(self) -> None:
            self.lrs: list[list[float]] = []

        def after_batch(self) -> None:
            if self.training:
                self.lrs.append([h["lr"] for h in self.opt.hypers])

    items = [(torch.randn(4), torch.tensor(i % 2)) for i in range(n_train)]
    dls = DataLoaders.from_dsets(items, items[:8], bs=batch_size, device="cpu")
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    record = Record()
    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), cbs=[record],
                    splitter=lambda m: [list(m[0].parameters()), list(m[1].parameters())])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs, base_lr=base_lr)
    return record.lrs


@pytest.mark.slow
def test_fine_tune_is_fastais_two_fits_on_one_timeline(image_folder, tmp_path):
    run_dir = tmp_path / "ft"
    result = run_train([*TINY, f"data.root={image_folder}", "experiment=fine_tune", "model.lr=2e-3",
                        "recipe.epochs=2", "trainer.log_every_n_steps=1"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "stage-1-frozen.ckpt").is_file()
    assert (run_dir / "checkpoints" / "stage-2-unfrozen.ckpt").is_file()
    assert {"val_loss", "val_accuracy"} <= set(json.loads((run_dir / "metrics.json").read_text()))

    lrs = _scalars(run_dir)
    head = lrs["lr-AdamW/group5"]  # test_resnet: 6 layer groups, head last
    first = lrs["lr-AdamW/group0"]
    steps = sorted(head)
    per_epoch = 36 // 8  # 36 training images, batches of 8, ragged last batch dropped
    assert steps == list(range(per_epoch * 3))  # stage 2 continues where stage 1 ended: one timeline
    stage1, stage2 = steps[:per_epoch], steps[per_epoch:]
    warmup = [head[s] for s in stage1]  # one-cycle with pct_start 0.99: rising towards 2e-3 all stage long
    assert warmup == sorted(warmup) and 1e-3 < warmup[-1] <= 2e-3
    assert head[stage2[0]] == pytest.approx(1e-3 / 5, rel=1e-4)  # base_lr halved, one-cycle div 5
    assert max(head[s] for s in stage2) == pytest.approx(1e-3, rel=0.05)  # peak near step 0.3 * 8
    assert all(first[s] == pytest.approx(head[s] / 100, rel=1e-4) for s in stage2)  # slice(base_lr/100, base_lr)

    # every step of both stages, every layer group, against fastai's own fine_tune on 2 groups (body, head):
    # each body group trains at fastai's body rate, never spread above it
    fastai_lrs = _fastai_fine_tune_lrs(36, 8, epochs=2, base_lr=2e-3)
    assert len(fastai_lrs) == len(steps)
    groups = sorted({tag.split("/")[1].split("_")[0] for tag in lrs if tag.startswith("lr-AdamW/group")
                     and not tag.endswith("-momentum")}, key=lambda g: int(g[5:]))
    assert groups == [f"group{i}" for i in range(6)]
    for group in groups:
        series = lrs[f"lr-AdamW/{group}"]
        expected = [lr[1] if group == "group5" else lr[0] for lr in fastai_lrs]
        assert [series[s] for s in steps] == pytest.approx(expected, rel=1e-4), group

    # one optimizer state across the stages, as fastai's Learner keeps it: the head's and the body's
    # BatchNorm moments count the frozen stage's steps too, the body's other weights only the unfrozen ones
    import torch

    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["optimizer_states"][0]
    steps_of = {g["name"]: {int(saved["state"][i]["step"]) for i in g["params"] if i in saved["state"]}
                for g in saved["param_groups"]}
    assert steps_of["group5_decay"] == {per_epoch * 3}  # head: 4 frozen + 8 unfrozen steps
    assert steps_of["group1_no_decay"] == {per_epoch * 3}  # body BatchNorm, trained while frozen (train_bn)
    assert steps_of["group1_decay"] == {per_epoch * 2}  # body convolutions: the unfrozen stage only

    # the frozen stage is fastai's fit_one_cycle(freeze_epochs, slice(base_lr)): Optimizer.set_hyper gives
    # every group but the head base_lr/10 (only their BatchNorm trains), the head base_lr
    body = {k: v for k, v in lrs.items()
            if k.startswith("lr-AdamW/group") and not k.startswith("lr-AdamW/group5") and not k.endswith("-momentum")}
    assert {k.split("/")[1].split("_")[0] for k in body} == {f"group{i}" for i in range(5)}
    for tag, series in body.items():
        assert all(series[s] == pytest.approx(head[s] / 10, rel=1e-4) for s in stage1), tag

    # quiet, honest output: none of the libraries' known noise; one warning about the few steps, before training
    output = result.stdout + result.stderr
    for noise in ("LeafSpec", "litlogger", "Total FLOPs", "`weights_only` was not set", "exists and is not empty"):
        assert noise not in output, noise
    assert "model summary:" in output and "FLOPs" not in output
    assert output.count("optimizer steps (3 epochs of 4 steps: 36 training images in batches of 8)") == 1
    assert output.index("optimizer steps (") < output.index("epoch 1/1")
    # best and stage checkpoints without optimizer state, last.ckpt complete for resume=true
    import torch

    ckpts = run_dir / "checkpoints"
    for path in [ckpts / "stage-1-frozen.ckpt", ckpts / "stage-2-unfrozen.ckpt", *ckpts.glob("stage*-best-*.ckpt")]:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        assert "optimizer_states" not in saved and {"state_dict", "hyper_parameters"} <= set(saved), path.name
    assert len(list(ckpts.glob("stage*-best-*.ckpt"))) == 2
    assert "optimizer_states" in torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_world_class_runs_every_step_and_resumes_by_stage(image_folder, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "wc"
    args = [*TINY, f"data.root={image_folder}", "experiment=world_class", "recipe.epochs=5", "tta.n=2",
            "lr_find.num_it=12", "recipe.second_lr_find.num_it=12", "recipe.second_lr_find_share=null", "paths.cache_dir=" + str(tmp_path / "cache")]
    capsys.readouterr()
    code = train_here(args, run_dir, monkeypatch)  # in this process; the resume below is a new process, as a user's
    output = "".join(capsys.readouterr())
    assert code == 0, output[-3000:]
    planned = [int(n) for n in re.findall(r"recipe: stage \d/3 '\w+': train \w+, (\d+) epoch", output)]
    assert planned == [1, 1, 3]  # the budget: 1 precomputed + 1 augmented + the rest unfrozen (cycles 1 + 2)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val_accuracy", "tta_accuracy", "ensemble_accuracy"} <= set(metrics)
    names = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert {"stage-1-precomputed.ckpt", "stage-2-augmented.ckpt", "stage-3-unfrozen.ckpt",
            "snapshot-cycle1.ckpt", "snapshot-cycle2.ckpt"} <= names
    assert (run_dir / "lr_find-stage1.png").is_file() and (run_dir / "lr_find-stage3.png").is_file()
    assert "trains the head on cached activations" in output
    assert list((tmp_path / "cache" / "precompute").glob("*/done"))

    again = run_train([*args, "resume=true", "tta.n=0"], run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already done") == 3
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_stage_settings_are_checked_by_name():
    with pytest.raises(LightcycleError, match="unknown setting"):
        parse_stages([{"name": "a", "epoch": 2}])
    with pytest.raises(LightcycleError, match="train must be one of"):
        parse_stages([{"name": "a", "train": "body"}])
    with pytest.raises(LightcycleError, match="non-empty list"):
        parse_stages([])


def test_a_stages_lr_spread_is_checked_and_fine_tune_starts_with_fastais_slice():
    with pytest.raises(LightcycleError, match="lr_spread must be one of geometric, body"):
        parse_stages([{"name": "a", "lr_spread": "flat"}])
    from hydra import compose, initialize_config_dir

    from lightcycle.cli.common import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=fine_tune"])
    frozen, unfrozen = parse_stages(cfg.recipe.stages)
    assert (frozen.lr_mult, frozen.lr_spread) == (10, "body")  # slice(base_lr)
    assert (unfrozen.lr_mult, unfrozen.lr_spread) == (100, "body")  # slice(base_lr / 100, base_lr) over 2 groups
    assert cfg.recipe.keep_optimizer_state is True


def test_a_stage_can_switch_the_schedule_kind():
    cfg = OmegaConf.create({"schedule": {"name": "one_cycle", "pct_start": 0.25, "div": 25.0}, "tta": {"n": 4}})
    OmegaConf.set_struct(cfg, True)
    (stage,) = parse_stages([{"name": "s", "set": {"schedule": {"name": "sgdr", "cycle_len": 1}}}])
    merged = stage_config(cfg, stage, last=False)
    assert OmegaConf.to_container(merged.schedule) == {"name": "sgdr", "cycle_len": 1}
    assert merged.tta.n == 0  # TTA runs after the last stage only
    (tweak,) = parse_stages([{"name": "t", "set": {"schedule": {"pct_start": 0.99}}}])
    assert stage_config(cfg, tweak, last=True).schedule.div == 25.0


def _world_class(*overrides):
    from hydra import compose, initialize_config_dir

    from lightcycle.cli.common import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=["experiment=world_class", *overrides])


@pytest.mark.parametrize("budget, unfrozen_cycles", [(8, [2, 4]), (9, [1, 2, 4]), (5, [1, 2]), (10, [1, 2, 5]), (11, [3, 6])])
def test_world_class_spends_exactly_its_epoch_budget(budget, unfrozen_cycles):
    from lightcycle.schedules import SGDR

    cfg = _world_class(f"recipe.epochs={budget}")
    stages = resolve_budget(cfg, parse_stages(cfg.recipe.stages))
    assert [s.name for s in stages] == ["precomputed", "augmented", "unfrozen"]
    assert sum(stage_epochs(cfg, s) for s in stages) == budget
    schedule = OmegaConf.to_container(stage_config(cfg, stages[-1], last=True).schedule, resolve=True)
    schedule.pop("name")
    assert SGDR(steps_per_epoch=1, **schedule).cycle_epochs() == unfrozen_cycles


def test_an_epoch_budget_too_small_or_ambiguous_is_refused():
    cfg = _world_class("recipe.epochs=2")
    with pytest.raises(LightcycleError, match=r"recipe.epochs=2 leaves no epoch for stage 'unfrozen' after precomputed 1 \+ augmented 1"):
        resolve_budget(cfg, parse_stages(cfg.recipe.stages))
    cfg = _world_class("recipe.epochs=many")
    with pytest.raises(LightcycleError, match="recipe.epochs must be a whole number"):
        resolve_budget(cfg, parse_stages(cfg.recipe.stages))
    with pytest.raises(LightcycleError, match="only one stage may have epochs: rest"):
        resolve_budget(cfg, parse_stages([{"name": "a", "epochs": "rest"}, {"name": "b", "epochs": "rest"}]))
    with pytest.raises(LightcycleError, match="epochs must be a number or 'rest'"):
        parse_stages([{"name": "a", "epochs": "all"}])


@pytest.mark.parametrize("batches, world_size, runs", [(22, 1, True), (7, 1, False), (22, 2, False)])
def test_the_second_range_test_runs_only_when_it_costs_at_most_its_share_of_the_stage(batches, world_size, runs, tmp_path):
    cfg = _world_class("recipe.epochs=8", f"paths.output_dir={tmp_path}")  # unfrozen: 6 epochs; second test: 40 iterations, share 0.35
    stage = resolve_budget(cfg, parse_stages(cfg.recipe.stages))[-1]
    scfg = stage_config(cfg, stage, last=True)
    assert scfg.model.lr == "auto" and scfg.lr_find.skip_share == 0.35
    (finder,) = lr_find_section(scfg)  # decides when the fit's plan has counted the stage's optimizer steps
    trainer = SimpleNamespace(world_size=world_size, limit_train_batches=1.0, accumulate_grad_batches=1)
    steps = stage.epochs * optimizer_steps(trainer, batches)  # what lightcycle.plan counts per process
    # 40 <= 0.35 * 132, but 40 > 0.35 * 42; under DDP on 2 processes each runs 66 steps: 40 > 0.35 * 66
    assert finder.too_costly(steps) is not runs
    no_share = stage_config(cfg, parse_stages(cfg.recipe.stages)[0], last=False)  # the first test: no share
    assert "skip_share" not in no_share.lr_find


def test_world_class_keeps_the_statistics_its_precomputed_head_learned_on():
    """After the head trained on cached activations (computed with the backbone's BatchNorm statistics),
    the augmented stage freezes the body as fastai 0.7 did (train_bn off) and the unfrozen stage keeps
    BatchNorm's statistics (fastai 0.7's bn_freeze): switching them to the data's own undid the head stages."""
    precomputed, augmented, unfrozen = parse_stages(_world_class().recipe.stages)
    assert (precomputed.train_bn, augmented.train_bn, unfrozen.train_bn) == (None, False, None)
    assert (augmented.bn_freeze, unfrozen.bn_freeze) == (False, True)
    assert parse_stages(_world_class("recipe.bn_freeze=false").recipe.stages)[2].bn_freeze is False
