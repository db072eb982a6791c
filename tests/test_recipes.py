"""experiment=fine_tune and experiment=world_class: stages, their learning rates, checkpoints, one timeline."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lightcycle.errors import LightcycleError
from lightcycle.recipes import parse_stages, stage_config
from test_cli_train import run_train

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


def test_fine_tune_is_fastais_two_fits_on_one_timeline(image_folder, tmp_path):
    run_dir = tmp_path / "ft"
    result = run_train([*TINY, f"data.root={image_folder}", "experiment=fine_tune", "model.lr=2e-3",
                        "recipe.epochs=2"], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "stage-1-frozen.ckpt").is_file()
    assert (run_dir / "checkpoints" / "stage-2-unfrozen.ckpt").is_file()
    assert {"val_loss", "val_accuracy"} <= set(json.loads((run_dir / "metrics.json").read_text()))

    lrs = _scalars(run_dir)
    head = next(v for k, v in lrs.items() if k.startswith("lr-AdamW/group5_"))  # test_resnet: 6 groups, head last
    first = next(v for k, v in lrs.items() if k.startswith("lr-AdamW/group0_"))
    steps = sorted(head)
    per_epoch = 36 // 8  # 36 training images, batches of 8, ragged last batch dropped
    assert steps == list(range(per_epoch * 3))  # stage 2 continues where stage 1 ended: one timeline
    stage1, stage2 = steps[:per_epoch], steps[per_epoch:]
    warmup = [head[s] for s in stage1]  # one-cycle with pct_start 0.99: rising towards 2e-3 all stage long
    assert warmup == sorted(warmup) and 1e-3 < warmup[-1] <= 2e-3
    assert head[stage2[0]] == pytest.approx(1e-3 / 5, rel=1e-4)  # base_lr halved, one-cycle div 5
    assert max(head[s] for s in stage2) == pytest.approx(1e-3, rel=0.05)  # peak near step 0.3 * 8
    assert all(first[s] == pytest.approx(head[s] / 100, rel=1e-4) for s in stage2)  # slice(base_lr/100, base_lr)


def test_world_class_runs_every_step_and_resumes_by_stage(image_folder, tmp_path):
    run_dir = tmp_path / "wc"
    args = [*TINY, f"data.root={image_folder}", "experiment=world_class", "recipe.cycles=2", "tta.n=2",
            "lr_find.num_it=12", "paths.cache_dir=" + str(tmp_path / "cache")]
    result = run_train(args, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"val_accuracy", "tta_accuracy", "ensemble_accuracy"} <= set(metrics)
    names = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert {"stage-1-precomputed.ckpt", "stage-2-augmented.ckpt", "stage-3-unfrozen.ckpt",
            "snapshot-cycle1.ckpt", "snapshot-cycle2.ckpt"} <= names
    assert (run_dir / "lr_find-stage1.png").is_file() and (run_dir / "lr_find-stage3.png").is_file()
    assert "trains the head on cached activations" in result.stdout + result.stderr
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


def test_a_stage_can_switch_the_schedule_kind():
    cfg = OmegaConf.create({"schedule": {"name": "one_cycle", "pct_start": 0.25, "div": 25.0}, "tta": {"n": 4}})
    OmegaConf.set_struct(cfg, True)
    (stage,) = parse_stages([{"name": "s", "set": {"schedule": {"name": "sgdr", "cycle_len": 1}}}])
    merged = stage_config(cfg, stage, last=False)
    assert OmegaConf.to_container(merged.schedule) == {"name": "sgdr", "cycle_len": 1}
    assert merged.tta.n == 0  # TTA runs after the last stage only
    (tweak,) = parse_stages([{"name": "t", "set": {"schedule": {"pct_start": 0.99}}}])
    assert stage_config(cfg, tweak, last=True).schedule.div == 25.0
