"""Bad input, gradient failures, turn-on targets and model-state restoration for every attack.

The validation lives in the base class, but each attack is run through it here so that no subclass
can bypass it (e.g. by overriding a hook that runs before the checks).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import ATTACKS, Attack, build_attack

ATTACK_NAMES = sorted(ATTACKS)
NUM_LABELS = 6  # the tiny models of tests/attacks/conftest.py


def make_attack(name: str, model: nn.Module, graph: Any, **options: Any) -> Attack:
    takes_graph = "graph" in inspect.signature(ATTACKS[name].__init__).parameters
    options.setdefault("eps", 0.3)
    options.setdefault("steps", 10)
    return build_attack(name, model, graph=graph if takes_graph else None, **options)


@pytest.fixture
def case(linear_model: nn.Module, make_case: Any) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    images, targets = make_case(linear_model, n=3)
    return linear_model, images, targets


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_rejects_bad_input(name: str, case: Any, label_graph: Any) -> None:
    model, images, targets = case
    attack = make_attack(name, model, label_graph)
    outside, non_finite = images.clone(), images.clone()
    outside[1, 0, 0, 0] = 1.5
    non_finite[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\[0, 1\].*images 1"):
        attack(outside, targets)
    with pytest.raises(ValueError, match="NaN or Inf.*images 2"):
        attack(non_finite, targets)
    with pytest.raises(ValueError, match="rank 4"):
        attack(images[0], targets)
    with pytest.raises(ValueError, match="2 rows but there are 3 images"):
        attack(images, targets[:2])
    with pytest.raises(ValueError, match=r"logits of shape \(3, 6\).*targets have shape \(3, 5\)"):
        attack(images, targets[:, :5])
    empty = targets.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="empty.*images 1"):
        attack(images, empty)
    with pytest.raises(ValueError, match="eps must be finite and >= 0.*images 0, 1, 2"):
        attack(images, targets, eps=-0.1)
    with pytest.raises(ValueError, match="eps must be finite and >= 0.*images 1"):
        attack(images, targets, eps=torch.tensor([0.1, -0.1, 0.1]))
    with pytest.raises(ValueError, match="eps"):
        make_attack(name, model, label_graph, eps=-0.1)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_names_or_skips_absent_turn_off_targets(
    name: str, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    cat = label_graph.index("cat")  # absent on the test images
    invalid = targets.clone()
    invalid[2, cat] = True
    with pytest.raises(ValueError, match=f"not predicted present: image 2 label {cat}"):
        make_attack(name, model, label_graph)(images, invalid)
    result = make_attack(name, model, label_graph, on_invalid="skip")(images, invalid)
    assert result.attacked.tolist() == [True, True, False]
    assert not result.success[2] and result.iterations[2] == 0
    assert torch.equal(result.adv[2], images[2])


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_warns_on_probability_outputs(name: str, case: Any, label_graph: Any) -> None:
    model, images, targets = case
    probabilities = nn.Sequential(model, nn.Sigmoid())
    with pytest.warns(UserWarning, match="probabilities"):
        make_attack(name, probabilities, label_graph, steps=1, on_invalid="skip")(images, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_attack(name, model, label_graph, steps=1)(images, targets)


class _BrokenGradient(torch.autograd.Function):
    """Identity forward; backward zeroes image 1's gradient and makes image 2's NaN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        if grad.shape[0] == 3:  # the full batch; images keep their rows while all three run
            grad[1] = 0.0
            grad[2] = float("nan")
        return grad


class _BrokenGradientModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(_BrokenGradient.apply(x))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_reports_zero_or_nan_gradients(name: str, case: Any, label_graph: Any) -> None:
    model, images, targets = case
    result = make_attack(name, _BrokenGradientModel(model), label_graph)(images, targets)
    assert result.gradient_failed.tolist() == [False, True, True]
    assert result.success[0] and not result.success[1:].any()
    assert torch.isfinite(result.adv).all()
    assert torch.equal(result.adv[1:], images[1:])  # stopped at the clean start


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_turns_absent_labels_on(
    name: str, case: Any, label_graph: Any, capsys: Any
) -> None:
    model, images, _ = case
    bike = label_graph.index("bike")  # absent; its parent vehicle is present
    targets = torch.zeros(3, NUM_LABELS, dtype=torch.bool)
    targets[:, bike] = True
    result = make_attack(name, model, label_graph, direction="on", verbose=True)(images, targets)
    assert result.success.all() and result.adv_pred[:, bike].all()
    assert not result.clean_pred[:, bike].any()
    assert result.name in capsys.readouterr().err  # the tqdm bar


class _FailingModel(nn.Module):
    """Answers the clean forward, then raises on the first forward of the attack loop."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("model failure")
        return self.inner(x)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_model_state_restored_when_the_attack_raises(
    name: str, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    failing = _FailingModel(model)
    failing.train()
    params = list(failing.parameters())
    params[0].requires_grad_(False)
    flags = [param.requires_grad for param in params]
    with pytest.raises(RuntimeError, match="model failure"):
        make_attack(name, failing, label_graph)(images, targets)
    assert failing.calls == 2
    assert all(module.training for module in failing.modules())
    assert [param.requires_grad for param in params] == flags
