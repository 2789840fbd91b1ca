"""Bad input, gradient failures, turn-on targets and model-state restoration for every attack.

The validation lives in the base class, but each attack is run through it here so that no subclass
can bypass it (e.g. by overriding a hook that runs before the checks).
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from typing import Any

import numpy as np
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
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\], got -0.1"):
        attack(images, targets, eps=-0.1)
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\].*images 1"):
        attack(images, targets, eps=torch.tensor([0.1, -0.1, 0.1]))
    with pytest.raises(ValueError, match="eps"):
        make_attack(name, model, label_graph, eps=-0.1)
    with pytest.raises(ValueError, match=r"flip_set has shape \(3, 5\) but targets have shape"):
        attack(images, targets, flip_set=targets[:, :5])


class _Detached(nn.Module):
    """Logits computed outside autograd (e.g. a NumPy round trip inside ``forward``)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x).detach()


class _IntegerLogits(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return (self.inner(x) * 10).round().long()


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_names_a_misbehaving_model_output(
    name: str, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    with pytest.raises(ValueError, match="model's output .* does not require grad"):
        make_attack(name, _Detached(model), label_graph)(images, targets)
    with pytest.raises(ValueError, match="model must return float logits, got dtype torch.int64"):
        make_attack(name, _IntegerLogits(model), label_graph)(images, targets)


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"early_stop": "false"}, TypeError, "early_stop"),
        ({"early_stop": 0}, TypeError, "early_stop"),
        ({"verbose": "no"}, TypeError, "verbose"),
        ({"random_start": 1}, TypeError, "random_start"),
        ({"threshold": None}, TypeError, "threshold"),
        ({"threshold": "0.5"}, TypeError, "threshold"),
        ({"threshold": 1.0}, ValueError, "threshold"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": "1"}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"steps": 2.0}, ValueError, "steps"),
        ({"steps": True}, ValueError, "steps"),
        ({"eps": None}, TypeError, "eps"),
        ({"direction": 1}, ValueError, "direction"),
        ({"on_invalid": None}, ValueError, "on_invalid"),
        ({"amp": "fp8"}, ValueError, "amp"),
        ({"amp": True}, ValueError, "amp"),
        ({"channels_last": "yes"}, TypeError, "channels_last"),
        ({"compile": 1}, TypeError, "compile"),
    ],
)
def test_every_attack_refuses_loose_option_types(
    name: str,
    options: dict[str, Any],
    error: type[Exception],
    named: str,
    linear_model: nn.Module,
    label_graph: Any,
) -> None:
    with pytest.raises(error, match=named):
        make_attack(name, linear_model, label_graph, **options)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_accepts_numpy_scalars(name: str, case: Any, label_graph: Any) -> None:
    model, images, targets = case
    attack = make_attack(
        name,
        model,
        label_graph,
        eps=np.float32(0.3),
        steps=np.int64(3),
        threshold=np.float64(0.5),
        seed=np.int32(4),
        early_stop=np.bool_(True),
    )
    assert attack.steps == 3 and type(attack.steps) is int and attack.seed == 4
    result = attack(images, targets, eps=np.float64(0.2))
    assert (result.adv - images).abs().amax() <= 0.2


class _NaNWhenMoved(nn.Module):
    """Finite logits on the clean images, NaN on any other input (only under ``no_grad`` when
    ``final_only``: the loop then sees finite logits and only the base class's check is NaN)."""

    def __init__(self, inner: nn.Module, clean: Tensor, value: float, final_only: bool) -> None:
        super().__init__()
        self.inner = inner
        self.clean = clean
        self.value = value
        self.final_only = final_only

    def forward(self, x: Tensor) -> Tensor:
        logits = self.inner(x)
        moved = ~(x.unsqueeze(1) == self.clean.unsqueeze(0)).flatten(2).all(dim=2).any(dim=1)
        if self.final_only and torch.is_grad_enabled():
            return logits
        return torch.where(moved.unsqueeze(1), torch.full_like(logits, self.value), logits)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_nan_logits_never_count_as_a_flip(name: str, case: Any, label_graph: Any) -> None:
    # NaN > θ is False, so a NaN used to look like "turned off" and every attack reported success.
    model, images, targets = case
    nan_model = _NaNWhenMoved(model, images, float("nan"), final_only=False)
    result = make_attack(name, nan_model, label_graph)(images, targets)
    assert not result.success.any()
    assert torch.equal(result.nonfinite_logits, ~torch.isfinite(result.adv_logits).all(dim=1))
    moved = (result.adv != images).flatten(1).any(dim=1)
    assert torch.equal(result.nonfinite_logits, moved)


@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize("value", [float("nan"), -float("inf")])
def test_nonfinite_logits_of_the_fresh_forward_pass_are_flagged(
    name: str, value: float, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    flaky = _NaNWhenMoved(model, images, value, final_only=True)
    result = make_attack(name, flaky, label_graph)(images, targets)
    assert result.nonfinite_logits.all() and not result.success.any()
    reference = make_attack(name, model, label_graph)(images, targets)
    assert reference.success.all() and not reference.nonfinite_logits.any()


class _BatchDependent(nn.Module):
    """Adds a rounding-sized offset that depends on the batch size, as BLAS and convolution
    kernels do in float32 (they block and sum differently by batch size)."""

    def __init__(self, inner: nn.Module, scale: float = 1e-6) -> None:
        super().__init__()
        self.inner = inner
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) + self.scale * math.cos(2.1 * x.shape[0])


def _near_threshold_images(model: nn.Module) -> tuple[Tensor, Tensor]:
    """Six images whose dog logit lies 3e-6 ... 1e-3 above θ = 0 on the linear model."""
    images = torch.full((6, 3, 4, 4), 0.5)
    flat = images.view(6, -1)
    for i, above in enumerate([3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3]):
        flat[i, 8:16] = 0.5 - (1 - above) / 8
    targets = torch.zeros(6, NUM_LABELS, dtype=torch.bool)
    targets[:, 1] = True
    return images, targets


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_float32_success_does_not_depend_on_the_batch(
    name: str, linear_model: nn.Module, mlp_model: nn.Module, make_case: Any, label_graph: Any
) -> None:
    # Float32 models give an image slightly different logits alone and inside a batch; an attack
    # must not land so close to the threshold that this decides its success.
    near_images, near_targets = _near_threshold_images(linear_model)
    mlp_images, mlp_targets = make_case(mlp_model, n=6)
    for model, images, targets in (
        (_BatchDependent(linear_model), near_images, near_targets),
        (_BatchDependent(mlp_model), mlp_images, mlp_targets),
    ):
        attack = make_attack(name, model, label_graph, eps=0.1)
        batch = attack(images, targets)
        alone = torch.cat([attack(images[i : i + 1], targets[i : i + 1]).success for i in range(6)])
        assert torch.equal(batch.success, alone), (batch.success, alone)
        assert batch.success.any()


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_images_keep_the_budget_exactly(
    name: str, dtype: torch.dtype, case: Any, label_graph: Any
) -> None:
    # 0.03 is 0.030029... in bfloat16 and 0.029998... in float16: the ball must hold in the
    # images' dtype and in real numbers.
    model, images, targets = case
    model = copy.deepcopy(model).to(dtype)
    images = images.to(dtype)
    result = make_attack(name, model, label_graph, eps=0.03)(images, targets)
    assert result.adv.dtype == dtype
    assert (result.adv - images).abs().amax() <= 0.03
    assert (result.adv.double() - images.double()).abs().amax() <= 0.03
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    assert result.eps.dtype == torch.float32


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_images_of_another_dtype_than_the_model_are_refused(
    name: str, case: Any, label_graph: Any
) -> None:
    model, images, targets = case
    attack = make_attack(name, model, label_graph)
    with pytest.raises(ValueError, match="images are torch.float64 but the model's parameters are"):
        attack(images.double(), targets)
    with pytest.raises(ValueError, match="images are torch.bfloat16"):
        attack(images.bfloat16(), targets)


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
