"""Clean a dataset with a trained model, the course's step between training and retraining: every
training and validation image scored (worst loss first, label, prediction) and the most similar
pairs (identical files first; a pair across train and valid is a leak).

    from lightcycle import clean
    scores = clean.score("runs/pets/checkpoints/last.ckpt")   # both splits, the run's data settings
    scores.worst(split="train", label="cat", limit=20)        # a page, worst first
    scores.similar(leak=True)                                 # pairs across train and valid
    scores.save(clean.scores_path("runs/pets"))               # <run dir>/cleaning/scores.json

One concern per module: `table` (the rows, pairs, paging and JSON), `score` (the pass over the
data), `similar` (identical files and the top cosine pairs, a block of rows at a time).
"""

from lightcycle.clean.score import data_overrides, score, scores_path
from lightcycle.clean.similar import identical_files, most_similar, top_pairs
from lightcycle.clean.table import FileState, ScoredImage, Scores, SimilarPair

__all__ = [
    "FileState",
    "ScoredImage",
    "Scores",
    "SimilarPair",
    "data_overrides",
    "identical_files",
    "most_similar",
    "score",
    "scores_path",
    "top_pairs",
]
