"""ML-DP: closed-form steps on a linear model, label selection and the batched Jacobian rows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks.mldp import AMP_MARGIN, FLOAT32_MARGIN, MLDP, label_jacobian, select_labels

# The tiny models come from tests/attacks/conftest.py as fixtures: the linear model reads 3×4×4
# images, label c looks at pixel block c (weight 1) and children at their parent's block (0.5).
IMAGE_SHAPE = (3, 4, 4)
DOG, ANIMAL = 1, 0


def with_bias(linear_model: nn.Module, label: int, value: float) -> nn.Module:
    """A copy of the linear model with one bias changed."""
    bias = linear_model.bias.detach().clone()
    bias[label] = value
    return type(linear_model)(linear_model.weight.detach(), bias)


def grey(n: int = 1) -> torch.Tensor:
    return torch.full((n, *IMAGE_SHAPE), 0.5)


def one_hot_targets(label: int, n: int = 1) -> torch.Tensor:
    targets = torch.zeros(n, 6, dtype=torch.bool)
    targets[:, label] = True
    return targets


@pytest.mark.parametrize(("overshoot", "margin"), [(0.0, 0.01), (0.02, 0.01), (0.02, 0.2)])
def test_one_step_is_the_closed_form_least_norm_step(
    overshoot: float, margin: float, linear_model: nn.Module
) -> None:
    # Grey image: dog's logit is 1 and its weight row is 1 on the dog block, 0.5 on the animal
    # block (‖w‖² = 10), so r = −(1 + overshoot + margin) w / 10: dog lands overshoot + margin
    # below θ = 0. Animal drops by 0.4·(1 + overshoot + margin) only: it stays on and never joins
    # the active set.
    model = linear_model
    attack = MLDP(model, eps=1.0, steps=1, overshoot=overshoot, margin=margin)
    images = grey()
    result = attack(images, one_hot_targets(DOG))
    weight = model.weight.detach()
    expected = images.flatten(1) - (1 + overshoot + margin) * weight[DOG] / 10
    torch.testing.assert_close(result.adv.flatten(1), expected, atol=1e-6, rtol=0)
    logits = result.adv_logits[0]
    assert logits[DOG].item() == pytest.approx(-(overshoot + margin), abs=1e-5)
    assert logits[ANIMAL].item() == pytest.approx(1 - 0.4 * (1 + overshoot + margin), abs=1e-5)
    assert result.iterations.tolist() == [1]
    assert result.success.item()  # even without overshoot: the margin keeps dog off θ


def test_non_target_that_would_cross_joins_the_active_set(linear_model: nn.Module) -> None:
    # Animal's logit is 0.3: the dog-only step (−0.4 on animal) would turn it off, so animal joins
    # and the step solves W_A r = t_A − f_A for A = {dog, animal}: dog goes to
    # θ − (overshoot·|θ − f| + margin), animal stops overshoot·|θ − f| short of θ.
    model = with_bias(linear_model, ANIMAL, -3.7)
    weight = model.weight.detach()
    overshoot, margin = 0.1, 0.01
    images = grey()
    result = MLDP(model, eps=1.0, steps=1, overshoot=overshoot, margin=margin)(
        images, one_hot_targets(DOG)
    )
    rows = weight[[DOG, ANIMAL]]
    clean = model(images).detach()[0, [DOG, ANIMAL]]
    wanted = torch.tensor([-(overshoot * 1.0 + margin), 0.3 * overshoot])
    step = rows.T @ torch.linalg.solve(rows @ rows.T, wanted - clean)
    torch.testing.assert_close(
        result.adv.flatten(1)[0] - images.flatten(1)[0], step, atol=1e-6, rtol=0
    )
    assert result.success.item()
    assert torch.equal(result.adv_pred[0], result.clean_pred[0] ^ one_hot_targets(DOG)[0])


def test_succeeds_on_a_nonlinear_model_without_disturbing_other_labels(
    mlp_model: nn.Module, strongest_present: Callable[[Tensor], Tensor]
) -> None:
    torch.manual_seed(0)
    images = (0.5 + 0.2 * (torch.rand(6, *IMAGE_SHAPE) - 0.5)).clamp(0, 1)
    with torch.no_grad():
        logits = mlp_model(images)
    targets = strongest_present(logits)
    result = MLDP(mlp_model, eps=0.5, steps=20, early_stop=False)(images, targets)
    assert result.success.all()
    others = ~targets
    assert torch.equal(result.adv_pred[others], result.clean_pred[others])
    # The least-norm step is small: far inside the 0.5 budget.
    assert (result.adv - images).abs().amax() < 0.1


def test_threshold_and_turn_on_direction(linear_model: nn.Module) -> None:
    # θ = logit(threshold) = 0.5: dog (logit 1) only has to fall by 0.5·(1 + overshoot) + margin.
    threshold = float(torch.sigmoid(torch.tensor(0.5)))
    result = MLDP(linear_model, eps=1.0, steps=1, threshold=threshold)(grey(), one_hot_targets(DOG))
    drop = 1.02 * 0.5 + FLOAT32_MARGIN
    expected = grey().flatten(1) - drop * linear_model.weight.detach()[DOG] / 10
    torch.testing.assert_close(result.adv.flatten(1), expected, atol=1e-6, rtol=0)
    assert result.success.item()
    # Turning cat (logit −1) on.
    cat = 2
    result = MLDP(linear_model, eps=1.0, direction="on")(grey(), one_hot_targets(cat))
    assert result.success.item() and result.adv_pred[0, cat]


def test_zero_gradient_is_reported_not_raised() -> None:
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.flatten(1)[:, :2] * self.scale) + torch.tensor([1.0, -1.0])

    images = grey(2)
    targets = torch.tensor([[True, False], [True, False]])
    result = MLDP(Constant(), eps=0.1)(images, targets)
    assert result.gradient_failed.all() and not result.success.any()
    assert torch.equal(result.adv, images)


def test_select_labels_keeps_flip_set_then_nearest_non_targets() -> None:
    logits = torch.tensor([[5.0, -0.1, 2.0, 0.3, -4.0], [0.2, 3.0, -0.05, 1.0, 9.0]])
    flip_set = torch.tensor([[True, False, False, False, False], [False, False, False, True, True]])
    labels, valid = select_labels(logits, flip_set, 0.0, max_labels=3)
    assert labels.shape == (2, 3) and valid.all()
    assert labels[0].tolist() == [0, 1, 3]  # flip set, then |−0.1| < |0.3| < ...
    assert set(labels[1, :2].tolist()) == {3, 4} and labels[1, 2].item() == 2
    # A flip set larger than max_labels is kept whole; other rows pad with invalid entries.
    wide = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    labels, valid = select_labels(logits, wide, 0.0, max_labels=2)
    assert labels.shape == (2, 3)
    assert valid.tolist() == [[True, True, True], [True, True, False]]
    # A row's choice does not depend on the batch.
    alone, alone_valid = select_labels(logits[1:], wide[1:], 0.0, max_labels=2)
    assert alone[0, :2].tolist() == labels[1, :2].tolist() and alone_valid.sum() == 2


@pytest.mark.parametrize("batched", [True, False])
def test_label_jacobian_rows(batched: bool, linear_model: nn.Module) -> None:
    model = linear_model
    images = grey(2).requires_grad_(True)
    logits = model(images)
    labels = torch.tensor([[1, 4], [0, 5]])
    valid = torch.tensor([[True, True], [True, False]])
    rows = label_jacobian(logits, images, labels, valid, batched=batched)
    weight = model.weight.detach()
    torch.testing.assert_close(rows[0], weight[[1, 4]])
    torch.testing.assert_close(rows[1, 0], weight[0])
    assert (rows[1, 1] == 0).all()


def test_batched_and_per_row_jacobians_agree_on_a_conv_net(conv_model: nn.Module) -> None:
    torch.manual_seed(0)
    model = conv_model
    images = torch.rand(3, *IMAGE_SHAPE, requires_grad=True)
    labels = torch.tensor([[0, 5, 2], [1, 1, 3], [4, 0, 2]])
    valid = torch.ones(3, 3, dtype=torch.bool)
    first = label_jacobian(model(images), images, labels, valid, batched=True)
    second = label_jacobian(model(images), images, labels, valid, batched=False)
    torch.testing.assert_close(first, second)
    (reference,) = torch.autograd.grad(model(images)[2, 4], images)
    torch.testing.assert_close(first[2, 0], reference[2].flatten())


def near_threshold_dog_images(linear_model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Six images whose dog logit is barely above θ = 0 (2e-6 ... 1e-3): the relative overshoot
    alone would land them within ~1e-7 of the threshold."""
    images = grey(6)
    flat = images.view(6, -1)
    for i, above in enumerate([3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3]):
        flat[i, 8:16] = 0.5 - (1 - above) / 8  # dog's block: logit 1 − (1 − above)
    with torch.no_grad():
        logits = linear_model(images)[:, DOG]
    assert ((logits > 0) & (logits < 2e-3)).all()
    return images, one_hot_targets(DOG, 6)


def test_lands_a_margin_beyond_the_threshold(linear_model: nn.Module) -> None:
    images, targets = near_threshold_dog_images(linear_model)
    result = MLDP(linear_model, eps=0.1)(images, targets)
    assert result.success.all()
    # Each target ends at least margin/2 below θ in a fresh forward pass, not 2 % of its 1e-5.
    assert (result.adv_logits[:, DOG] <= -FLOAT32_MARGIN / 2).all()
    wide = MLDP(linear_model, eps=0.1, margin=0.5)(images, targets)
    assert (wide.adv_logits[:, DOG] <= -0.25).all()


def test_default_margin_follows_amp(linear_model: nn.Module) -> None:
    assert MLDP(linear_model).margin == FLOAT32_MARGIN
    assert MLDP(linear_model, amp="bf16").margin == AMP_MARGIN
    assert MLDP(linear_model, amp="bf16", margin=0.3).margin == 0.3


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"overshoot": -0.1}, ValueError),
        ({"overshoot": float("nan")}, ValueError),
        ({"overshoot": "0.1"}, TypeError),
        ({"overshoot": None}, TypeError),
        ({"margin": 0.0}, ValueError),
        ({"margin": -0.01}, ValueError),
        ({"margin": "0.01"}, TypeError),
        ({"margin": True}, TypeError),
        ({"max_labels": 0}, ValueError),
        ({"max_labels": 2.0}, ValueError),
    ],
)
def test_bad_options_raise(
    options: dict[str, object], error: type[Exception], linear_model: nn.Module
) -> None:
    with pytest.raises(error, match=next(iter(options))):
        MLDP(linear_model, **options)  # type: ignore[arg-type]
