"""Every lightcycle-train line of the README and the user pages composes, as written, into the config it
promises (the scale-out page's lines, with their launchers and sweeps, have tests/test_docs_scale_out.py)."""

from __future__ import annotations

import os
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lightcycle.run import config_dir
from tests import documented


def train_lines() -> list[tuple[str, str]]:
    """(page, line) for every lightcycle-train command line outside the scale-out page, each once."""
    found: dict[str, str] = {}
    for path in documented.user_pages():
        if path.name == "scale-out.md":
            continue
        for line in documented.commands(path.name):
            if any(entry in line for entry in documented.ENTRY_POINTS):
                found.setdefault(line.split("#", 1)[0].strip(), path.name)
    return [(page, line) for line, page in found.items()]


LINES = train_lines()


def test_the_readme_and_the_pages_have_training_lines():
    pages = {page for page, _ in LINES}
    assert {"README.md", "tasks.md", "toolbox.md", "recipes.md"} <= pages, pages
    assert len(LINES) >= 15


def test_no_documented_override_starts_its_value_with_a_tilde():
    """bash leaves `key=~/x` alone (it expands `~` only at a word's start), and Hydra's grammar refuses
    it; the pages write `$HOME/...`, which the shell expands."""
    bad = [(path.name, line) for path in documented.user_pages()
           for line in documented.commands(path.name) if re.search(r"\S=~", line)]
    assert not bad, bad


@pytest.mark.slow  # about 0.5 s a line: a Hydra compose each
@pytest.mark.parametrize(("page", "line"), LINES, ids=[f"{p}:{l[:60]}" for p, l in LINES])
def test_every_training_line_composes(page, line, monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")  # what the shell puts for $HOME
    overrides, multirun = documented.train_overrides(line)
    overrides = [os.path.expandvars(o) for o in overrides]
    assert not multirun, (page, line)  # sweeps live on the scale-out page
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("train", overrides=overrides)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if "/" in key or "." not in key or key.startswith("hydra."):
            continue  # config groups (data=folder, experiment=...) and Hydra's settings: composing is the check
        assert OmegaConf.select(cfg, key) == override.value(), (page, line, key)
