"""The attack registry: one entry per attack, carrying what the library and the runner need.

Every list of attack names derives from :data:`REGISTRY`: :data:`~mlattack.attacks.ATTACKS`,
:func:`~mlattack.attacks.build_attack`, the names and presets an experiment config accepts, the
runner's cost estimate (``step_cost``) and default steps. Adding an attack is one file (the class)
and one :func:`register_attack` call (``docs/adding-an-attack.md``).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from mlattack._validation import check_number

from .base import Attack
from .official import PRESETS

if TYPE_CHECKING:
    from ..graph import LabelGraph

__all__ = [
    "ATTACKS",
    "REGISTRY",
    "AttackEntry",
    "attack_entry",
    "build_attack",
    "register_attack",
]

#: A registry name: lower case letters, digits and inner hyphens (``mla-u``), as configs write it.
NAME_PATTERN = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def _keyword_options(cls: type[Attack]) -> frozenset[str]:
    """The keyword options ``cls(model, ...)`` accepts, along its constructors' ``**options``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        names.update(
            p.name
            for p in parameters
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "model"
        )
        if not any(p.kind is p.VAR_KEYWORD for p in parameters) or klass is Attack:
            break
    return frozenset(names - {"graph"})


@dataclass(frozen=True)
class AttackEntry:
    """One registered attack.

    Attributes:
        name: the registry name configs use (``"mla-u"``).
        cls: the :class:`~mlattack.attacks.base.Attack` subclass.
        step_cost: the cost of one of its steps relative to an MLA-U step (the runner deals work
            to ranks by it).
        presets: the ``preset=`` values it takes.
        options: the keyword options its constructor accepts (its option schema).
        takes_graph: whether its constructor takes the label graph.
    """

    name: str
    cls: type[Attack]
    step_cost: float
    presets: tuple[str, ...]
    options: frozenset[str] = field(init=False)
    takes_graph: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _keyword_options(self.cls))
        parameters = inspect.signature(self.cls.__init__).parameters
        object.__setattr__(self, "takes_graph", "graph" in parameters)

    @property
    def default_steps(self) -> int:
        return self.cls.default_steps

    def build(self, model: nn.Module, graph: LabelGraph | None = None, **options: Any) -> Attack:
        """The attack with ``options``; ``graph`` goes only to an attack that takes one."""
        if self.takes_graph:
            options["graph"] = graph
        return self.cls(model, **options)


#: The registered attacks by name, in registration order.
REGISTRY: dict[str, AttackEntry] = {}


def register_attack(
    name: str,
    cls: type[Attack],
    *,
    step_cost: float,
    presets: tuple[str, ...] | None = None,
) -> AttackEntry:
    """Register ``cls`` as ``name``; returns its entry.

    Args:
        name: lower case letters, digits and inner hyphens; not registered yet.
        cls: an :class:`~mlattack.attacks.base.Attack` subclass.
        step_cost: a number > 0, the cost of one step relative to MLA-U's (measured; the runner
            only uses it to balance ranks).
        presets: the ``preset=`` values it takes; ``None``: every preset its constructor accepts
            (those of :mod:`mlattack.attacks.official` for an attack that takes ``preset=``).

    Raises:
        ValueError: a bad or taken name, a non-positive cost, an unknown preset.
        TypeError: ``cls`` is not an ``Attack`` subclass.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"attack name must be lower case letters, digits and inner hyphens, got {name!r}"
        )
    if name in REGISTRY:
        raise ValueError(f"attack {name!r} is registered already ({REGISTRY[name].cls.__name__})")
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise TypeError(f"cls must be an Attack subclass, got {cls!r}")
    cost = check_number(step_cost, "step_cost", minimum=0.0, exclusive_minimum=True)
    if not math.isfinite(cost):
        raise ValueError(f"step_cost must be finite, got {step_cost!r}")
    # The presets reproduce the authors' attacks: only a class that names which one takes them.
    takes_preset = "preset" in _keyword_options(cls) and getattr(cls, "official_kind", None)
    if presets is None:
        presets = tuple(PRESETS) if takes_preset else ()
    unknown = [p for p in presets if p not in PRESETS or not takes_preset]
    if unknown:
        raise ValueError(
            f"presets {unknown} are not presets {cls.__name__} takes "
            f"(known presets: {', '.join(PRESETS)})"
        )
    entry = AttackEntry(name=name, cls=cls, step_cost=cost, presets=tuple(presets))
    REGISTRY[name] = entry
    return entry


def attack_entry(name: str) -> AttackEntry:
    """The entry registered as ``name`` (case and surrounding spaces ignored)."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in REGISTRY:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def build_attack(
    name: str, model: nn.Module, graph: LabelGraph | None = None, **options: Any
) -> Attack:
    """Build the attack registered as ``name`` (case-insensitive, see :data:`REGISTRY`).

    ``graph`` is passed only to attacks whose constructor takes one; ``options`` go to the
    constructor (``eps``, ``steps``, ``tau``, ...).
    """
    return attack_entry(name).build(model, graph, **options)


class _AttackClasses(Mapping[str, type[Attack]]):
    """Name -> class, a live read-only view of :data:`REGISTRY`."""

    def __getitem__(self, name: str) -> type[Attack]:
        return REGISTRY[name].cls

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return repr({name: entry.cls.__name__ for name, entry in REGISTRY.items()})


#: The registered attack classes by name (a view of :data:`REGISTRY`).
ATTACKS: Mapping[str, type[Attack]] = _AttackClasses()
