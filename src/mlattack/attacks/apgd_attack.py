"""The attacks whose loop is the AutoPGD engine (:func:`~mlattack.attacks.apgd.run_apgd`).

:class:`APGDAttack` turns the engine's objects into constructor options: ``schedule`` and
``arithmetic`` name a :class:`~mlattack.attacks.apgd.Schedule` and an
:class:`~mlattack.attacks.apgd.Update` (AutoPGD's, or the authors' from
:mod:`mlattack.attacks.official`), and ``preset="official"`` is the façade that sets every option
to the authors' value.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from mlattack._validation import check_bool, check_int

from .apgd import (
    AUTOPGD_SCHEDULE,
    AUTOPGD_UPDATE,
    FAILURES,
    OBJECTIVES,
    RELATIVE_STEP,
    DirectionFn,
    DirectionStep,
    Failures,
    Objective,
    Schedule,
    Update,
    check_step_size,
    run_apgd,
)
from .base import Attack, AttackProblem, LoopOutput, _check_choice
from .official import OFFICIAL_SCHEDULE, OFFICIAL_UPDATE, PRESETS, OfficialKind, official_step

__all__ = ["ARITHMETICS", "SCHEDULES", "STOPS", "APGDAttack"]

ScheduleName = Literal["autopgd", "official"]
Stop = Literal["image", "batch"]
Arithmetic = Literal["fast", "official"]

#: ``schedule=`` names and the checkpoint rules they select.
SCHEDULES: dict[str, Schedule] = {"autopgd": AUTOPGD_SCHEDULE, "official": OFFICIAL_SCHEDULE}
#: ``arithmetic=`` names and the iterate updates they select.
ARITHMETICS: dict[str, Update] = {"fast": AUTOPGD_UPDATE, "official": OFFICIAL_UPDATE}
STOPS: tuple[Stop, ...] = ("image", "batch")


class APGDAttack(Attack):
    """An attack whose loop is :func:`~mlattack.attacks.apgd.run_apgd`; subclasses give
    :meth:`_direction`.

    The loop options below default to the AutoPGD loop of Croce & Hein. Each can be switched to
    the behaviour of the authors' code (Mahmood & Elhamifar, CVPR 2024, see
    :mod:`mlattack.attacks.official`), and ``preset="official"`` switches them all
    (``docs/semantics.md``, "Official mode"). An option passed explicitly is applied on top of the
    preset: ``MLAC(model, preset="official", step_size=0.1)`` is the official loop with a first
    step of 0.1.

    Args:
        model: the multi-label classifier (returns logits).
        preset: ``None`` or ``"official"`` (every option below at the authors' value).
        step_size: the initial step: a number ``> 0``, or ``"<k>eps"``, ``k`` times each image's
            ε (default from :attr:`loop_defaults`: ``"2eps"``, AutoPGD's rule; GMLA ``"1eps"``).
            Official: 0.012.
        schedule: ``"autopgd"`` (default) or ``"official"``: the authors' checkpoint rules
            (:class:`~mlattack.attacks.official.OfficialSchedule`).
        reset_momentum: a restart also resets the momentum term (default ``True``; official
            ``False``).
        failures: an image that never reaches its flip set is returned as its ``"best"``-objective
            iterate (default) or ``"clean"`` (official).
        objective: the objective tracked for the step-size tests and the best point: the attack's
            own (``"attack"``, default) or ``Σ_c −BCE(f_c, y*_c)`` over ``"all-labels"``
            (official).
        stop: ``"image"`` (default): finished images leave the working batch; ``"batch"``
            (official): they stay in it, their results frozen, until every image has finished
            (only the batch-dependent τ quirk of GMLA can tell the two apart).
        arithmetic: ``"fast"`` (default) or ``"official"``: gradients, directions and the update
            evaluated as the authors' code does, in float32 order (two backward passes for
            MLA-C); needed to reproduce their iterates bit for bit.
        restarts: ``None`` (default) or ``k ≥ 1``: rerun the loop up to ``k`` times from seeded
            random starts on the images that have not reached their flip set; each image keeps
            its best result. ``iterations`` then counts the steps of every run.
        **options: the shared options of :class:`~mlattack.attacks.base.Attack`.
    """

    default_steps = 100
    #: The loop options when neither passed nor set by a preset (a subclass may change some).
    loop_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {
            "step_size": RELATIVE_STEP,
            "schedule": "autopgd",
            "reset_momentum": True,
            "failures": "best",
            "objective": "attack",
            "stop": "image",
            "arithmetic": "fast",
        }
    )
    #: The authors' attack type this class reproduces under ``arithmetic="official"``.
    official_kind: ClassVar[OfficialKind | None] = None
    #: Drop finished images from the working batch (off only to measure what that saves).
    _compact_finished: bool = True

    def __init__(
        self,
        model: nn.Module,
        *,
        preset: str | None = None,
        step_size: float | str | None = None,
        schedule: ScheduleName | None = None,
        reset_momentum: bool | None = None,
        failures: Failures | None = None,
        objective: Objective | None = None,
        stop: Stop | None = None,
        arithmetic: Arithmetic | None = None,
        restarts: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        if preset is not None:
            _check_choice(preset, "preset", tuple(PRESETS))
        self.preset = preset
        #: The initial step: a number, or ``"<k>eps"``, ``k`` times each image's ε.
        self.step_size = check_step_size(
            self._preset_value("step_size", step_size, self.loop_defaults["step_size"])
        )
        self.schedule: ScheduleName = _check_choice(
            self._preset_value("schedule", schedule, self.loop_defaults["schedule"]),
            "schedule",
            tuple(SCHEDULES),
        )
        self.reset_momentum = check_bool(
            self._preset_value(
                "reset_momentum", reset_momentum, self.loop_defaults["reset_momentum"]
            ),
            "reset_momentum",
        )
        self.failures: Failures = _check_choice(
            self._preset_value("failures", failures, self.loop_defaults["failures"]),
            "failures",
            FAILURES,
        )
        self.objective: Objective = _check_choice(
            self._preset_value("objective", objective, self.loop_defaults["objective"]),
            "objective",
            OBJECTIVES,
        )
        self.stop: Stop = _check_choice(
            self._preset_value("stop", stop, self.loop_defaults["stop"]), "stop", STOPS
        )
        self.arithmetic: Arithmetic = _check_choice(
            self._preset_value("arithmetic", arithmetic, self.loop_defaults["arithmetic"]),
            "arithmetic",
            tuple(ARITHMETICS),
        )
        if self.arithmetic == "official" and self.official_kind is None:
            raise ValueError(
                f"arithmetic='official' is not available for {self.name}: the authors' code has "
                "no such attack; use arithmetic='fast'"
            )
        self.restarts = None if restarts is None else check_int(restarts, "restarts", minimum=1)

    def _preset_value(self, name: str, given: Any, default: Any) -> Any:
        """``given`` when passed (not ``None``), else the preset's value, else ``default``."""
        if given is not None:
            return given
        if self.preset is None:
            return default
        preset = PRESETS[self.preset]
        return preset.loop.get(name, preset.gmla.get(name, default))

    def _loop_options(self) -> dict[str, Any]:
        return {
            "step_size": self.step_size,
            "schedule": self.schedule,
            "reset_momentum": self.reset_momentum,
            "failures": self.failures,
            "objective": self.objective,
            "stop": self.stop,
            "arithmetic": self.arithmetic,
        }

    def __repr__(self) -> str:
        """The shared options, the preset, and the loop options that differ from it."""
        shown = [f"preset={self.preset!r}"] if self.preset is not None else []
        for name, value in self._loop_options().items():
            if value != self._preset_value(name, None, self.loop_defaults[name]):
                shown.append(f"{name}={value!r}")
        if self.restarts is not None:
            shown.append(f"restarts={self.restarts}")
        base = super().__repr__()
        return f"{base[:-1]}, {', '.join(shown)})" if shown else base

    @abc.abstractmethod
    def _direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        """Objective, ascent direction and logits at ``x`` for rows ``rows``, from one forward."""

    def _official_direction(self, problem: AttackProblem, x: Tensor, rows: Tensor) -> DirectionStep:
        """:meth:`_direction` in the authors' arithmetic (``arithmetic="official"``)."""
        assert self.official_kind is not None
        return official_step(self.official_kind, problem.model, problem, x, rows)

    def _attack(self, problem: AttackProblem) -> LoopOutput:
        direction = self._official_direction if self.arithmetic == "official" else self._direction
        return self._loop(problem, lambda x, rows: direction(problem, x, rows), self.steps)

    def _loop(self, problem: AttackProblem, direction_fn: DirectionFn, steps: int) -> LoopOutput:
        """:func:`run_apgd` of ``steps`` steps along ``direction_fn`` with this attack's options."""
        return run_apgd(
            problem,
            direction_fn,
            steps=steps,
            early_stop=self.early_stop,
            random_start=self.random_start,
            compact=self._compact_finished and self.stop == "image",
            verbose=self.verbose,
            description=self.name,
            step_size=self.step_size,
            schedule=SCHEDULES[self.schedule],
            update=ARITHMETICS[self.arithmetic],
            reset_momentum=self.reset_momentum,
            failures=self.failures,
            objective=self.objective,
            restarts=0 if self.restarts is None else self.restarts,
        )
