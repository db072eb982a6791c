import pytest
import torch

from lightcycle.evaluation import score_batches
from lightcycle.tasks import ClassificationTask


def test_score_batches_matches_hand_computed_values():
    task = ClassificationTask(["a", "b"])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    target = torch.tensor([0, 1, 1])
    out = score_batches(task, [(probs[:2], target[:2]), (probs[2:], target[2:])], "tta")
    expected_loss = -(torch.log(torch.tensor(0.9)) + torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.4))) / 3
    assert out["tta_loss"] == pytest.approx(float(expected_loss), rel=1e-5)
    assert out["tta_accuracy"] == pytest.approx(2 / 3)
    assert out["tta_error_rate"] == pytest.approx(1 / 3)
