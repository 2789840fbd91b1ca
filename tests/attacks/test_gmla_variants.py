"""GMLA's variants beyond the paper, each on a case with a closed form, and their option checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import GMLA, Repair
from mlattack.attacks.base import LoopOutput
from mlattack.attacks.gmla import multi_constraint_direction, steepest_constrained_direction


def random_gradients(n: int, k: int, dim: int = 40, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    g_t = torch.randn((n, dim), generator=generator, dtype=torch.float64)
    protected = torch.randn((n, k, dim), generator=generator, dtype=torch.float64)
    return g_t, protected


def test_multi_constraint_direction_is_orthogonal_to_every_protected_gradient() -> None:
    g_t, protected = random_gradients(n=5, k=3)
    valid = torch.ones(5, 3, dtype=torch.bool)
    direction = multi_constraint_direction(g_t, protected, valid)
    # One constraint per label: each protected gradient, not only their sum, is orthogonal to d.
    assert torch.allclose(
        torch.einsum("nkd,nd->nk", protected, direction),
        torch.zeros(5, 3, dtype=torch.float64),
        atol=1e-10,
    )
    assert torch.allclose(direction.abs().amax(1), torch.ones(5, dtype=torch.float64))
    # It is P sgn(g_t) scaled: the residual sgn(g_t) − d·‖Pν‖∞ lies in the protected span.
    nu = g_t.sign()
    scale = (nu * direction).sum(1, keepdim=True) / (direction * direction).sum(1, keepdim=True)
    residual = nu - scale * direction
    basis, _ = torch.linalg.qr(protected.transpose(1, 2))
    in_span = torch.bmm(basis, torch.bmm(basis.transpose(1, 2), residual.unsqueeze(2))).squeeze(2)
    assert torch.allclose(in_span, residual, atol=1e-10)


def test_multi_constraint_direction_ignores_invalid_and_zero_gradients() -> None:
    g_t, protected = random_gradients(n=4, k=3, seed=1)
    valid = torch.tensor([[True, False, True]] * 4)
    with_invalid = multi_constraint_direction(g_t, protected, valid)
    only_valid = multi_constraint_direction(g_t, protected[:, [0, 2]], valid[:, [0, 2]])
    assert torch.allclose(with_invalid, only_valid, atol=1e-12)
    # A zero gradient is no constraint (QR still returns a unit vector for it: it must be dropped).
    protected[:, 1] = 0.0
    everything = multi_constraint_direction(g_t, protected, torch.ones(4, 3, dtype=torch.bool))
    assert torch.allclose(everything, only_valid, atol=1e-10)
    # Nothing to protect: the plain sign step.
    free = multi_constraint_direction(g_t, protected, torch.zeros(4, 3, dtype=torch.bool))
    assert torch.equal(free, g_t.sign())


@pytest.mark.parametrize("seed", range(4))
def test_steepest_direction_is_the_optimum_of_its_linear_program(seed: int) -> None:
    """``max ⟨g_t, d⟩`` s.t. ``‖d‖∞ ≤ 1``, ``⟨g_nt, d⟩ ≤ 0``, checked against SciPy's HiGHS."""
    linprog = pytest.importorskip("scipy.optimize").linprog
    g_t, protected = random_gradients(n=6, k=1, dim=12, seed=seed)
    g_nt = protected[:, 0]
    g_t[0, :3] = 0.0  # coordinates that only the constraint cares about
    g_nt[1, 4:] = 0.0  # free coordinates
    g_nt[2] = -g_t[2].sign() * g_nt[2].abs()  # sgn(g_t) already descends L_nt: inactive
    direction = steepest_constrained_direction(g_t, g_nt)
    for i in range(6):
        best = linprog(
            -g_t[i].numpy(), A_ub=g_nt[i].numpy()[None], b_ub=[0.0], bounds=[(-1, 1)] * 12,
            method="highs",
        )  # fmt: skip
        assert float(g_t[i] @ direction[i]) == pytest.approx(-best.fun, abs=1e-9)
        assert float(g_nt[i] @ direction[i]) <= 1e-9
        assert float(direction[i].abs().max()) == pytest.approx(1.0)
    assert torch.equal(direction[2], g_t[2].sign())


def test_steepest_direction_keeps_the_shape_and_the_plain_step_without_constraint() -> None:
    g_t = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    free = steepest_constrained_direction(g_t, torch.zeros_like(g_t))
    assert free.shape == g_t.shape
    assert torch.equal(free, g_t.sign())


def protected_logits_case(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A linear model whose four labels all read the same 16 pixels with different weights.

    Label 0 is the target (on, to turn off); labels 1-3 are on or off near their threshold, so a
    sign step on the target moves them too. With 3 protected labels the projected step keeps
    their logits fixed exactly (the model is linear).
    """
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn((4, 48), generator=generator)
    images = torch.full((2, 3, 4, 4), 0.5)
    logits = images.flatten(1) @ weight.T
    bias = torch.tensor([1.0, 0.3, -0.3, 0.2]) - logits[0]
    model = make_linear_model(weight, bias)
    targets = torch.zeros(2, 4, dtype=torch.bool)
    targets[:, 0] = True
    return model, images, targets, weight


def test_multi_mode_keeps_each_protected_logit_where_it_was(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> None:
    model, images, targets, _ = protected_logits_case(make_linear_model)
    flip_set = targets.clone()
    # Steps small enough that the ε-ball never clips them (clipping is not orthogonal).
    options: dict[str, Any] = {
        "eps": 0.05, "steps": 3, "step_size": 0.005, "loss": "bce", "fallback": "none",
    }  # fmt: skip
    multi = GMLA(model, mode="multi", k=3, **options)(images, targets, flip_set=flip_set)
    plain = GMLA(model, mode="projection", **options)(images, targets, flip_set=flip_set)
    moved_multi = (multi.adv_logits - multi.clean_logits)[:, 1:].abs().max()
    moved_plain = (plain.adv_logits - plain.clean_logits)[:, 1:].abs().max()
    assert moved_multi < 1e-4  # exact for a linear model, up to float32 rounding
    assert moved_plain > 100 * moved_multi  # eq. 10 keeps only the summed loss constant
    assert ((multi.adv_logits - multi.clean_logits)[:, 0] < -0.01).all()  # the target moved


def test_steepest_mode_never_raises_the_protected_loss_of_a_linear_model(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> None:
    """Linear logits make the first-order constraint exact: the hinge outside Ψ cannot rise."""
    model, images, targets, _ = protected_logits_case(make_linear_model)
    flip_set = targets.clone()
    options: dict[str, Any] = {"eps": 0.05, "steps": 4, "step_size": 0.004, "repair": False}
    result = GMLA(model, mode="steepest", fallback="none", **options)(
        images, targets, flip_set=flip_set
    )

    def outside_hinge(logits: Tensor) -> Tensor:
        signs = result.clean_pred[:, 1:].float() * 2 - 1
        return torch.relu(1.0 - signs * logits[:, 1:]).sum(dim=1)

    assert (outside_hinge(result.adv_logits) <= outside_hinge(result.clean_logits) + 1e-4).all()
    assert ((result.adv_logits - result.clean_logits)[:, 0] < -0.01).all()  # the target moved


def collateral_case(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> tuple[nn.Module, Tensor, Tensor]:
    """Label 0 (on) is the target; label 1 reads label 0's pixels and pixels of its own.

    Turning 0 off drags 1 off too, unless its own pixels are raised to compensate, which is
    what a repair can do.
    """
    weight = torch.zeros(2, 48)
    weight[0, :16] = 1.0
    weight[1, :16] = 1.0
    weight[1, 16:32] = 1.0
    images = torch.full((2, 3, 4, 4), 0.5)
    bias = torch.tensor([-7.5, -15.0])  # label 0 at +0.5, label 1 at +1.0
    return make_linear_model(weight, bias), images, torch.tensor([[True, False]] * 2)


def test_repair_turns_back_a_collateral_flip_and_keeps_psi(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module], make_problem: Callable[..., Any]
) -> None:
    model, images, targets = collateral_case(make_linear_model)
    problem = make_problem(model, images, targets, eps=0.2)
    # A found point: block 0 lowered by 0.1 (label 0 at -1.1, label 1 at -0.6: flipped too).
    found = images.clone()
    found.view(2, -1)[:, :16] -= 0.1
    start = torch.tensor([10, 20])
    repair = Repair()
    repaired = repair.refine(
        problem,
        LoopOutput(adv=found, iterations=start, gradient_failed=torch.zeros(2, dtype=torch.bool)),
        30,
    )
    with torch.no_grad():
        logits = model(repaired.adv)
    assert (logits[:, 0] <= 0).all()  # Ψ still reached
    assert (logits[:, 1] > 0).all()  # the collateral flip is undone
    assert ((repaired.adv - images).abs().amax(dim=(1, 2, 3)) <= 0.2 + 1e-7).all()
    # Repair steps are counted and stay within each image's unused budget (30 − 10, 30 − 20).
    assert (repaired.iterations > start).all()
    assert (repaired.iterations <= 30).all()
    # No budget left: the found point is returned as it is.
    spent = repair.refine(
        problem,
        LoopOutput(
            adv=found,
            iterations=torch.tensor([30, 30]),
            gradient_failed=torch.zeros(2, dtype=torch.bool),
        ),
        30,
    )
    assert torch.equal(spent.adv, found)


def test_repair_pulls_only_on_flipped_labels_unless_told_all(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module], make_problem: Callable[..., Any]
) -> None:
    """Label 2 reads pixels of its own and sits within the margin of its threshold, unflipped:
    the default repair leaves its pixels alone, ``labels="all"`` pushes it away from the
    threshold (and spends the step on it)."""
    model, images, targets = collateral_case(make_linear_model)
    weight = torch.zeros(3, 48)
    weight[:2] = model.weight.detach()
    weight[2, 32:48] = 1.0
    bias = torch.cat([model.bias.detach(), torch.tensor([-7.5])])  # label 2 at +0.5
    model = make_linear_model(weight, bias)
    targets = torch.cat([targets, torch.zeros(2, 1, dtype=torch.bool)], dim=1)
    problem = make_problem(model, images, targets, eps=0.2)
    found = images.clone()
    found.view(2, -1)[:, :16] -= 0.1  # Ψ reached, label 1 flipped, label 2 untouched
    start = LoopOutput(adv=found, iterations=torch.tensor([10, 20]),
                       gradient_failed=torch.zeros(2, dtype=torch.bool))  # fmt: skip
    flipped_only = Repair().refine(problem, start, 30).adv.view(2, -1)
    every_label = Repair(labels="all").refine(problem, start, 30).adv.view(2, -1)
    assert torch.equal(flipped_only[:, 32:48], found.view(2, -1)[:, 32:48])
    assert (every_label[:, 32:48] > found.view(2, -1)[:, 32:48]).all()
    with torch.no_grad():
        assert (model(flipped_only.view_as(found))[:, 1] > 0).all()  # label 1 turned back
    with pytest.raises(ValueError, match="labels"):
        Repair(labels="some")  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [1, 5])
def test_repair_never_loses_success_nor_adds_collateral_flips(
    trained_hierarchy: Any, batch: int
) -> None:
    """Same search either way (deterministic): repair may only lower each image's flip count."""
    case = trained_hierarchy
    images, targets = case.images[:batch], case.targets[:batch]
    options: dict[str, Any] = {"graph": case.graph, "eps": 0.15, "steps": 30}
    plain = GMLA(case.model, repair=False, **options)(images, targets)
    repaired = GMLA(case.model, **options)(images, targets)
    assert torch.equal(plain.success, repaired.success)

    def collateral(result: Any) -> Tensor:
        return ((result.adv_pred != result.clean_pred) & ~result.flip_set).sum(dim=1)

    assert (collateral(repaired) <= collateral(plain)).all()
    # What success says is what the returned image does, in a fresh forward pass.
    with torch.no_grad():
        fresh = case.model(repaired.adv) > 0
    assert torch.equal(fresh, repaired.adv_pred)
    assert ((repaired.adv - images).abs().amax(dim=(1, 2, 3)) <= 0.15 + 1e-6).all()


def test_margin_loss_stops_pulling_labels_beyond_the_margin(
    linear_model: nn.Module, make_problem: Callable[..., Any]
) -> None:
    """With the hinge, a flip-set label already beyond ``margin`` adds nothing to ``g_t``."""
    weight = linear_model.weight.detach()
    images = torch.full((1, 3, 4, 4), 0.5)
    # Turn off animal (logit 1.0: within a margin of 2) and turn on cat, which is put 3 beyond.
    flip_set = torch.tensor([[True, False, True, False, False, False]])
    problem = make_problem(linear_model, images, flip_set)
    logits = problem.clean_logits
    shifted = images.clone()
    # Move cat's own block so that its logit is +3 (beyond the margin), animal untouched.
    shifted.view(1, -1)[0, 16:24] += (3.0 - logits[0, 2]) / 8
    attack = GMLA(linear_model, mode="projection", loss="margin", margin=2.0, fallback="none")
    step = attack._direction(problem, shifted, torch.tensor([0]))
    # Only animal pulls: g_t = −∇(2 − (−z_animal)) = −W_animal, so ν = sgn(−W_animal) where it
    # is non-zero, and the projection against the (hinged) non-targets keeps that sign pattern.
    expected = torch.sign(-weight[0])
    support = expected != 0
    assert torch.equal(step.direction.flatten()[support].sign(), expected[support])
    assert step.direction.flatten()[~support].abs().max() < 1.0  # cat's pixels no longer pushed
    assert not step.failed.any()


def coupled_case(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> tuple[nn.Module, Tensor, Tensor]:
    """Label 1 reads exactly label 0's pixels: turning 0 off drags 1 along, whatever the step.

    The constrained loop (label 1 protected) cannot flip label 0; the unconstrained fallback can.
    """
    weight = torch.zeros(3, 48)
    weight[0, :16] = 1.0
    weight[1, :16] = 1.0
    weight[2, 16:32] = 1.0
    images = torch.full((2, 3, 4, 4), 0.5)
    bias = torch.tensor([-7.5, -7.7, -8.5])  # label 0 at +0.5, label 1 at +0.3, label 2 at -0.5
    return make_linear_model(weight, bias), images, torch.tensor([[True, False, False]] * 2)


@pytest.mark.parametrize("chain", ["unconstrained", "projection-then-unconstrained"])
def test_unconstrained_fallback_solves_what_the_constrained_loop_cannot(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module], chain: str
) -> None:
    model, images, targets = coupled_case(make_linear_model)
    options: dict[str, Any] = {"eps": 0.1, "steps": 20, "mode": "multi", "k": 2}
    constrained = GMLA(model, fallback="none", **options)(images, targets, flip_set=targets)
    fallback = GMLA(model, fallback=chain, **options)(images, targets, flip_set=targets)
    assert not constrained.success.any()
    assert fallback.success.all()
    # What success says is what the returned image does: label 0 off in a fresh forward pass.
    with torch.no_grad():
        assert (model(fallback.adv)[:, 0] <= 0).all()
    assert ((fallback.adv - images).abs().amax(dim=(1, 2, 3)) <= 0.1 + 1e-7).all()
    # The fallback ran only after the constrained share of the steps (ceil(0.5 · 20) = 10).
    assert (fallback.iterations > 10).all()
    assert (fallback.iterations <= 20).all()


def test_lazy_refresh_matches_every_step_refresh_when_gradients_are_constant(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module],
) -> None:
    """For a linear model the protected gradients never change, so reusing them is exact."""
    model, images, targets, _ = protected_logits_case(make_linear_model)
    options: dict[str, Any] = {"eps": 0.05, "steps": 8, "loss": "bce", "fallback": "none"}
    for mode, extra in (("multi", {"k": 3}), ("projection", {})):
        eager = GMLA(model, mode=mode, **extra, **options)(images, targets, flip_set=targets)
        lazy = GMLA(model, mode=mode, refresh=4, **extra, **options)(
            images, targets, flip_set=targets
        )
        assert torch.allclose(eager.adv, lazy.adv, atol=1e-6), mode


def test_lazy_refresh_saves_backward_passes(
    make_linear_model: Callable[[Tensor, Tensor], nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, images, targets, _ = protected_logits_case(make_linear_model)
    batched: list[bool] = []
    grad = torch.autograd.grad

    def counting_grad(*args: Any, **kwargs: Any) -> Any:
        batched.append(bool(kwargs.get("is_grads_batched", False)))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    options: dict[str, Any] = {"eps": 0.001, "steps": 8, "early_stop": False, "fallback": "none"}
    GMLA(model, mode="multi", refresh=4, **options)(images, targets, flip_set=targets)
    # 9 evaluations (start + 8 steps); the batched pass only at evaluations 0, 4 and 8.
    assert batched.count(True) == 3


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"mode": "orthogonal"}, "mode"),
        ({"loss": "hinge"}, "loss"),
        ({"fallback": "restart"}, "fallback"),
        ({"preset": "paper"}, "preset"),
        ({"k": 0}, "k"),
        ({"k": 2.0}, "k"),
        ({"refresh": 0}, "refresh"),
        ({"refresh": True}, "refresh"),
        ({"margin": 0.0}, "margin"),
        ({"fallback_share": 1.0}, "fallback_share"),
        ({"fallback_share": 0.0}, "fallback_share"),
        ({"tau": 1.5}, "tau"),
        ({"preset": "official", "mode": "multi"}, "mode"),
        ({"preset": "official", "mode": "steepest"}, "mode"),
        ({"preset": "official", "repair": True}, "repair"),
        ({"preset": "official", "fallback": "unconstrained"}, "fallback"),
    ],
)
def test_bad_options_raise_naming_the_option(
    linear_model: nn.Module, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        GMLA(linear_model, **options)


@pytest.mark.parametrize("value", ["false", 1, None.__class__])
def test_repair_must_be_a_bool(linear_model: nn.Module, value: Any) -> None:
    with pytest.raises(TypeError, match="repair"):
        GMLA(linear_model, repair=value)


def test_official_preset_sets_the_papers_gmla_and_explicit_options_apply_on_top(
    linear_model: nn.Module,
) -> None:
    official = GMLA(linear_model, preset="official")
    assert (official.mode, official.loss, official.fallback, official.tau) == (
        "adaptive",
        "bce",
        "none",
        0.85,
    )
    assert official.tau_rule == "official"
    tuned = GMLA(linear_model, preset="official", tau=0.5)
    assert (tuned.tau, tuned.mode, tuned.loss) == (0.5, "adaptive", "bce")
    projection = GMLA(linear_model, preset="official", mode="projection")
    assert (projection.mode, projection.loss) == ("projection", "bce")
    assert "tau" not in repr(projection)  # the preset's tau does not act in projection mode
    assert official.repair is False
    default = GMLA(linear_model)
    assert (default.mode, default.loss, default.fallback, default.repair) == (
        "unconstrained",
        "smooth-margin",
        "none",
        True,
    )
    assert "mode='unconstrained'" in repr(default) and "sharpness=1.5" in repr(default)


@pytest.mark.parametrize("name", ["mla-u", "mla-c", "gmla", "ml-dp", "mla-lp"])
def test_mixed_targets_turn_present_labels_off_and_absent_ones_on(
    name: str, linear_model: nn.Module, label_graph: Any
) -> None:
    """Ω = {dog (present), bike (absent)}: dog turns off and bike on in the same call."""
    from mlattack.attacks import build_attack

    images = torch.full((2, 3, 4, 4), 0.5)
    names = list(label_graph.names)
    targets = torch.zeros(2, len(names), dtype=torch.bool)
    targets[:, [names.index("dog"), names.index("bike")]] = True
    options: dict[str, Any] = {"eps": 0.3, "direction": "mixed"}
    if name == "gmla":
        options["graph"] = label_graph
    result = build_attack(name, linear_model, **options)(images, targets)
    assert result.success.all()
    assert not result.adv_pred[:, names.index("dog")].any()
    assert result.adv_pred[:, names.index("bike")].all()
    if name == "gmla":
        # Ψ: animal has no other child on, so it goes with dog; bike's parent vehicle is on.
        flipped = {names[i] for i in result.flip_set[0].nonzero().flatten()}
        assert flipped == {"animal", "dog", "bike"}
        assert label_graph.is_consistent(result.adv_pred).all()
    with pytest.raises(ValueError, match="direction='mixed'"):
        build_attack(
            name, linear_model, eps=0.3, **({"graph": label_graph} if name == "gmla" else {})
        )(images, targets)


@pytest.mark.parametrize(
    ("options", "named", "user"),
    [
        ({"tau": 0.5}, "tau", "mode='adaptive'"),
        ({"mode": "projection", "tau": 0.85}, "tau", "mode='adaptive'"),
        ({"tau_rule": "official"}, "tau_rule", "mode='adaptive'"),
        ({"k": 3}, "k", "mode='multi'"),
        ({"mode": "adaptive", "k": 2}, "k", "mode='multi'"),
        ({"fallback_share": 0.3}, "fallback_share", "fallback"),
        (
            {"loss": "bce", "repair": False, "margin": 2.0},
            "margin",
            "loss='smooth-margin' or 'margin'",
        ),
        ({"loss": "margin", "sharpness": 2.0}, "sharpness", "loss='smooth-margin'"),
        ({"preset": "official", "sharpness": 2.0}, "sharpness", "loss='smooth-margin'"),
        ({"preset": "official", "refresh": 4}, "refresh", "arithmetic='fast'"),
        ({"preset": "official", "mode": "projection", "tau": 0.5}, "tau", "mode='adaptive'"),
    ],
)
def test_an_option_the_chosen_variant_does_not_use_is_refused(
    linear_model: nn.Module, options: dict[str, Any], named: str, user: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{named}=.* is not used by this GMLA .*{user}"):
        GMLA(linear_model, **options)


def test_options_the_variant_uses_are_accepted_and_shown(linear_model: nn.Module) -> None:
    adaptive = GMLA(linear_model, mode="adaptive", tau=0.7, tau_rule="official")
    assert "tau=0.7" in repr(adaptive) and "tau_rule='official'" in repr(adaptive)
    multi = GMLA(linear_model, mode="multi", k=2, refresh=3)
    assert "k=2" in repr(multi) and "refresh=3" in repr(multi) and "tau" not in repr(multi)
    fallback = GMLA(linear_model, fallback="unconstrained", fallback_share=0.25)
    assert "fallback_share=0.25" in repr(fallback)
    plain = GMLA(linear_model, loss="bce", repair=False)
    assert "margin" not in repr(plain)  # no hinge, no repair, no fallback: the margin does not act
    assert "margin=1.0" in repr(GMLA(linear_model))
    assert "sharpness" not in repr(GMLA(linear_model, loss="margin"))
    assert "sharpness=3.0" in repr(GMLA(linear_model, sharpness=3.0))


def test_the_attack_object_keeps_nothing_of_a_call(trained_hierarchy: Any) -> None:
    """The lazy-refresh cache belongs to the call: two calls, or one call inside another, agree."""
    case = trained_hierarchy
    images, targets = case.images[:4], case.targets[:4]
    attack = GMLA(case.model, case.graph, eps=0.1, steps=10, mode="multi", refresh=3)
    before = dict(vars(attack))
    first = attack(images, targets)
    assert vars(attack).keys() == before.keys()
    assert all(vars(attack)[key] is value for key, value in before.items())
    assert attack.model is case.model
    again = attack(images, targets)
    assert torch.equal(first.adv, again.adv)
