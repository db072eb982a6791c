"""Every command line of the scale-out page (docs/scale-out.md) composes, as written, into the config it promises.

The lines are read from the page itself, so the page and this test cannot drift apart. Which lines
also run here (two nodes on loopback, submitit_local) is in tests/test_multinode.py and
tests/test_slurm.py; the page's last section lists them.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests import documented
from lightcycle.run import config_dir

PAGE = "scale-out.md"
SCALE_OUT = documented.commands(PAGE)
TRAIN_LINES = list(dict.fromkeys(line for line in SCALE_OUT if any(e in line for e in documented.ENTRY_POINTS)))
# What the page's variables stand for when a line is composed here.
EXAMPLE_ENV = {"MASTER_ADDR": "node0", "MASTER_PORT": "29500", "SLURM_JOB_ID": "4242"}
PRESETS = ("default", "cpu", "gpu", "ddp", "ddp_cpu", "fp16", "bf16")


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of every job a line starts (one, or each combination of a sweep)."""
    if not multirun:
        return [overrides]
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir(), version_base=None):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("line", TRAIN_LINES)
def test_every_scale_out_command_composes(line, monkeypatch):
    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    overrides, multirun = documented.train_overrides(line)
    overrides = [os.path.expandvars(o) for o in overrides]
    for job in _jobs(overrides, multirun):
        cfg = _compose(job)
        for override in OverridesParser.create().parse_overrides(job):
            key = override.get_key_element()
            if "/" in key or "." not in key and key != "optimized_metric" or key.startswith("hydra."):
                continue  # config groups (trainer=ddp, hydra/launcher=...) and Hydra's settings: composing is the check
            assert OmegaConf.select(cfg, key) == override.value(), (line, key)
        if OmegaConf.select(cfg, "trainer.num_nodes", default=1) > 1 and not multirun:
            assert "${now:" not in OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"], line  # a shared run dir


def test_launcher_shapes_match_the_trainer():
    """torchrun's --nnodes/--nproc-per-node and the sbatch script's nodes/tasks agree with num_nodes/devices."""
    for line in (l for l in TRAIN_LINES if l.startswith("torchrun")):
        words = shlex.split(line)
        nnodes, nproc = int(words[words.index("--nnodes") + 1]), int(words[words.index("--nproc-per-node") + 1])
        overrides = dict(o.split("=", 1) for o in documented.train_overrides(line)[0] if "=" in o)
        assert (int(overrides["trainer.num_nodes"]), int(overrides["trainer.devices"])) == (nnodes, nproc), line
    script = documented.section(PAGE).split("#!/bin/bash", 1)[1].split("```", 1)[0]
    sbatch = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script))
    srun = next(l for l in script.splitlines() if l.startswith("srun "))
    overrides = dict(o.split("=", 1) for o in documented.train_overrides(srun)[0] if "=" in o)
    assert int(sbatch["nodes"]) == int(overrides["trainer.num_nodes"])
    assert int(sbatch["ntasks-per-node"]) == int(overrides["trainer.devices"]) == int(sbatch["gpus-per-node"])
    salloc = re.search(r"`(salloc [^`]*)`", documented.section(PAGE)).group(1).split()
    flags = dict(zip(salloc[1::2], salloc[2::2]))
    assert {k: flags[f"--{k}"] for k in ("nodes", "ntasks-per-node", "gpus-per-node")} == {
        k: sbatch[k] for k in ("nodes", "ntasks-per-node", "gpus-per-node")}
    assert flags["--job-name"] not in ("bash", "interactive")  # Lightning would ignore SLURM


def test_every_command_of_the_section_is_composed_here():
    """No command line in the page's bash blocks escapes `test_every_scale_out_command_composes`."""
    assert SCALE_OUT and TRAIN_LINES == list(dict.fromkeys(SCALE_OUT))


def test_the_install_commands_name_extras_that_bring_the_launchers():
    import tomllib

    extras = tomllib.loads((documented.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    text = documented.section(PAGE)
    for extra, package in (("slurm", "hydra-submitit-launcher"), ("sweep", "hydra-optuna-sweeper")):
        assert f'python -m pip install -e ".[{extra}]"' in text, extra
        assert any(r.startswith(package) for r in extras[extra]), extra
        assert any(r.startswith(package) for r in extras["dev"]), package  # so the test suite runs them


def _documented_trainer_keys() -> dict[str, str]:
    """Every `trainer.<key>=<value>` the README and the user pages write without '+' (keys the presets must already have)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in documented.user_pages())
    found = re.findall(r"(?<![+\w.])trainer\.(\w+)=([\w.-]+)", text)
    return {key: value if re.fullmatch(r"[\d.e-]+|true|false", value) else "2" for key, value in found}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_takes_every_documented_trainer_key(preset):
    keys = _documented_trainer_keys()
    assert {"num_nodes", "devices", "max_epochs", "accumulate_grad_batches"} <= set(keys)
    cfg = _compose([f"trainer={preset}", *(f"trainer.{k}={v}" for k, v in keys.items())])
    for key, value in keys.items():
        got = cfg.trainer[key]
        assert (str(got).lower() if isinstance(got, bool) else str(got)) == value, key
