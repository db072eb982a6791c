"""Lightning callbacks: the fast.ai training toolbox plus run reporting.

The algorithms behind the thin callbacks live one layer down and are re-exported here for
convenience: `lightcycle.tta` (evaluate_tta, predict_tta), `lightcycle.ensemble` (ensemble_predict,
find_snapshots, load_snapshots), `lightcycle.precomputed`, `lightcycle.lr_range` (lr_find's sweep).
"""

from lightcycle.callbacks.divergence import DivergenceGuard
from lightcycle.callbacks.ema import EMA, averaged_weights
from lightcycle.callbacks.epoch_log import EpochLog
from lightcycle.callbacks.interpretation import Interpretation
from lightcycle.callbacks.lr_finder import LRFinder, LRFindResult, lr_find
from lightcycle.callbacks.lr_monitor import LayerGroupLRMonitor
from lightcycle.callbacks.mixup import MixUp
from lightcycle.callbacks.model_summary import ModelSummary
from lightcycle.callbacks.precompute import Precompute
from lightcycle.callbacks.progressive_resize import ProgressiveResize
from lightcycle.callbacks.show_batch import ShowBatch
from lightcycle.callbacks.snapshots import SnapshotEnsemble
from lightcycle.callbacks.tta import TTA
from lightcycle.callbacks.unfreeze import GradualUnfreezing
from lightcycle.ensemble import ensemble_predict, find_snapshots, load_snapshots
from lightcycle.tta import evaluate_tta, predict_tta

__all__ = [
    "LRFinder", "LRFindResult", "SnapshotEnsemble", "ensemble_predict", "find_snapshots", "load_snapshots", "lr_find",
    "DivergenceGuard", "EpochLog", "LayerGroupLRMonitor", "GradualUnfreezing", "Interpretation", "ModelSummary", "Precompute",
    "ProgressiveResize", "TTA", "evaluate_tta", "predict_tta", "EMA", "averaged_weights", "MixUp", "ShowBatch"]
