"""The same product from Python and from the commands: every default of the public classes equals the
value conf/ gives the same setting.

Each config file (composed in-process with Hydra's compose API, as the commands compose it) is read key
by key and compared with the default of the Python parameter that key sets. A key that cannot be
compared (required `???`, a value that follows another setting or the run, an off switch whose Python
class only exists when the feature is on) is listed in `SKIPPED` with the reason; a key neither compared
nor listed fails the test, so a new setting cannot slip past it.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable

from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lightcycle import callbacks as cb
from lightcycle.export import export
from lightcycle.module import VisionModule
from lightcycle.predict import Predictor
from lightcycle.predict.inputs import list_inputs, vet_inputs
from lightcycle.run.config import config_dir
from lightcycle.schedules import SGDR, Constant, OneCycle
from lightcycle.serve import server

OFF_SWITCH = "the off switch of a toolbox section: the Python callback exists only when the feature is on"
FOLLOWS_SEED = "follows the run's seed"

# (config file, key) -> why it is not compared with a Python default.
SKIPPED: dict[tuple[str, str], str] = {
    ("data", "_target_"): "the class itself",
    ("data", "backbone"): "interpolates model.backbone: the DataModule normalises with the statistics of the model it "
                          "feeds; Python passes the backbone (None = ImageNet's)",
    ("data", "cache_dir"): "interpolates paths.cache_dir ($LIGHTCYCLE_CACHE); None in Python reads the same variable",
    ("data", "path"): "arrays: the .npz to read, required (Python passes arrays or path)",
    ("model", "_target_"): "the class itself",
    ("model", "schedule"): "interpolates the schedule group; conf/schedule/*.yaml is compared with schedules.py below",
    ("schedule", "name"): "selects the schedule class",
    ("train", "seed"): "the run's seed; the classes' own seeds are compared where conf sets them",
    ("train", "optimized_metric"): "a sweep setting of lightcycle-train, no Python class",
    ("train", "resume"): "a run setting of lightcycle-train (Python: Trainer.fit(ckpt_path=...))",
    ("train", "overwrite"): "a run-folder setting of lightcycle-train",
    ("train", "checkpoints"): "chooses what lightcycle-train's ModelCheckpoint callbacks save (Lightning's class)",
    ("train", "checkpoint_every_n_steps"): "lightcycle-train's extra Lightning ModelCheckpoint (Lightning's class)",
    ("train", "precompute"): OFF_SWITCH + " (true or N sets Precompute(epochs=...))",
    ("unfreeze", "milestones"): OFF_SWITCH + " (GradualUnfreezing requires milestones)",
    ("resize", "sizes"): OFF_SWITCH + " (ProgressiveResize requires sizes)",
    ("tta", "n"): OFF_SWITCH + " (0; tta=true and TTA() both mean 4 views)",
    ("snapshots", "keep"): OFF_SWITCH + " (0; SnapshotEnsemble() keeps 3)",
    ("ema", "decay"): OFF_SWITCH + " (null; EMA() averages with 0.999, the decay the config suggests)",
    ("callbacks", "model_checkpoint"): "Lightning's ModelCheckpoint, configured for lightcycle-train's run folder",
    ("callbacks", "last_checkpoint"): "Lightning's ModelCheckpoint, configured for lightcycle-train's run folder",
    ("predict", "ckpt"): "required (???)",
    ("predict", "inputs"): "required (???)",
    ("predict", "output"): "the command's output file (Python: write_predictions(output=...), required)",
    ("predict", "masks"): "the command's mask folder beside its output",
    ("export", "ckpt"): "required (???)",
    ("serve", "ckpt"): "required (???)",
    ("serve", "tta"): "tta.n is app's tta (compared below)",
    ("serve", "data"): "data.max_pixels is app's max_pixels (compared below)",
    ("interpret", "ckpt"): "required: the checkpoint to interpret",
    ("interpret", "run_dir"): "the checkpoint's run folder (found from ckpt)",
    ("interpret", "output_dir"): "<run dir>/interpret (found from ckpt)",
    ("interpret", "seed"): "null = the training run's interpret.seed, so the report matches the run's own",
    ("interpret", "device"): "lightcycle-interpret's device (Python: the model's device)",
    ("interpret", "heatmaps"): "lightcycle-interpret's Grad-CAM figure (Python: interpretation.heatmaps.plot_heatmaps)",
    ("interpret", "data"): "overrides of the run's recorded data settings (null = the run's)",
}

# toolbox section of train.yaml -> (class, {config key: parameter} where they differ)
TOOLBOX: dict[str, tuple[type, dict[str, str]]] = {
    "unfreeze": (cb.GradualUnfreezing, {}),
    "resize": (cb.ProgressiveResize, {}),
    "tta": (cb.TTA, {}),
    "lr_find": (cb.LRFinder, {}),
    "snapshots": (cb.SnapshotEnsemble, {}),
    "interpret": (cb.Interpretation, {}),
    "mixup": (cb.MixUp, {"alpha": "mixup_alpha"}),
    "cutmix": (cb.MixUp, {"alpha": "cutmix_alpha", "minmax": "cutmix_minmax"}),
    "ema": (cb.EMA, {}),
    "show_batch": (cb.ShowBatch, {}),
}
SCHEDULES: dict[str, type] = {"one_cycle": OneCycle, "sgdr": SGDR, "constant": Constant}


def python_default(owner: Callable[..., Any], parameter: str) -> Any:
    """The default of `parameter` in the first signature along `owner`'s MRO that names it (subclasses
    pass **kwargs on), or in the function's signature; `inspect.Parameter.empty` when it has none."""
    for c in getattr(owner, "__mro__", (owner,)):
        if c is object:
            continue
        params = inspect.signature(c.__init__ if isinstance(c, type) else c).parameters
        if parameter in params:
            return params[parameter].default
    raise KeyError(parameter)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Comparison:
    """Collects every difference and every skip, so one run names them all."""

    def __init__(self) -> None:
        self.differences: list[str] = []
        self.unmapped: list[str] = []
        self.skipped: set[tuple[str, str]] = set()

    def skip(self, section: str, key: str) -> bool:
        if (section, key) in SKIPPED:
            self.skipped.add((section, key))
            return True
        return False

    def section(self, where: str, section: str, node: DictConfig, owner: Callable[..., Any], owner_name: str,
                renames: dict[str, str] | None = None) -> None:
        """Compare every key of `node` with `owner`'s parameter of that name (or its rename)."""
        for key in node:
            if self.skip(section, key):
                continue
            parameter = (renames or {}).get(key, key)
            try:
                default = python_default(owner, parameter)
            except KeyError:
                self.unmapped.append(f"{where}: {section}.{key} sets no parameter of {owner_name}")
                continue
            value = node[key]  # interpolations resolved (${seed} -> the run's seed)
            value = _plain(OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value)
            if default is inspect.Parameter.empty or _plain(default) != value:
                shown = "(required)" if default is inspect.Parameter.empty else repr(default)
                self.differences.append(f"{owner_name}({parameter}=...): conf {section}.{key} = {value!r} ({where}), "
                                        f"Python default {shown}")

    def check(self) -> None:
        assert not self.unmapped, "config keys that set no Python parameter:\n" + "\n".join(self.unmapped)
        assert not self.differences, "Python defaults differ from conf/:\n" + "\n".join(self.differences)


def _composed(name: str, overrides: list[str] | None = None) -> DictConfig:
    return _compose(name, tuple(overrides or ()))


@functools.lru_cache(maxsize=None)
def _compose(name: str, overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir(), version_base=None):
        return compose(name, overrides=list(overrides))


def _data_configs() -> list[str]:
    """Every data config but `base` (included by the others) and the demos (overlays naming a demo
    dataset and its 64 px size on top of the layout they extend)."""
    return sorted(p.stem for p in Path(config_dir(), "data").glob("*.yaml") if p.stem != "base" and not p.stem.startswith("demo_"))


def test_datamodule_defaults_equal_conf_data():
    """ImageDataModule and every subclass: each data.* key of conf/data/<layout>.yaml."""
    comparison = Comparison()
    for name in _data_configs():
        data = _composed("train", [f"data={name}"]).data
        comparison.section(f"conf/data/{name}.yaml", "data", data, get_class(data._target_), data._target_.rsplit(".", 1)[-1])
    comparison.check()
    assert {k for k in SKIPPED if k[0] == "data"} == {k for k in comparison.skipped if k[0] == "data"}


def test_model_and_schedule_defaults_equal_conf():
    """VisionModule against conf/model/timm.yaml; each conf/schedule/<name>.yaml against its schedule class."""
    comparison = Comparison()
    comparison.section("conf/model/timm.yaml", "model", _composed("train").model, VisionModule, "VisionModule")
    for name, cls in SCHEDULES.items():
        schedule = _composed("train", [f"schedule={name}"]).schedule
        comparison.section(f"conf/schedule/{name}.yaml", "schedule", schedule, cls, cls.__name__)
    comparison.check()
    assert set(SCHEDULES) == {p.stem for p in Path(config_dir(), "schedule").glob("*.yaml")}


def test_toolbox_callback_defaults_equal_conf_train():
    """Every toolbox section of conf/train.yaml against the callback it builds; every other top-level key
    is a run setting listed in SKIPPED."""
    comparison = Comparison()
    cfg = _composed("train")
    for key in OmegaConf.to_container(cfg, resolve=False):
        if key in TOOLBOX:
            cls, renames = TOOLBOX[key]
            comparison.section("conf/train.yaml", key, cfg[key], cls, cls.__name__, renames)
        elif key not in ("data", "model", "schedule", "callbacks", "trainer", "logger", "paths") and not comparison.skip("train", key):
            comparison.unmapped.append(f"conf/train.yaml: {key} is neither a toolbox section nor a listed run setting")
    for key, node in cfg.callbacks.items():
        if not comparison.skip("callbacks", key):
            cls = get_class(node._target_)
            comparison.section("conf/callbacks/default.yaml", "callbacks", OmegaConf.masked_copy(node, [k for k in node if k != "_target_"]),
                               cls, cls.__name__)
    comparison.check()


def test_command_defaults_equal_their_python_functions():
    """lightcycle-predict (Predictor, list_inputs, vet_inputs), lightcycle-export (export),
    lightcycle-serve (server.app, server.run) and lightcycle-interpret (the Interpretation report)."""
    comparison = Comparison()
    predict = _composed("predict")
    plain = OmegaConf.to_container(predict, resolve=False)
    flat = OmegaConf.create({**{k: v for k, v in plain.items() if k != "tta"}, **{f"tta.{k}": v for k, v in plain["tta"].items()}})
    owners = {"tta.n": ("tta", Predictor), "tta.beta": ("tta_beta", Predictor), "tta.merge": ("tta_merge", Predictor),
              "tta.views": ("tta_views", Predictor), "tta.seed": ("tta_seed", Predictor),
              "ensemble": ("ensemble", Predictor.from_checkpoint), "folder": ("folder", list_inputs),
              "column": ("column", list_inputs), "on_bad": ("on_bad", vet_inputs)}
    for key in flat:
        parameter, owner = owners.get(key, (key, Predictor))
        comparison.section("conf/predict.yaml", "predict", OmegaConf.masked_copy(flat, [key]), owner,
                           getattr(owner, "__qualname__", str(owner)), {key: parameter})
    comparison.section("conf/export.yaml", "export", _composed("export"), export, "export")
    serve = _composed("serve")
    assert list(serve.tta) == ["n"]
    run_keys = ("host", "port", "log_level")
    comparison.section("conf/serve.yaml", "serve", OmegaConf.masked_copy(serve, [k for k in serve.keys() if k not in run_keys + ("data", "tta", "ckpt")]),
                       server.app, "serve.server.app")
    comparison.section("conf/serve.yaml", "serve", OmegaConf.masked_copy(serve, list(run_keys)), server.run, "serve.server.run")
    comparison.section("conf/serve.yaml", "serve", serve.data, server.app, "serve.server.app")
    comparison.section("conf/serve.yaml", "serve", serve.tta, server.app, "serve.server.app", {"n": "tta"})
    comparison.section("conf/interpret.yaml", "interpret", _composed("interpret"), cb.Interpretation, "Interpretation")
    comparison.check()


def test_every_listed_skip_names_a_key_that_exists():
    """SKIPPED does not rot: each entry is a key of the config file it names."""
    files = {"train": _composed("train"), "model": _composed("train").model, "predict": _composed("predict"),
             "export": _composed("export"), "serve": _composed("serve"), "interpret": _composed("interpret"),
             "callbacks": _composed("train").callbacks}
    data_keys = set().union(*(set(_composed("train", [f"data={n}"]).data) for n in _data_configs()))
    schedule_keys = set().union(*(set(_composed("train", [f"schedule={n}"]).schedule) for n in SCHEDULES))
    for (section, key), reason in SKIPPED.items():
        assert reason
        if section == "data":
            assert key in data_keys, key
        elif section == "schedule":
            assert key in schedule_keys, key
        elif section in files:
            assert key in files[section].keys(), (section, key)
        else:
            assert key in files["train"][section].keys(), (section, key)
