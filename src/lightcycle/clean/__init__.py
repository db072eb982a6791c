"""Cleaning a dataset with its model: the images it gets most wrong and the most similar pairs, then
removals and relabels applied on disk without losing a file (fastai's ImageClassifierCleaner).

`apply(changes, scores_or_datamodule, journal_dir=...)` carries out a list of `Change`s and journals
them; `undo(journal)` puts everything back byte for byte.
"""

from lightcycle.clean.apply import Applied, apply
from lightcycle.clean.changes import Change, FileState, Outcome
from lightcycle.clean.journal import Undone, undo

__all__ = ["Applied", "Change", "FileState", "Outcome", "Undone", "apply", "undo"]
