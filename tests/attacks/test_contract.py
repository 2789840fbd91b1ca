"""The contract every registered attack keeps (``docs/semantics.md``), on tiny models."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import ATTACKS, Attack, AttackResult, build_attack

ATTACK_NAMES = sorted(ATTACKS)
EPS = 0.05


def takes_graph(name: str) -> bool:
    return "graph" in inspect.signature(ATTACKS[name].__init__).parameters


@pytest.fixture
def attack_factory(request: pytest.FixtureRequest) -> Callable[..., Attack]:
    """``attack_factory(name, model, **options)``; the tiny label graph goes to attacks that take one."""

    def build(name: str, model: nn.Module, **options: Any) -> Attack:
        graph = request.getfixturevalue("label_graph") if takes_graph(name) else None
        options.setdefault("eps", EPS)
        options.setdefault("steps", 10)
        return build_attack(name, model, graph=graph, **options)

    return build


def fresh_prediction(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return model(images) > 0


def assert_in_ball(adv: Tensor, images: Tensor, eps: float | Tensor) -> None:
    """``‖adv − images‖∞ ≤ eps`` per image, exactly: in the images' dtype and in float64."""
    eps = torch.as_tensor(eps, dtype=torch.float64).expand(images.shape[0])
    in_dtype = (adv - images).flatten(1).abs().amax(dim=1)
    exact = (adv.double() - images.double()).flatten(1).abs().amax(dim=1)
    assert (in_dtype.double() <= eps).all(), (in_dtype, eps)
    assert (exact <= eps).all(), (exact, eps)
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_result_respects_budget_box_and_fresh_forward(
    name: str, tiny_model: nn.Module, make_case: Callable[..., Any], attack_factory: Any
) -> None:
    torch.manual_seed(0)
    images, targets = make_case(tiny_model, n=5)
    result = attack_factory(name, tiny_model)(images, targets)
    assert isinstance(result, AttackResult)
    assert result.adv.shape == images.shape and result.adv.dtype == images.dtype
    assert_in_ball(result.adv, images, EPS)
    adv_pred = fresh_prediction(tiny_model, result.adv)
    assert torch.equal(result.adv_pred, adv_pred)
    assert torch.equal(result.clean_pred, fresh_prediction(tiny_model, images))
    flipped = ((adv_pred != result.clean_pred) | ~targets).all(dim=1)
    assert torch.equal(result.success, flipped & result.attacked)
    assert torch.equal(result.targets, targets)
    assert not (targets & ~result.flip_set).any(), "the flip set must contain the targets"
    assert result.iterations.dtype == torch.int64 and result.iterations.shape == (5,)
    assert torch.allclose(result.eps, torch.full((5,), EPS))
    assert result.name == ATTACKS[name].name


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_budget_outside_the_unit_interval_is_refused(
    name: str, linear_model: nn.Module, make_case: Callable[..., Any], attack_factory: Any
) -> None:
    # Images are in [0, 1]: ε = 0 leaves nothing to search and ε > 1 (e.g. 8 meant as 8/255) is
    # no constraint at all. Both are refused, in the constructor and per call.
    images, targets = make_case(linear_model, n=3)
    attack = attack_factory(name, linear_model)
    for eps in (0.0, -0.1, 1.0001, 8, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\]"):
            attack_factory(name, linear_model, eps=eps)
        with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\]"):
            attack(images, targets, eps=eps)
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1\].*images 1"):
        attack(images, targets, eps=torch.tensor([0.1, 0.0, 0.1]))
    with pytest.raises(TypeError, match="eps must be a number"):
        attack_factory(name, linear_model, eps="0.1")
    with pytest.raises(TypeError, match="eps must be a number"):
        attack(images, targets, eps=True)  # type: ignore[arg-type]
    assert attack_factory(name, linear_model, eps=1).eps == 1.0
    result = attack(images, targets, eps=np.float32(0.03))  # NumPy scalars are numbers
    assert_in_ball(result.adv, images, float(np.float32(0.03)))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_inputs_model_mode_and_requires_grad_untouched(
    name: str, conv_model: nn.Module, make_case: Callable[..., Any], attack_factory: Any
) -> None:
    images, targets = make_case(conv_model, n=3)
    images_before, targets_before = images.clone(), targets.clone()
    conv_model.train()
    conv_model.head.weight.requires_grad_(False)  # a mix of frozen and trainable parameters
    conv_model.norm.eval()  # a mix of module modes, restored module by module
    modes = {name: module.training for name, module in conv_model.named_modules()}
    flags = {name: param.requires_grad for name, param in conv_model.named_parameters()}
    running_mean = conv_model.norm.running_mean.clone()
    attack_factory(name, conv_model)(images, targets)
    assert torch.equal(images, images_before) and torch.equal(targets, targets_before)
    assert {n: m.training for n, m in conv_model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in conv_model.named_parameters()} == flags
    assert torch.equal(conv_model.norm.running_mean, running_mean), "ran in train mode"
    assert all(p.grad is None for p in conv_model.parameters()), "parameter gradients accumulated"


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
@pytest.mark.parametrize("random_start", [False, True])
def test_image_alone_or_in_batch_gives_same_result(
    name: str,
    random_start: bool,
    tiny_model: nn.Module,
    make_case: Callable[..., Any],
    attack_factory: Any,
) -> None:
    model = tiny_model.double()  # float64: no batch-size-dependent rounding flips a gradient sign
    images, targets = make_case(model, n=4)
    attack = attack_factory(name, model, random_start=random_start, seed=3)
    batch = attack(images, targets)
    for i in range(images.shape[0]):
        alone = attack(images[i : i + 1], targets[i : i + 1])
        torch.testing.assert_close(alone.adv[0], batch.adv[i], atol=1e-9, rtol=0)
        assert alone.success[0] == batch.success[i]
        assert alone.iterations[0] == batch.iterations[i]
        assert torch.equal(alone.flip_set[0], batch.flip_set[i])


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_seeded_random_start_is_deterministic(
    name: str, mlp_model: nn.Module, make_case: Callable[..., Any], attack_factory: Any
) -> None:
    images, targets = make_case(mlp_model, n=3)
    first = attack_factory(name, mlp_model, random_start=True, seed=11)(images, targets)
    second = attack_factory(name, mlp_model, random_start=True, seed=11)(images, targets)
    assert torch.equal(first.adv, second.adv)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_per_image_eps(
    name: str, linear_model: nn.Module, make_case: Callable[..., Any], attack_factory: Any
) -> None:
    images, targets = make_case(linear_model, n=3)
    eps = torch.tensor([0.003, 0.01, 0.2])
    result = attack_factory(name, linear_model)(images, targets, eps=eps)
    assert_in_ball(result.adv, images, eps)
    assert torch.equal(result.eps, eps)
    distance = (result.adv - images).flatten(1).abs().amax(dim=1)
    assert distance[0] < 0.01  # the small budget really binds image 0


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_several_budgets_in_one_call(
    name: str, mlp_model: nn.Module, make_case: Callable[..., Any], attack_factory: Any
) -> None:
    images, targets = make_case(mlp_model, n=3)
    attack = attack_factory(name, mlp_model)
    budgets = [0.01, 0.05, np.float32(0.2)]
    calls = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal calls
        calls += 1

    hook = mlp_model.register_forward_hook(count)
    try:
        results = attack(images, targets, eps=budgets)
        together = calls
        calls = 0
        separate = [attack(images, targets, eps=eps) for eps in budgets]
    finally:
        hook.remove()
    assert isinstance(results, list) and len(results) == 3
    for result, alone, eps in zip(results, separate, budgets, strict=True):
        assert torch.equal(result.adv, alone.adv)
        assert torch.equal(result.success, alone.success)
        assert torch.equal(result.flip_set, alone.flip_set)
        assert torch.equal(result.eps, torch.full((3,), float(eps)))
        assert_in_ball(result.adv, images, float(eps))
    assert together == calls - 2  # one clean forward pass instead of three


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ([], r"eps=\[\] is empty"),
        ([0.05, 0.01], r"strictly increasing.*eps\[1\]=0.01 after eps\[0\]=0.05"),
        ([0.05, 0.05], r"strictly increasing.*eps\[1\]=0.05"),
        ([0.05, 2.0], r"eps\[1\] must be a number in \(0, 1\], got 2.0"),
        ((0.05, 0.0), r"eps\[1\] must be a number in \(0, 1\], got 0.0"),
    ],
)
def test_bad_budget_lists_are_refused(
    budgets: Any, message: str, linear_model: nn.Module, make_case: Callable[..., Any]
) -> None:
    images, targets = make_case(linear_model, n=2)
    with pytest.raises(ValueError, match=message):
        build_attack("mla-u", linear_model, steps=2)(images, targets, eps=budgets)
    with pytest.raises(TypeError, match=r"eps\[0\] must be a number"):
        build_attack("mla-u", linear_model, steps=2)(images, targets, eps=["0.1"])


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_inside_no_grad_and_inference_mode(
    context: Any, linear_model: nn.Module, make_case: Callable[..., Any]
) -> None:
    images, targets = make_case(linear_model, n=2)
    expected = build_attack("mla-u", linear_model, eps=0.3, steps=5)(images, targets)
    with context():
        inference_images = images.clone()
        result = build_attack("mla-u", linear_model, eps=0.3, steps=5)(inference_images, targets)
    assert torch.equal(result.adv, expected.adv) and result.success.all()
