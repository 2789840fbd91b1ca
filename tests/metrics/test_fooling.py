"""evaluate(): FR_N, FR_S, NT_R and SSIM against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlattack.attacks.base import AttackResult
from mlattack.attacks.mldp import MLDP
from mlattack.graph import LabelGraph
from mlattack.metrics import Metrics, evaluate

NAMES = ["animal", "dog", "cat", "vehicle", "car", "bus"]
GRAPH = LabelGraph(
    NAMES, [("animal", "dog"), ("animal", "cat"), ("vehicle", "car"), ("vehicle", "bus")]
)


def _mask(*rows: str) -> torch.Tensor:
    """One bool row per argument: the labels named in a space-separated string are on."""
    return torch.tensor([[name in row.split() for name in NAMES] for row in rows])


def _result(
    clean: torch.Tensor,
    adv: torch.Tensor,
    targets: torch.Tensor,
    attacked: torch.Tensor,
    images: torch.Tensor | None = None,
    adv_images: torch.Tensor | None = None,
) -> AttackResult:
    batch = clean.shape[0]
    images = torch.zeros(batch, 3, 16, 16) if images is None else images
    logits = torch.where(clean, 2.0, -2.0)
    return AttackResult(
        adv=images.clone() if adv_images is None else adv_images,
        images=images,
        clean_pred=clean,
        adv_pred=adv,
        targets=targets,
        flip_set=targets.clone(),
        success=torch.zeros(batch, dtype=torch.bool),  # evaluate recomputes it
        iterations=torch.zeros(batch, dtype=torch.int64),
        eps=torch.full((batch,), 0.1),
        attacked=attacked,
        gradient_failed=torch.zeros(batch, dtype=torch.bool),
        clean_logits=logits,
        adv_logits=torch.where(adv, 2.0, -2.0),
        name="crafted",
    )


@pytest.fixture
def crafted() -> AttackResult:
    # 0: dog turned off together with animal; car and bus changed too   -> A, A_G, NT 2/4
    # 1: dog off but animal stays on with no child on (inconsistent)     -> A only, NT 0/4
    # 2: nothing changed                                                 -> failed (I only)
    # 3: skipped (its target cat is not on); "flipped" but not attacked  -> not in I
    # 4: turn-on: cat and animal turned on, car dropped                  -> A, A_G, NT 1/4
    clean = _mask(
        "animal dog vehicle car",
        "animal dog vehicle car",
        "animal dog vehicle car",
        "animal dog",
        "vehicle car",
    )
    adv = _mask(
        "vehicle bus",
        "animal vehicle car",
        "animal dog vehicle car",
        "animal dog cat",
        "animal cat vehicle",
    )
    targets = _mask("dog", "dog", "dog", "cat", "cat")
    attacked = torch.tensor([True, True, True, False, True])
    return _result(clean, adv, targets, attacked)


def test_rates_and_counts_match_hand_computation(crafted: AttackResult) -> None:
    metrics = evaluate(crafted, GRAPH)
    assert isinstance(metrics, Metrics)
    assert (metrics.n_total, metrics.n_images, metrics.n_success, metrics.n_semantic) == (
        5,
        4,
        3,
        2,
    )
    assert metrics.fr_naive == pytest.approx(3 / 4)
    assert metrics.fr_semantic == pytest.approx(2 / 4)
    np.testing.assert_array_equal(metrics.success, [True, True, False, False, True])
    np.testing.assert_array_equal(metrics.semantic_success, [True, False, False, False, True])


def test_nt_rate_uses_the_complement_of_the_consistent_target_set(crafted: AttackResult) -> None:
    metrics = evaluate(crafted, GRAPH)
    # Psi = {dog, animal} for images 0-1 and {cat, animal} for image 4: |Psi-bar| = 4 each.
    np.testing.assert_allclose(metrics.nt_flip_fraction, [0.5, 0.0, math.nan, math.nan, 0.25])
    assert metrics.nt_rate == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    assert metrics.n_nt == 3


def test_nt_rate_ignores_flip_set_reported_by_the_attack(crafted: AttackResult) -> None:
    crafted.flip_set = torch.ones_like(
        crafted.flip_set
    )  # whatever the attack says, Psi is the graph's
    metrics = evaluate(crafted, GRAPH)
    assert metrics.nt_rate == pytest.approx(0.25)


def test_empty_complement_and_empty_success_give_nan() -> None:
    graph = LabelGraph(["animal", "dog"], [("animal", "dog")])
    clean = torch.tensor([[True, True], [True, True]])
    targets = torch.tensor([[False, True], [False, True]])
    adv = torch.tensor([[False, False], [True, True]])
    result = _result(clean, adv, targets, torch.tensor([True, True]))
    result.adv = torch.rand(2, 3, 16, 16)
    result.images = result.adv.clone()
    metrics = evaluate(result, graph)
    # image 0: Psi = {dog, animal} = every label, so no NT share; image 1 failed.
    assert metrics.fr_naive == 0.5 and metrics.fr_semantic == 0.5
    assert math.isnan(metrics.nt_rate) and metrics.n_nt == 0
    assert metrics.ssim == pytest.approx(1.0) and metrics.n_ssim == 1

    failed = _result(clean, clean.clone(), targets, torch.tensor([True, True]))
    metrics = evaluate(failed, graph)
    assert metrics.n_success == 0 and metrics.fr_naive == 0.0
    assert math.isnan(metrics.nt_rate) and math.isnan(metrics.ssim)
    assert np.isnan(metrics.ssim_per_image).all()


def test_no_attacked_image_gives_nan_rates(crafted: AttackResult) -> None:
    crafted.attacked = torch.zeros(5, dtype=torch.bool)
    metrics = evaluate(crafted, GRAPH)
    assert (
        metrics.n_images == 0 and math.isnan(metrics.fr_naive) and math.isnan(metrics.fr_semantic)
    )


def test_ssim_is_averaged_over_successful_images_only(crafted: AttackResult) -> None:
    torch.manual_seed(0)
    images = torch.rand(5, 3, 16, 16)
    adv = images.clone()
    adv[0] = (adv[0] + 0.05 * torch.randn(3, 16, 16)).clamp(0, 1)  # in A
    adv[2] = 1 - adv[2]  # failed image: must not pull the mean down
    crafted.adv, crafted.images = adv, images
    metrics = evaluate(crafted, GRAPH)
    assert np.isnan(metrics.ssim_per_image[[2, 3]]).all()
    assert metrics.ssim_per_image[1] == pytest.approx(1.0)
    assert metrics.ssim_per_image[4] == pytest.approx(1.0)
    assert 0.0 < metrics.ssim_per_image[0] < 0.99
    assert metrics.ssim == pytest.approx((metrics.ssim_per_image[0] + 2.0) / 3)
    assert metrics.n_ssim == 3
    summary = metrics.summary()
    assert summary["n_success"] == 3 and summary["ssim"] == metrics.ssim


def test_bad_inputs_are_named(crafted: AttackResult) -> None:
    with pytest.raises(ValueError, match="graph has 2 labels"):
        evaluate(crafted, LabelGraph(["a", "b"]))
    crafted.images = torch.zeros(5, 3, 8, 8)
    with pytest.raises(ValueError, match="images has shape"):
        evaluate(crafted, GRAPH)
    with pytest.raises(TypeError, match="AttackResult"):
        evaluate("result", GRAPH)  # type: ignore[arg-type]


def test_evaluates_a_real_attack_result() -> None:
    # Each label reads its own 8-pixel block (children also their parent's, at 0.5); on a grey
    # image animal, dog, vehicle and car are on. ML-DP turns dog off and, by design, keeps every
    # other label: animal stays on with no child on, so the result is naive but not semantic.
    weight = torch.zeros(6, 48)
    for label in range(6):
        weight[label, label * 8 : label * 8 + 8] = 1.0
    for child, parent in {1: 0, 2: 0, 4: 3, 5: 3}.items():
        weight[child, parent * 8 : parent * 8 + 8] = 0.5
    model = torch.nn.Linear(48, 6)
    with torch.no_grad():
        model.weight.copy_(weight)
        model.bias.copy_(torch.tensor([-3.0, -5.0, -7.0, -3.0, -5.0, -7.0]))
    flat = torch.nn.Sequential(torch.nn.Flatten(), model)
    images = torch.full((2, 3, 4, 4), 0.5)
    targets = _mask("dog", "dog")
    result = MLDP(flat, eps=0.5)(images, targets)
    with pytest.warns(UserWarning, match="smaller than the 11-pixel SSIM window"):
        metrics = evaluate(result, GRAPH)
    assert (metrics.n_images, metrics.n_success, metrics.n_semantic) == (2, 2, 0)
    assert metrics.fr_naive == 1.0 and metrics.fr_semantic == 0.0
    assert metrics.nt_rate == 0.0 and metrics.n_nt == 2
