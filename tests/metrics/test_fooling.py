"""evaluate(): FR_N, FR_S, NT_R and SSIM against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlattack.attacks.base import AttackResult
from mlattack.attacks.mldp import MLDP
from mlattack.graph import LabelGraph
from mlattack.metrics import Metrics, evaluate, summarize

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


def test_attacked_denominator_counts_failures_over_all_labels(crafted: AttackResult) -> None:
    metrics = evaluate(crafted, GRAPH, nt_denominator="attacked")
    # image 2 failed with nothing changed: 0/6; image 3 was not attacked: not counted
    np.testing.assert_allclose(metrics.nt_flip_fraction, [0.5, 0.0, 0.0, math.nan, 0.25])
    assert metrics.nt_rate == pytest.approx((0.5 + 0.0 + 0.0 + 0.25) / 4) and metrics.n_nt == 4
    assert (
        metrics.nt_denominator == "attacked" and metrics.summary()["nt_denominator"] == "attacked"
    )
    crafted.adv_pred[2] = _mask("animal dog")[0]  # still failed (dog on); vehicle, car changed
    assert evaluate(crafted, GRAPH, nt_denominator="attacked").nt_flip_fraction[2] == 2 / 6


def test_mixed_target_sets_are_measured() -> None:
    # dog turned off and cat turned on in the same image: Psi = {dog, cat}, animal stays on
    clean, targets = _mask("animal dog", "animal dog"), _mask("dog cat", "dog cat")
    adv = _mask("animal cat", "cat")
    metrics = evaluate(_result(clean, adv, targets, torch.tensor([True, True])), GRAPH)
    assert metrics.n_success == 2 and metrics.n_semantic == 1  # cat on without animal
    np.testing.assert_allclose(metrics.nt_flip_fraction, [0.0, 0.25])


def test_ssim_pooling_over_images_or_target_sets(crafted: AttackResult) -> None:
    torch.manual_seed(0)
    images = torch.rand(5, 3, 16, 16)
    adv = images.clone()
    adv[0] = (adv[0] + 0.05 * torch.randn(3, 16, 16)).clamp(0, 1)
    crafted.adv, crafted.images = adv, images
    pooled = evaluate(crafted, GRAPH)
    per_set = evaluate(crafted, GRAPH, ssim_pooling="target_sets")
    first = pooled.ssim_per_image[0]
    assert pooled.ssim == pytest.approx((first + 1.0 + 1.0) / 3)  # images 0, 1 (dog), 4 (cat)
    assert per_set.ssim == pytest.approx(((first + 1.0) / 2 + 1.0) / 2)
    assert per_set.ssim_pooling == "target_sets" and pooled.ssim_pooling == "images"


def test_summarize_over_target_sets(crafted: AttackResult) -> None:
    torch.manual_seed(1)
    crafted.images = torch.rand(5, 3, 16, 16)
    crafted.adv = (crafted.images + 0.1 * torch.randn(5, 3, 16, 16)).clamp(0, 1)
    every = evaluate(crafted, GRAPH)  # 4 attacked images, 3 successes
    crafted.attacked = torch.tensor([True, False, True, False, False])
    fewer = evaluate(crafted, GRAPH)  # 2 attacked images, 1 success
    summary = summarize([every, fewer])
    assert summary["n_sets"] == 2
    for name in ("fr_naive", "fr_semantic", "nt_rate", "ssim"):
        values = np.array([getattr(every, name), getattr(fewer, name)])
        assert summary[f"{name}_mean"] == pytest.approx(values.mean())
        assert summary[f"{name}_std"] == pytest.approx(values.std())  # population std
    pooled = summarize([every, fewer], ssim_pooling="images")
    images = np.concatenate(
        [every.ssim_per_image[every.success], fewer.ssim_per_image[fewer.success]]
    )
    assert images.size == every.n_ssim + fewer.n_ssim == 4
    assert pooled["ssim_mean"] == pytest.approx(images.mean())
    assert pooled["ssim_std"] == pytest.approx(images.std())
    assert pooled["ssim_mean"] != pytest.approx(summary["ssim_mean"])


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"preset": "paper"}, ValueError, "preset must be one of None, 'official', got 'paper'"),
        (
            {"nt_denominator": "all"},
            ValueError,
            "nt_denominator must be one of 'successful', 'attacked'",
        ),
        ({"ssim_pooling": 1}, ValueError, "ssim_pooling must be one of 'images', 'target_sets'"),
        ({"official_closure": "yes"}, TypeError, "official_closure must be True or False"),
        ({"official_closure": 1}, TypeError, "official_closure must be True or False"),
    ],
)
def test_unknown_options_are_named(
    crafted: AttackResult, options: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        evaluate(crafted, GRAPH, **options)


def test_summarize_rejects_what_is_not_a_list_of_metrics(crafted: AttackResult) -> None:
    metrics = evaluate(crafted, GRAPH)
    with pytest.raises(TypeError, match="sequence of Metrics"):
        summarize(metrics)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"per_set\[1\] must be a Metrics"):
        summarize([metrics, {"fr_naive": 1.0}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="ssim_pooling must be one of"):
        summarize([metrics], ssim_pooling="pixels")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="graph must be a LabelGraph"):
        evaluate(crafted, "voc")  # type: ignore[arg-type]


def test_the_former_repair_option_is_refused_naming_official_closure() -> None:
    graph = LabelGraph(["a", "b"], [("a", "b")])
    with pytest.raises(TypeError, match=r"repair=.* was renamed official_closure="):
        evaluate(None, graph, repair=True)  # type: ignore[arg-type]
