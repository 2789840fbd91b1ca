"""Fuzzing the attacks' public surface (issue 9): constructors, calls and misbehaving models.

Each example builds one attack and calls it once, with at most one faulty part: a constructor
option, the model (NaN outputs, wrong shapes, detached or integer logits, probabilities, a model
that raises), the images, the targets, the call's ``eps`` or the ``flip_set``. Besides the fault, the
other parts vary over accepted forms (NumPy scalars, 0/1 integer masks, per-image and listed
budgets, ``on_invalid="skip"``, turn-on targets, bfloat16 images with ``amp``).

An input is either accepted, and then every result keeps the contract (ε-ball exact in the images'
dtype, ``[0, 1]``, ``success`` exactly when a fresh forward pass flips every target with finite
logits, ``nonfinite_logits`` exactly where they are not finite), or refused with a ``TypeError`` or
``ValueError`` whose message names the faulty part. A model's own exception propagates unchanged.
Anything else fails. Outcomes are counted and printed by the last test (``pytest -s``). Runs under
the deterministic hypothesis profile of ``tests/conftest.py``.
"""

from __future__ import annotations

import inspect
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from mlattack.attacks import ATTACKS, AttackResult, build_attack
from mlattack.graph import LabelGraph

OUTCOMES: Counter[tuple[str, str]] = Counter()
ATTACK_NAMES = sorted(ATTACKS)
NUM_LABELS = 6
SHAPE = (3, 4, 4)
# The autouse one-thread fixture is function-scoped; it only sets the thread count, which holds
# for every example alike.
SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
# No shrinking: an example is one small attack call, and a failure names its case already.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]


def record(test: str, outcome: str) -> None:
    OUTCOMES[(test, outcome)] += 1


class Linear(nn.Module):
    """A seeded linear multi-label model on 3×4×4 images: some labels on, some off at mid-grey."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(NUM_LABELS, 48, generator=generator) / 4)
        self.bias = nn.Parameter(torch.tensor([2.0, 1.5, -1.5, 1.0, -2.0, 0.5]))

    def forward(self, x: Tensor) -> Tensor:
        centred = x.flatten(1) - 0.5
        return centred @ self.weight.T.to(x.dtype) + self.bias.to(x.dtype)


class Misbehaving(nn.Module):
    """The linear model with one fault injected into its output (``kind``)."""

    def __init__(self, kind: str, clean: Tensor) -> None:
        super().__init__()
        self.inner = Linear()
        self.kind = kind
        self.clean = clean

    def forward(self, x: Tensor) -> Any:
        logits = self.inner(x)
        kind = self.kind
        if kind == "raises":
            raise RuntimeError("the model exploded")
        if kind == "nan everywhere":
            return torch.full_like(logits, float("nan"))
        if kind in ("nan when moved", "-inf when moved"):
            moved = ~(x.unsqueeze(1) == self.clean.unsqueeze(0)).flatten(2).all(dim=2).any(dim=1)
            value = float("nan") if kind == "nan when moved" else -float("inf")
            return torch.where(moved.unsqueeze(1), torch.full_like(logits, value), logits)
        if kind == "extra label":
            return torch.cat([logits, logits[:, :1]], dim=1)
        if kind == "one row short":
            return logits[:-1]
        if kind == "rank 1":
            return logits.sum(dim=1)
        if kind == "tuple":
            return (logits,)
        if kind == "detached":
            return logits.detach()
        if kind == "integer":
            return logits.round().long()
        if kind == "probabilities":
            return torch.sigmoid(logits)
        return logits


#: Model faults and whether they must be refused (True) or may be accepted (False).
MODEL_FAULTS = {
    "raises": True,
    "nan everywhere": True,  # refused with on_invalid="raise", skipped otherwise
    "nan when moved": False,
    "-inf when moved": False,
    "extra label": True,
    "one row short": True,
    "rank 1": True,
    "tuple": True,
    "detached": True,
    "integer": True,
    "probabilities": False,
}

#: Bad constructor options: (name, value).
BAD_OPTIONS = [
    ("eps", 0.0),
    ("eps", 8),
    ("eps", -0.01),
    ("eps", float("nan")),
    ("eps", "0.1"),
    ("eps", None),
    ("eps", True),
    ("steps", 0),
    ("steps", 1.5),
    ("steps", "3"),
    ("steps", True),
    ("threshold", None),
    ("threshold", "0.5"),
    ("threshold", 0.0),
    ("threshold", 1.5),
    ("early_stop", "false"),
    ("early_stop", 1),
    ("random_start", 1),
    ("random_start", "no"),
    ("verbose", "no"),
    ("seed", 1.5),
    ("seed", "1"),
    ("seed", False),
    ("direction", "up"),
    ("direction", None),
    ("on_invalid", "ignore"),
    ("on_invalid", ["skip"]),
    ("amp", "fp8"),
    ("amp", True),
    ("amp", ["bf16"]),
    ("channels_last", "yes"),
    ("compile", 1),
]
#: Accepted variants of options (NumPy scalars, bounds).
GOOD_OPTIONS = [
    ("eps", 1.0),
    ("eps", np.float32(0.2)),
    ("eps", np.float64(0.05)),
    ("steps", np.int64(2)),
    ("threshold", np.float32(0.6)),
    ("threshold", 0.4),
    ("early_stop", np.bool_(False)),
    ("random_start", True),
    ("seed", np.int32(5)),
    ("seed", -3),
    ("on_invalid", "skip"),
]


@dataclass
class Case:
    """One generated call: what is faulty (``area``, ``detail``) and the words its refusal needs."""

    area: str
    detail: str
    names: tuple[str, ...]


def base_images(n: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + 0.3 * (torch.rand((n, *SHAPE), generator=generator) - 0.5)


#: No edges: GMLA's flip set is then Ω itself, whatever the (random) clean prediction.
FLAT_GRAPH = LabelGraph([f"label{c}" for c in range(NUM_LABELS)], [])


def make(name: str, model: nn.Module, options: dict[str, Any]) -> Any:
    takes_graph = "graph" in inspect.signature(ATTACKS[name].__init__).parameters
    return build_attack(name, model, graph=FLAT_GRAPH if takes_graph else None, **options)


@settings(max_examples=200, suppress_health_check=SUPPRESSED, phases=PHASES)
@given(
    name=st.sampled_from(ATTACK_NAMES),
    option=st.sampled_from(BAD_OPTIONS + GOOD_OPTIONS),
)
def test_fuzz_constructors(name: str, option: tuple[str, Any]) -> None:
    key, value = option
    try:
        attack = make(name, Linear(), {key: value})
    except (TypeError, ValueError) as exc:
        assert (key, value) in BAD_OPTIONS, f"{key}={value!r} refused: {exc}"
        assert key in str(exc), f"the message does not name {key!r}: {exc}"
        record("constructor", f"refused ({type(exc).__name__})")
        return
    assert (key, value) in GOOD_OPTIONS, f"{key}={value!r} accepted"
    stored = getattr(attack, key)
    assert stored == value and type(stored) in (int, float, bool, str)
    record("constructor", "accepted")


def check_result(
    result: AttackResult,
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    eps: Tensor,
    theta: float,
) -> None:
    """The contract of an accepted call."""
    adv = result.adv
    assert adv.shape == images.shape and adv.dtype == images.dtype
    radius = eps.double()
    in_dtype = (adv - images).flatten(1).abs().amax(dim=1).double()
    exact = (adv.double() - images.double()).flatten(1).abs().amax(dim=1)
    assert (in_dtype <= radius).all() and (exact <= radius).all(), (in_dtype, radius)
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(result.eps, radius.to(result.eps.dtype))
    with torch.no_grad():
        logits = model(adv).float()
    finite = torch.isfinite(logits).all(dim=1)
    flipped = (((logits > theta) != result.clean_pred) | ~targets).all(dim=1)
    assert torch.equal(result.nonfinite_logits, ~finite)
    assert torch.equal(result.success, result.attacked & finite & flipped)
    assert not (result.success & ~result.attacked).any()


@settings(max_examples=300, suppress_health_check=SUPPRESSED, phases=PHASES)
@given(
    name=st.sampled_from(ATTACK_NAMES),
    area=st.sampled_from(["none", "model", "images", "targets", "eps", "flip_set"]),
    variant=st.integers(min_value=0, max_value=10_000),
    n=st.integers(min_value=1, max_value=3),
    skip=st.booleans(),
    turn_on=st.booleans(),
    half=st.booleans(),
)
def test_fuzz_calls(
    name: str, area: str, variant: int, n: int, skip: bool, turn_on: bool, half: bool
) -> None:
    rng = np.random.default_rng(variant)
    images = base_images(n, variant)
    options: dict[str, Any] = {"eps": 0.2, "steps": 1 if name == "mla-lp" else 2, "seed": 0}
    options["on_invalid"] = "skip" if skip else "raise"
    options["direction"] = "on" if turn_on else "off"
    model_kind = "fine"
    if area == "model":
        model_kind = str(rng.choice(sorted(MODEL_FAULTS)))
    model = Misbehaving(model_kind, images)
    with torch.no_grad():
        clean = Linear()(images) > 0
    wanted = ~clean if turn_on else clean
    targets = torch.zeros_like(clean)
    for i in range(n):  # one or two valid targets per image (every image has some)
        choices = wanted[i].nonzero().flatten().tolist()
        chosen = rng.choice(
            choices, size=min(len(choices), 1 + int(rng.integers(2))), replace=False
        )
        targets[i, chosen] = True
    call: dict[str, Any] = {}
    # Probabilities are all "present" at threshold 0.5: turn-on targets then fit no image.
    case = Case(area, model_kind, ("model", "logits", "targets"))
    if half and area == "none":  # bfloat16 images through autocast
        images = images.bfloat16()
        options["amp"] = "bf16"
    if area == "images":
        detail = str(
            rng.choice(["outside", "nan", "rank 3", "empty", "integer", "numpy", "float64"])
        )
        case = Case(area, detail, ("images",))
        if detail == "outside":
            images = images.clone()
            images[-1, 0, 0, 0] = 1.25
        elif detail == "nan":
            images = images.clone()
            images[0, 1, 2, 3] = float("nan")
        elif detail == "rank 3":
            images = images[0]
        elif detail == "empty":
            images, targets = images[:0], targets[:0]
        elif detail == "integer":
            images = (images * 255).to(torch.uint8)
        elif detail == "numpy":
            images = images.numpy()
        else:
            images = images.double()
    elif area == "targets":
        detail = str(rng.choice(["rows", "width", "values", "empty row", "wrong side", "numpy"]))
        case = Case(area, detail, ("targets",))
        if detail == "rows":
            targets = torch.cat([targets, targets[:1]])
        elif detail == "width":
            targets = targets[:, :-1]
        elif detail == "values":
            targets = targets.long() * 2
        elif detail == "empty row":
            targets = targets.clone()
            targets[-1] = False
        elif detail == "wrong side":
            targets = targets | ~wanted  # some target is on the wrong side: raise, or skip
        else:
            targets = targets.numpy()
    elif area == "eps":
        detail = str(
            rng.choice(
                [
                    "zero",
                    "above one",
                    "string",
                    "bool",
                    "shape",
                    "int tensor",
                    "empty list",
                    "decreasing",
                    "repeated",
                    "list member",
                    "per image",
                    "list",
                    "numpy",
                ]
            )
        )
        case = Case(area, detail, ("eps",))
        call["eps"] = {
            "zero": 0.0,
            "above one": 8,
            "string": "0.1",
            "bool": True,
            "shape": torch.full((n + 1,), 0.1),
            "int tensor": torch.ones(n, dtype=torch.int64),
            "empty list": [],
            "decreasing": [0.2, 0.1],
            "repeated": [0.1, 0.1],
            "list member": [0.1, "0.2"],
            "per image": torch.linspace(0.05, 0.3, n),
            "list": [0.05, np.float32(0.3)],
            "numpy": np.float32(0.1),
        }[detail]
    elif area == "flip_set":
        detail = str(rng.choice(["width", "missing", "superset"]))
        case = Case(area, detail, ("flip_set",))
        if detail == "width":
            call["flip_set"] = torch.ones(n, NUM_LABELS + 1, dtype=torch.bool)
        elif detail == "missing":
            call["flip_set"] = torch.zeros(n, NUM_LABELS, dtype=torch.bool)
        else:
            call["flip_set"] = targets | torch.from_numpy(rng.random((n, NUM_LABELS)) < 0.3)

    attack = make(name, model, options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # probabilities: warned, then attacked
            outcome = attack(images, targets, **call)
    except RuntimeError as exc:
        assert model_kind == "raises" and str(exc) == "the model exploded", repr(exc)
        record(f"call/{case.area}", "model error propagated")
        return
    except (TypeError, ValueError) as exc:
        assert case.area != "none", f"a valid call was refused: {exc!r}"
        assert any(word in str(exc) for word in case.names), f"{case}: {exc}"
        record(f"call/{case.area}", f"refused ({type(exc).__name__})")
        return
    accepted_faults = {
        "images": set(),
        "targets": {"wrong side"} if skip else set(),
        "eps": {"per image", "list", "numpy"},
        "flip_set": {"superset"},
        "model": {kind for kind, refused in MODEL_FAULTS.items() if not refused}
        | ({"nan everywhere"} if skip else set()),
    }
    assert case.area == "none" or case.detail in accepted_faults[case.area], f"accepted: {case}"
    results = outcome if isinstance(outcome, list) else [outcome]
    budgets = call.get("eps", options["eps"])
    if isinstance(budgets, list):
        assert len(results) == len(budgets)
    else:
        budgets = [budgets]
    targets = torch.as_tensor(targets).bool()
    for result, budget in zip(results, budgets, strict=True):
        eps = torch.as_tensor(budget, dtype=torch.float64).expand(images.shape[0])
        with attack._prepared_model(images.device) as running:
            check_result(result, running, images, targets, eps, attack.logit_threshold)
        if model_kind == "nan everywhere":
            assert not result.attacked.any()
    record(f"call/{case.area}", "accepted")


def test_fuzz_outcomes_are_counted() -> None:
    """Prints the outcome counts (``pytest -s``); runs after the fuzz tests of this file."""
    if not OUTCOMES:
        pytest.skip("run together with the fuzz tests of this file")
    for (test, outcome), count in sorted(OUTCOMES.items()):
        print(f"fuzz attacks {test:<16} {outcome:<24} {count}")
    outcomes = {outcome for _, outcome in OUTCOMES}
    assert "accepted" in outcomes and any(o.startswith("refused") for o in outcomes)
