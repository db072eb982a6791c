"""Clean a dataset with a trained model, the course's step between training and retraining: every
training and validation image scored (worst loss first, label, prediction), the most similar pairs
(identical files first; a pair across train and valid is a leak), and the fixes applied without
losing a file (fastai's ImageClassifierCleaner and fastai 1's duplicate finder).

    from lightcycle import clean
    scores = clean.score("runs/pets/checkpoints/last.ckpt")   # both splits, the run's data settings
    scores.worst(split="train", label="cat", limit=20)        # a page, worst first
    scores.similar(leak=True)                                 # pairs across train and valid
    scores.save(clean.scores_path("runs/pets"))               # <run dir>/cleaning/scores.json
    done = clean.apply([clean.Change("train/cat/1.jpg", "remove")], scores,
                       journal_dir="runs/pets/cleaning")      # moved aside, journalled
    clean.undo(done.journal)                                  # put back byte for byte

One concern per module: `table` (the rows, pairs, paging and JSON), `score` (the pass over the
data), `similar` (identical files and the top cosine pairs, a block of rows at a time), `changes`
(what the user decided), `apply` (carrying it out per layout, lightcycle.data.edits), `journal`
(every step on disk, and undo), `files` (moves that never overwrite, the lock), `stored` (scores
reused between runs), `web` and `page.html` (the page lightcycle-clean serves).
"""

from lightcycle.clean.apply import Applied, apply
from lightcycle.clean.changes import Change, Outcome
from lightcycle.clean.journal import Undone, undo
from lightcycle.clean.score import data_overrides, score, scores_path
from lightcycle.clean.similar import identical_files, most_similar, top_pairs
from lightcycle.clean.table import FileState, ScoredImage, Scores, SimilarPair

__all__ = [
    "Applied",
    "Change",
    "FileState",
    "Outcome",
    "ScoredImage",
    "Scores",
    "SimilarPair",
    "Undone",
    "apply",
    "data_overrides",
    "identical_files",
    "most_similar",
    "score",
    "scores_path",
    "top_pairs",
    "undo",
]
