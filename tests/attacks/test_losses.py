"""Per-label BCE on logits and its masked sum."""

from __future__ import annotations

import math

import pytest
import torch

from mlattack.losses import masked_bce, per_label_bce


def test_per_label_bce_matches_formula() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    desired = torch.tensor([[True, True, False]])
    expected = torch.tensor(
        [[-math.log(1 / (1 + math.exp(-2.0))), -math.log(1 / (1 + math.exp(1.0))), math.log(2.0)]]
    )
    torch.testing.assert_close(per_label_bce(logits, desired), expected)
    torch.testing.assert_close(per_label_bce(logits, desired.float()), expected)


def test_large_logits_stay_finite() -> None:
    logits = torch.tensor([[200.0, -200.0]])
    losses = per_label_bce(logits, torch.tensor([[False, True]]))
    torch.testing.assert_close(losses, torch.tensor([[200.0, 200.0]]))


def test_masked_bce_sums_only_masked_labels() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]])
    desired = torch.tensor([[True, True, False], [False, False, False]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    full = per_label_bce(logits, desired)
    torch.testing.assert_close(
        masked_bce(logits, desired, mask), torch.stack([full[0, 0] + full[0, 2], torch.tensor(0.0)])
    )


def test_masked_bce_ignores_non_finite_unmasked_entries() -> None:
    logits = torch.tensor([[float("nan"), 1.0]])
    value = masked_bce(logits, torch.tensor([[True, True]]), torch.tensor([[False, True]]))
    assert torch.isfinite(value).all()


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="desired has shape"):
        per_label_bce(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mask has shape"):
        masked_bce(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3, dtype=torch.bool))
