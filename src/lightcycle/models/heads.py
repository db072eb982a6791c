"""Heads that sit on a pooled backbone feature vector."""

from __future__ import annotations

from torch import nn


class ClassifierHead(nn.Sequential):
    """fastai's `create_head` after pooling: BN-dropout-linear-ReLU-BN-dropout-linear.

    The hidden layer and BatchNorm let a frozen pretrained backbone's features be re-scaled and
    combined before the final decision, which is why fastai fine-tunes so well with a frozen body.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__(
            nn.BatchNorm1d(in_features),
            nn.Dropout(dropout / 2),
            nn.Linear(in_features, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )
