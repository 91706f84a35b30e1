from __future__ import annotations

import math

import pytest
import torch

from models.losses import auc_loss, corrected_logits, decoupled_softmax, sampled_softmax

LOGITS = torch.tensor([[2.0, 1.0, 0.0, -1.0]])


def _lse(*values: float) -> float:
    return math.log(sum(math.exp(v) for v in values))


def test_corrected_logits_divide_by_temperature_and_subtract_log_q() -> None:
    scores = torch.tensor([[0.7, 0.07]])
    log_q = torch.log(torch.tensor([0.5, 0.1]))
    got = corrected_logits(scores, log_q, 0.07)
    assert got[0].tolist() == pytest.approx([10 - math.log(0.5), 1 - math.log(0.1)], abs=1e-5)
    assert corrected_logits(scores, None, 0.07)[0].tolist() == pytest.approx([10.0, 1.0])


def test_sampled_softmax_single_positive_is_cross_entropy() -> None:
    loss = sampled_softmax(LOGITS, torch.tensor([[0]]))
    assert float(loss) == pytest.approx(_lse(2, 1, 0, -1) - 2, abs=1e-6)


def test_sampled_softmax_masks_the_rows_other_positives() -> None:
    loss = sampled_softmax(LOGITS, torch.tensor([[0, 1]]))
    expected = ((_lse(2, 0, -1) - 2) + (_lse(1, 0, -1) - 1)) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_decoupled_softmax_leaves_every_positive_out_of_the_denominator() -> None:
    loss = decoupled_softmax(LOGITS, torch.tensor([[0, 1]]))
    expected = ((_lse(0, -1) - 2) + (_lse(0, -1) - 1)) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_auc_loss_is_mean_softplus_over_pairs() -> None:
    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    loss = auc_loss(LOGITS, torch.tensor([[0, 1]]))
    expected = ((softplus(-2) + softplus(-3)) / 2 + (softplus(-1) + softplus(-2)) / 2) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_missing_positives_are_ignored_in_the_mean() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    positives = torch.tensor([[0, -1], [1, -1]])
    expected = ((_lse(2, 1, 0) - 2) + (_lse(0, 3, 1) - 3)) / 2
    assert float(sampled_softmax(logits, positives)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("loss", [sampled_softmax, decoupled_softmax, auc_loss])
def test_losses_pull_positive_up(loss: object) -> None:
    logits = torch.zeros(1, 5, requires_grad=True)
    assert callable(loss)
    loss(logits, torch.tensor([[2]])).backward()
    assert logits.grad is not None
    assert logits.grad[0, 2] < 0
    assert (logits.grad[0, [0, 1, 3, 4]] > 0).all()


def test_ignored_columns_leave_the_denominator_but_positives_stay() -> None:
    ignore = torch.tensor([[2, -1, 0]])  # column 0 is the positive: ignoring it changes nothing
    loss = sampled_softmax(LOGITS, torch.tensor([[0]]), ignore)
    assert float(loss) == pytest.approx(_lse(2, 1, -1) - 2, abs=1e-6)
    assert float(decoupled_softmax(LOGITS, torch.tensor([[0]]), ignore)) == pytest.approx(
        _lse(1, -1) - 2, abs=1e-6
    )
