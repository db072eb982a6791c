"""SLURM through Hydra's submitit launcher: the scale-out page's commands compose, tasks map to Lightning's ranks,
and `hydra/launcher=submitit_local` runs a real two-job sweep here (no cluster needed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from tests import documented
from tests.nodes import TINY, node_env
from lightcycle.run import build_trainer, config_dir

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the slurm extra: pip install 'lightcycle[slurm]'")

SCALE_OUT = documented.commands("scale-out.md")
SUBMITIT_SLURM = documented.find(("hydra/launcher=submitit_slurm",), SCALE_OUT)
SUBMITIT_LOCAL = documented.find(("hydra/launcher=submitit_local",), SCALE_OUT)


def _cfg_cli(line: str, cwd: Path) -> str:
    """`lightcycle-train <the line's overrides> --cfg all` (a multirun's `-m` dropped: --cfg excludes it)."""
    overrides, _ = documented.train_overrides(line)
    result = subprocess.run([sys.executable, "-m", "lightcycle.cli.train", *overrides, "--cfg", "all"],
                            capture_output=True, text=True, timeout=120, cwd=cwd, env=node_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_readme_submitit_slurm_command_composes(tmp_path):
    import yaml

    cfg = yaml.safe_load(_cfg_cli(SUBMITIT_SLURM, tmp_path))
    launcher = cfg["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["timeout_min"]) == (2, 4, 4, 600)
    trainer = cfg["trainer"]
    # one SLURM task per GPU: Lightning's devices x num_nodes must equal the launcher's tasks
    assert trainer["devices"] * trainer["num_nodes"] == launcher["tasks_per_node"] * launcher["nodes"]
    assert trainer["strategy"] == "ddp_find_unused_parameters_true" and trainer["accelerator"] == "gpu"


def _use_srun_environ(monkeypatch, procid: int, localid: int, nodeid: int, **extra: str) -> None:
    """What srun sets for one task of 2 nodes x 4 tasks; everything restored after the test (also the
    MASTER_ADDR/MASTER_PORT that Lightning's SLURM environment writes into os.environ)."""
    for key in [k for k in os.environ if k.startswith("SLURM_")] + ["MASTER_ADDR", "MASTER_PORT"]:
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)
    values = dict(SLURM_NTASKS="8", SLURM_NTASKS_PER_NODE="4", SLURM_NNODES="2", SLURM_PROCID=str(procid),
                  SLURM_LOCALID=str(localid), SLURM_NODEID=str(nodeid), SLURM_JOB_ID="4242", SLURM_JOB_NAME="train",
                  SLURM_NODELIST="gpu-node[17-18]")
    for key, value in {**values, **extra}.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("procid, localid, nodeid", [(0, 0, 0), (5, 1, 1), (7, 3, 1)])
def test_srun_tasks_map_to_lightning_slurm_ranks(procid, localid, nodeid, monkeypatch):
    """The scale-out page's srun command, composed, builds a Trainer whose ranks are SLURM's (on CPU here: only
    `trainer.accelerator` is changed, as there is no GPU)."""
    srun = documented.find(("srun lightcycle-train", "slurm-$SLURM_JOB_ID"), SCALE_OUT)
    _use_srun_environ(monkeypatch, procid, localid, nodeid)
    overrides = [os.path.expandvars(o) for o in documented.train_overrides(srun)[0]]
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("train", overrides=[*overrides, "trainer.accelerator=cpu"], return_hydra_config=True)
    assert cfg.hydra.run.dir == "outputs/slurm-4242"  # every task names the same run dir
    trainer_cfg = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=False).items() if k != "default_root_dir"}
    trainer = build_trainer(trainer_cfg, [], False)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and SLURMEnvironment.detect()
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (procid, localid, nodeid, 8)
    assert env.main_address == "gpu-node17" and env.main_port == 15000 + 4242  # first node, port from the job id
    env.validate_settings(num_devices=trainer_cfg["devices"], num_nodes=trainer_cfg["num_nodes"])  # 4 per node, 2 nodes
    with pytest.raises(ValueError, match="num_nodes"):
        env.validate_settings(num_devices=4, num_nodes=1)  # what a mismatched trainer.num_nodes gets


def test_an_interactive_job_name_hides_slurm_from_lightning(monkeypatch):
    """Why the scale-out page's salloc gives --job-name: Lightning ignores SLURM in jobs named bash or interactive."""
    _use_srun_environ(monkeypatch, 1, 1, 0, SLURM_JOB_NAME="bash")
    assert not SLURMEnvironment.detect()
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert SLURMEnvironment.detect()


@pytest.mark.slow
def test_submitit_local_runs_the_readme_two_job_sweep(image_folder, tmp_path):
    overrides, multirun = documented.train_overrides(SUBMITIT_LOCAL)
    assert multirun and "model.lr=1e-3,3e-3" in overrides
    sweep = tmp_path / "sweep"
    tiny = [*TINY, "data=folder", f"data.root={image_folder}", "data.batch_size=8", "~logger", "trainer=cpu",
            "interpret.top_k=0", "+trainer.limit_val_batches=1", f"hydra.sweep.dir={sweep}"]
    result = subprocess.run([sys.executable, "-m", "lightcycle.cli.train", "-m", *overrides, *tiny],
                            capture_output=True, text=True, timeout=400, cwd=tmp_path, env=node_env())
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert {"val_loss", "val_accuracy"} <= set(json.loads((sweep / job / "metrics.json").read_text()))
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["overrides"].split("model.lr=")[1].split()[0]) for r in rows) == [1e-3, 3e-3]
    assert len(list((sweep / ".submitit").rglob("*_result.pkl"))) == 2  # both ran as submitit jobs
