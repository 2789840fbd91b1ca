"""Bad input: every misuse raises a clear error (or warns), naming what is wrong."""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mlattack._validation import check_bool, check_int, check_number, check_seed
from mlattack.attacks import ATTACKS, MLAU, MLDP, build_attack
from mlattack.attacks import base as base_module


@pytest.fixture
def case(linear_model: nn.Module, make_case: Any) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    images, targets = make_case(linear_model, n=3)
    return linear_model, images, targets


def test_images_outside_unit_range_name_the_images(case: Any) -> None:
    model, images, targets = case
    bad = images.clone()
    bad[2, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\].*images 2"):
        MLAU(model)(bad, targets)
    bad[2, 0, 0, 0] = -0.1
    with pytest.raises(ValueError, match="images 2"):
        MLAU(model)(bad, targets)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_images(case: Any, value: float) -> None:
    model, images, targets = case
    bad = images.clone()
    bad[1, 1, 1, 1] = value
    with pytest.raises(ValueError, match="NaN or Inf.*images 1"):
        MLAU(model)(bad, targets)


def test_wrong_rank_dtype_and_type(case: Any) -> None:
    model, images, targets = case
    with pytest.raises(ValueError, match="rank 4"):
        MLAU(model)(images[0], targets)
    with pytest.raises(ValueError, match="float"):
        MLAU(model)((images * 255).to(torch.uint8), targets)
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        MLAU(model)(images.numpy(), targets)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets must be a torch.Tensor"):
        MLAU(model)(images, targets.numpy())  # type: ignore[arg-type]


def test_batch_and_label_count_mismatch(case: Any) -> None:
    model, images, targets = case
    with pytest.raises(ValueError, match="2 rows but there are 3 images"):
        MLAU(model)(images, targets[:2])
    with pytest.raises(ValueError, match=r"logits of shape \(3, 6\).*targets have shape \(3, 5\)"):
        MLAU(model)(images, targets[:, :5])
    with pytest.raises(ValueError, match="bool"):
        MLAU(model)(images, targets.float() * 2)


def test_integer_targets_are_accepted(case: Any) -> None:
    model, images, targets = case
    result = MLAU(model, steps=2)(images, targets.long())
    assert result.targets.dtype == torch.bool and torch.equal(result.targets, targets)


def test_empty_target_rows_name_the_images(case: Any) -> None:
    model, images, targets = case
    empty = targets.clone()
    empty[[0, 2]] = False
    with pytest.raises(ValueError, match="empty.*images 0, 2"):
        MLAU(model)(images, empty)


def test_turn_off_targets_not_present_name_image_and_label(case: Any) -> None:
    model, images, targets = case
    bad = targets.clone()
    bad[1, 2] = True  # "cat" is absent on these images
    with pytest.raises(ValueError, match="not predicted present: image 1 label 2"):
        MLAU(model)(images, bad)


def test_skip_leaves_invalid_images_unattacked(case: Any) -> None:
    model, images, targets = case
    bad = targets.clone()
    bad[1, 2] = True
    result = MLAU(model, eps=0.3, steps=5, on_invalid="skip")(images, bad)
    assert result.attacked.tolist() == [True, False, True]
    assert not result.success[1] and result.iterations[1] == 0
    assert torch.equal(result.adv[1], images[1])
    assert result.success[[0, 2]].all()


def test_turn_on_direction(case: Any) -> None:
    model, images, _ = case
    present = torch.zeros(3, 6, dtype=torch.bool)
    present[:, 0] = True  # animal is present: it cannot be turned on
    with pytest.raises(ValueError, match="already predicted present: image 0 label 0"):
        MLAU(model, direction="on")(images, present)
    absent = torch.zeros(3, 6, dtype=torch.bool)
    absent[:, 2] = True  # cat is absent
    result = MLAU(model, eps=0.3, steps=10, direction="on")(images, absent)
    assert result.success.all() and result.adv_pred[:, 2].all()


def test_negative_or_bad_eps(case: Any) -> None:
    model, images, targets = case
    with pytest.raises(ValueError, match="eps"):
        MLAU(model, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        MLAU(model, eps=float("nan"))
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\].*images 1"):
        MLAU(model)(images, targets, eps=torch.tensor([0.1, -0.1, 0.1]))
    with pytest.raises(TypeError, match="per-image eps tensor must be floating point"):
        MLAU(model)(images, targets, eps=torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        MLAU(model)(images, targets, eps=torch.tensor([0.1, 0.1]))
    with pytest.raises(ValueError, match="eps"):
        MLAU(model)(images, targets, eps=-1.0)


def test_bad_constructor_options(linear_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="steps"):
        MLAU(linear_model, steps=0)
    with pytest.raises(ValueError, match="threshold"):
        MLAU(linear_model, threshold=1.0)
    with pytest.raises(ValueError, match="direction"):
        MLAU(linear_model, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_invalid"):
        MLAU(linear_model, on_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nn.Module"):
        MLAU(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        build_attack("pgd", linear_model)


def test_probability_outputs_warn(case: Any) -> None:
    model, images, targets = case
    probabilities = nn.Sequential(model, nn.Sigmoid())
    with pytest.warns(UserWarning, match="probabilities"):
        MLAU(probabilities, threshold=0.5, steps=1, on_invalid="skip")(images, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MLAU(model, steps=1)(images, targets)  # logits: no warning


def test_flip_set_with_the_wrong_label_count(case: Any) -> None:
    model, images, targets = case
    wider = torch.cat([targets, targets[:, :1]], dim=1)
    with pytest.raises(
        ValueError, match=r"flip_set has shape \(3, 7\) but targets have shape \(3, 6\)"
    ):
        MLAU(model)(images, targets, flip_set=wider)


@pytest.mark.parametrize("threshold", [None, "0.5", True, float("nan")])
def test_threshold_must_be_a_number(threshold: Any, linear_model: nn.Module) -> None:
    error = ValueError if isinstance(threshold, float) else TypeError
    with pytest.raises(error, match="threshold"):
        MLAU(linear_model, threshold=threshold)


def test_shared_checks_are_strict() -> None:
    assert check_int(np.int64(3), "n", minimum=1) == 3
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            check_int(bad, "n", minimum=1)
    assert check_bool(np.bool_(False), "flag") is False
    for bad in ("false", 0, 1, None):
        with pytest.raises(TypeError, match="flag must be True or False"):
            check_bool(bad, "flag")
    assert check_seed(None) is None and check_seed(np.uint8(7)) == 7
    for bad in (1.5, "1", True):
        with pytest.raises(TypeError, match="seed must be an integer or None"):
            check_seed(bad)
    assert check_number(np.float32(0.5), "x", minimum=0.0) == 0.5
    with pytest.raises(ValueError, match=r"x must be a number in \(0, 1\], got 0"):
        check_number(0, "x", minimum=0.0, maximum=1.0, exclusive_minimum=True)
    with pytest.raises(ValueError, match="x must be a finite number >= 0"):
        check_number(float("inf"), "x", minimum=0.0)
    with pytest.raises(TypeError, match="x must be a number"):
        check_number(torch.tensor(0.5), "x")


def test_flip_set_must_contain_targets(case: Any) -> None:
    model, images, targets = case
    with pytest.raises(ValueError, match="flip_set must contain every target.*images 0, 1, 2"):
        MLAU(model)(images, targets, flip_set=torch.zeros_like(targets))


def test_threshold_changes_prediction(case: Any) -> None:
    model, images, targets = case
    # Logits near 1 for animal: at a 0.9 probability threshold (logit 2.2) it is absent.
    result = MLAU(model, threshold=0.9, steps=1, on_invalid="skip")(images, targets)
    with torch.no_grad():
        expected = torch.sigmoid(model(images)) > 0.9
    assert torch.equal(result.clean_pred, expected)


def test_registry_names_and_build(linear_model: nn.Module, label_graph: Any) -> None:
    assert {"mla-u", "mla-c", "gmla"} <= set(ATTACKS)
    gmla = build_attack("GMLA", linear_model, graph=label_graph, eps=0.02, mode="adaptive", tau=0.5)
    assert gmla.eps == 0.02 and gmla.graph is label_graph and gmla.tau == 0.5  # type: ignore[attr-defined]
    mlau = build_attack("mla-u", linear_model, graph=label_graph, steps=7)
    assert isinstance(mlau, MLAU) and mlau.steps == 7


# ---------------------------------------------------------------------------------------------
# Models that misbehave on their input or output (issue 17).

ATTACK_NAMES = sorted(ATTACKS)


def attack_named(name: str, model: nn.Module, label_graph: Any, **options: Any) -> Any:
    takes_graph = "graph" in inspect.signature(ATTACKS[name].__init__).parameters
    return build_attack(name, model, graph=label_graph if takes_graph else None, **options)


class WritesIntoInput(nn.Module):
    """The linear model, after shifting its input in place by 0.35 (``x.data``: under autograd)."""

    def __init__(self, inner: nn.Module, through_data: bool) -> None:
        super().__init__()
        self.inner = inner
        self.through_data = through_data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.through_data:
            x.data.add_(0.35)
        else:
            x.add_(0.35)  # autograd refuses this on a leaf that requires grad
        return self.inner(x - 0.35)


@pytest.mark.parametrize("through_data", [True, False])
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_a_model_writing_into_its_input_keeps_the_eps_ball(
    name: str, through_data: bool, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    caller_images = images.clone()
    attack = attack_named(
        name, WritesIntoInput(model, through_data), label_graph, eps=0.05, steps=3
    )
    result = attack(images, targets)
    assert torch.equal(images, caller_images)
    assert torch.equal(result.images, caller_images)
    assert (result.adv - images).abs().max() <= 0.05
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    with torch.no_grad():
        fresh = model(result.adv.clone()) > 0  # the model without its in-place shift
    assert torch.equal(result.adv_pred, fresh)


@pytest.mark.parametrize("through_data", [True, False])
def test_a_repair_run_on_its_own_gives_the_model_copies_too(through_data: bool, case: Any) -> None:
    from mlattack.attacks import MLAU, Repair

    model, images, targets = case
    searched = MLAU(model, eps=0.05, steps=3)(images, targets)
    result = Repair()(WritesIntoInput(model, through_data), searched, steps=6, eps=0.05)
    assert (result.adv - images).abs().max() <= 0.05
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    with torch.no_grad():
        fresh = model(result.adv.clone())
    assert torch.equal(result.adv_pred, fresh > 0)
    flipped = ((fresh > 0) != searched.clean_pred) | ~targets
    assert torch.equal(result.success, searched.attacked & flipped.all(dim=1))


def test_the_returned_adv_is_checked_against_the_ball(
    case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, images, targets = case

    def without_copy(self: Any, x: torch.Tensor) -> Any:
        return self.inner(x)

    # Without the base class's copy, the in-place model moves adv in the final forward pass.
    monkeypatch.setattr(base_module._PreparedModel, "forward", without_copy)
    attack = MLDP(WritesIntoInput(model, through_data=True), eps=0.05, steps=3)
    with pytest.raises(RuntimeError, match=r"adversarial images 0, 1, 2 left the eps-ball"):
        attack(images, targets)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_logits_in_another_precision_than_the_images_are_refused(
    name: str, dtype: torch.dtype, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    recast = nn.Sequential(model, Cast(dtype))
    with pytest.raises(ValueError, match=rf"returned {dtype} logits for torch.float32 images"):
        attack_named(name, recast, label_graph, steps=2)(images, targets)


class Cast(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


class ShapeUnderAutograd(nn.Module):
    """The model, dropping its last image (``"batch"``) or label (``"labels"``) when grad is on."""

    def __init__(self, inner: nn.Module, change: str) -> None:
        super().__init__()
        self.inner = inner
        self.change = change

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        if not torch.is_grad_enabled():
            return logits
        return logits[:-1] if self.change == "batch" else logits[:, :-1]


@pytest.mark.parametrize("change", ["batch", "labels"])
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_logits_that_change_shape_under_autograd_are_refused(
    name: str, change: str, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    attack = attack_named(name, ShapeUnderAutograd(model, change), label_graph, steps=2)
    with pytest.raises(ValueError, match=r"change shape under autograd: \(3, 6\) under"):
        attack(images, targets)


def test_meta_tensors_are_refused_by_name(case: Any) -> None:
    model, images, targets = case
    with pytest.raises(ValueError, match="images is on the 'meta' device"):
        MLAU(model)(images.to("meta"), targets)
    with pytest.raises(ValueError, match="targets is on the 'meta' device"):
        MLAU(model)(images, targets.to("meta"))
    with pytest.raises(ValueError, match="flip_set is on the 'meta' device"):
        MLAU(model)(images, targets, flip_set=targets.to("meta"))
    with pytest.raises(ValueError, match="eps is on the 'meta' device"):
        MLAU(model)(images, targets, eps=torch.full((3,), 0.1, device="meta"))
    meta_model = copy.deepcopy(model).to("meta")
    with pytest.raises(ValueError, match=r"model's tensor '\w+' is on the 'meta' device"):
        MLAU(meta_model)(images, targets)


def test_logits_on_another_device_are_refused(case: Any) -> None:
    model, images, targets = case

    class ToMeta(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x).to("meta")

    with pytest.raises(ValueError, match="logits on device 'meta' for images on 'cpu'"):
        MLAU(ToMeta())(images, targets)


def test_skip_leaves_images_without_targets_unattacked_and_says_why(case: Any) -> None:
    model, images, targets = case
    bad = targets.clone()
    bad[0] = False  # no target
    bad[1, 2] = True  # "cat" is absent on these images
    result = MLAU(model, eps=0.3, steps=5, on_invalid="skip")(images, bad)
    assert result.attacked.tolist() == [False, False, True]
    assert result.skip_reasons == ("no target", "target label 2 not predicted present", "")
    assert torch.equal(result.adv[:2], images[:2]) and result.success.tolist() == [
        False,
        False,
        True,
    ]
