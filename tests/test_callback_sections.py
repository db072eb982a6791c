"""One way to build a run's callbacks: the ordered SECTIONS list, one-line setting errors, and the
interfaces callbacks find each other through (never their classes)."""

from __future__ import annotations

import contextlib
import dataclasses
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint

from lightcycle.callbacks import (
    EMA, TTA, DivergenceGuard, EpochLog, GradualUnfreezing, Interpretation, LayerGroupLRMonitor, LRFinder, MixUp,
    Precompute, ProgressiveResize, ShowBatch, SnapshotEnsemble, averaged_weights,
)
from lightcycle.callbacks.divergence import _lr_finder_suggestion
from lightcycle.callbacks.interfaces import (
    ReportsFinalMetrics, SuggestsLearningRate, UnfreezingPlan, WeightAverager, find_callback,
)
from lightcycle.errors import LightcycleError
from lightcycle.run import config_dir
from lightcycle.run.callbacks import SECTIONS, check_order, collect_final_metrics, run_callbacks, toolbox_callbacks


def train_config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_every_section_builds_in_the_declared_order(tmp_path):
    cfg = train_config(
        f"paths.output_dir={tmp_path}", "ema.decay=0.99", "mixup.alpha=0.4", "show_batch.n=4",
        "unfreeze.milestones=[1]", "resize.sizes={0:32,1:48}", "precompute=1", "tta.n=2", "schedule=sgdr",
        "snapshots.keep=2", "checkpoint_every_n_steps=5", "interpret.top_k=3", "model.lr=auto",
    )
    kinds = [type(cb) for cb in run_callbacks(cfg)]
    assert kinds == [
        ModelCheckpoint, ModelCheckpoint, LayerGroupLRMonitor, EpochLog, DivergenceGuard,  # the callbacks group
        EMA, MixUp, ShowBatch, GradualUnfreezing, ProgressiveResize, Precompute, TTA, SnapshotEnsemble,
        ModelCheckpoint, Interpretation, LRFinder,
    ]
    assert [type(cb) for cb in toolbox_callbacks(cfg)] == kinds[5:]
    off = train_config(f"paths.output_dir={tmp_path}", "show_batch.n=0", "interpret.top_k=0")
    assert toolbox_callbacks(off) == []  # every toolbox key at its default is off (show_batch, interpret aside)


def test_the_order_list_keeps_what_depends_on_it():
    check_order(SECTIONS)
    names = [s.name for s in SECTIONS]
    assert names[0] == "callbacks" and names[-1] == "lr_find"
    assert names.index("ema") < names.index("snapshots")
    assert names.index("unfreeze") < names.index("precompute")
    ema, snapshots = (next(s for s in SECTIONS if s.name == n) for n in ("ema", "snapshots"))
    swapped = [snapshots if s is ema else ema if s is snapshots else s for s in SECTIONS]
    with pytest.raises(RuntimeError, match="'snapshots' must come after \\['ema'\\]"):
        check_order(swapped)
    assert all(s.why for s in SECTIONS if s.after), "an order constraint says why"
    assert all(dataclasses.is_dataclass(s) for s in SECTIONS)


@pytest.mark.parametrize("override, message", [
    ("+ema.colour=1", r"ema: unknown setting\(s\) \['colour'\]"),
    ("+tta.view=flip", r"tta: unknown setting\(s\) \['view'\]"),
    ("+snapshots.kep=2", r"snapshots: unknown setting\(s\) \['kep'\]"),
    ("+cutmix.prob=0.5", r"cutmix: unknown setting\(s\) \['prob'\]"),
])
def test_an_unknown_setting_is_one_line_naming_it(tmp_path, override, message):
    settings = {"+ema.colour=1": "ema.decay=0.9", "+snapshots.kep=2": "snapshots.keep=2"}
    cfg = train_config(f"paths.output_dir={tmp_path}", "tta.n=2", "schedule=sgdr", "mixup.alpha=0.2", override,
                       settings.get(override, "seed=1"))
    with pytest.raises(LightcycleError, match=message) as caught:
        run_callbacks(cfg)
    assert "\n" not in str(caught.value)


def test_the_providers_declare_their_interfaces():
    assert isinstance(GradualUnfreezing([1]), UnfreezingPlan)
    assert isinstance(EMA(0.99), WeightAverager) and EMA(0.99).averaging_horizon() == pytest.approx(100)
    finder = LRFinder()
    assert isinstance(finder, SuggestsLearningRate) and finder.suggested_lr() is None
    assert isinstance(TTA(2), ReportsFinalMetrics) and isinstance(SnapshotEnsemble(2), ReportsFinalMetrics)
    assert not isinstance(GradualUnfreezing([1]), (WeightAverager, ReportsFinalMetrics))


class HeadOnlyFor:
    """An unfreezing plan of a user's own, not GradualUnfreezing: only the head for `epochs` epochs."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        return 1 if epoch < self.epochs else n_groups


class Averager:
    def __init__(self) -> None:
        self.swaps = 0

    def averaging_horizon(self) -> float:
        return 10.0

    @contextlib.contextmanager
    def swapped_in(self, trainer, pl_module):
        self.swaps += 1
        yield


class Suggests:
    def suggested_lr(self) -> float:
        return 0.02


def test_callbacks_find_each_other_by_interface_not_class():
    module = SimpleNamespace(layer_groups=lambda: [1, 2, 3], backbone_frozen=lambda: False)
    plan, averager, reporter = HeadOnlyFor(2), Averager(), SimpleNamespace(final_metrics={"tta_loss": 0.5})
    trainer = SimpleNamespace(callbacks=[plan, averager, Suggests(), reporter])
    precompute = Precompute()
    assert [precompute.wants(trainer, module, epoch) for epoch in range(4)] == [True, True, False, False]
    with averaged_weights(trainer, module):
        pass
    assert averager.swaps == 1
    assert _lr_finder_suggestion(trainer) == 0.02
    assert find_callback(trainer, UnfreezingPlan) is plan
    assert collect_final_metrics(trainer.callbacks) == {"tta_loss": 0.5}
    alone = SimpleNamespace(callbacks=[])
    assert precompute.wants(alone, module, 0) is False and _lr_finder_suggestion(alone) is None
    assert find_callback(alone, WeightAverager) is None

