"""Hydra multiruns: one metrics.json per job, a summary table, and the Optuna sweeper's objective."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightcycle.cli.summary import write_summary
from lightcycle.errors import LightcycleError

TINY = ["data=folder", "data.size=32", "data.batch_size=8", "data.num_workers=0", "model.backbone=test_resnet",
        "model.pretrained=false", "~logger", "trainer=cpu", "trainer.max_epochs=1", "+trainer.limit_val_batches=1",
        "interpret.top_k=0", "show_batch.n=0"]  # no end-of-run report: every job's metrics are what is checked


def run_multirun(args: list[str], sweep_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    cmd = [sys.executable, "-m", "lightcycle.cli.train", "-m", f"hydra.sweep.dir={sweep_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_multirun_writes_one_metrics_json_per_job_and_a_summary(image_folder, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_multirun([*TINY, f"data.root={image_folder}", "model.lr=1e-3,1e-2"], sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert {"val_loss", "val_accuracy"} <= set(metrics)
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["overrides"].split("model.lr=")[1].split()[0]) for r in rows) == [1e-3, 1e-2]
    assert all(float(r["val_loss"]) > 0 for r in rows)
    assert "multirun summary" in result.stdout and "model.lr=0.01" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_optuna_sweep_optimises_the_chosen_metric(image_folder, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "optuna"
    result = run_multirun(
        [*TINY, f"data.root={image_folder}", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
         "optimized_metric=val_accuracy", "hydra.sweeper.direction=maximize"],
        sweep,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads(json.dumps(__import__("yaml").safe_load((sweep / "optimization_results.yaml").read_text())))
    assert best["name"] == "optuna" and "model.lr" in best["best_params"]
    accuracies = [json.loads((sweep / j / "metrics.json").read_text())["val_accuracy"] for j in ("0", "1")]
    assert best["best_value"] == pytest.approx(max(accuracies))


@pytest.mark.slow
def test_unknown_optimized_metric_is_named(image_folder, tmp_path):
    from tests.helpers import run_train

    result = run_train([*TINY, f"data.root={image_folder}", "optimized_metric=val_f1"], tmp_path / "run")
    assert result.returncode == 1
    assert "optimized_metric='val_f1' is not among this run's metrics" in result.stderr


def test_summary_ranks_jobs_and_flags_unfinished_ones(tmp_path):
    for job, loss in (("0", 0.5), ("1", 0.2), ("2", None)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- model.lr={job}\n")
        if loss is not None:
            (tmp_path / job / "metrics.json").write_text(json.dumps({"val_loss": loss}))
    rows = write_summary(tmp_path, sort_by="val_loss")
    assert [r["job"] for r in rows] == ["1", "0", "2"]
    assert rows[2]["status"].startswith("no metrics.json")
    assert (tmp_path / "summary.csv").read_text().splitlines()[0] == "job,overrides,val_loss,status"
    with pytest.raises(LightcycleError, match="no Hydra job folders"):
        write_summary(tmp_path / "0" / ".hydra")


@pytest.mark.parametrize("saved", ["multirun.yaml", "job"])
def test_summary_cli_ranks_by_the_sweeps_metric_and_direction(tmp_path, saved, capsys):
    """`lightcycle-summary DIR` rewrites summary.csv ranked as the sweep ranked it, not in job order."""
    from lightcycle.cli.summary import main

    for job, accuracy in (("0", 0.5), ("1", 0.9), ("2", 0.7)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- model.lr={job}\n")
        (tmp_path / job / "metrics.json").write_text(json.dumps({"val_accuracy": accuracy, "val_loss": 1 - accuracy / 2}))
        if saved == "job":
            (tmp_path / job / ".hydra" / "config.yaml").write_text("optimized_metric: val_accuracy\n")
            (tmp_path / job / ".hydra" / "hydra.yaml").write_text("hydra:\n  sweeper:\n    direction: maximize\n")
    if saved == "multirun.yaml":
        (tmp_path / "multirun.yaml").write_text("hydra:\n  sweeper:\n    direction: maximize\noptimized_metric: val_accuracy\n")
    main([str(tmp_path)])
    with open(tmp_path / "summary.csv") as f:
        assert [r["job"] for r in csv.DictReader(f)] == ["1", "2", "0"]
    printed = capsys.readouterr().out
    assert printed.index("| 1 |") < printed.index("| 2 |") < printed.index("| 0 |")
    main([str(tmp_path), "--sort", "val_loss"])
    with open(tmp_path / "summary.csv") as f:
        assert [r["job"] for r in csv.DictReader(f)] == ["1", "2", "0"]  # lower loss first
    main([str(tmp_path), "--sort", "val_accuracy"])
    with open(tmp_path / "summary.csv") as f:
        assert [r["job"] for r in csv.DictReader(f)] == ["0", "2", "1"]
