"""Experiment configuration: a YAML file validated into :class:`ExperimentConfig`.

Every section forbids unknown keys and uses strict types (no ``"1"`` for 1, no ``true`` for 1.0, no
``1.5`` for an int), so a typo fails loudly with the key and the file named instead of being
silently ignored or coerced. The YAML loader is ``yaml.SafeLoader`` refusing duplicate keys and
aliases (the latter before anything is expanded: no "billion laughs"). The canonical JSON of a config (sorted keys, defaults filled in) and its hash
identify a run: the results store refuses to mix records from two different configs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from mlattack._validation import check_label_name

MAX_SEED = 2**63 - 1
MAX_IMAGE_SIZE = 8192  # pixels per side of a dataset's images
MAX_NESTING = 32  # levels of mappings / lists in a config
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def _check_label(value: str | None) -> str | None:
    """A model's or attack's ``label``: stored as text in every result row (and read back by every
    resume), so valid Unicode of bounded length."""
    return None if value is None else check_label_name(value, "label")


# An L-inf budget on images in [0, 1]: above 1 it no longer bounds anything.
Budget = Annotated[float, Field(gt=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSpec(_Section):
    """Which model to attack.

    Exactly one of: ``checkpoint`` (a file written by ``mlattack.models.save`` / ``mlattack train``),
    ``name: imagenet-hierarchy`` (the offline ImageNet-WordNet model; ``options`` e.g. ``label_set``),
    or another ``name`` from ``mlattack.models.build_model`` with its ``options``.
    """

    name: str | None = None
    checkpoint: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # how tables name this model; defaults to name or checkpoint stem

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of 'name' or 'checkpoint'")
        if self.checkpoint is not None and self.options:
            raise ValueError("'options' go with 'name', not with 'checkpoint'")
        return self

    @field_validator("label")
    @classmethod
    def _valid_label(cls, value: str | None) -> str | None:
        return _check_label(value)

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        if self.checkpoint is not None:
            return Path(self.checkpoint).stem
        assert self.name is not None
        return self.name


class DatasetSpec(_Section):
    """A dataset from ``mlattack.data.build_dataset(name, **options)``, or ``sample-photos``.

    The options most datasets share are checked here, so that they are named before anything is
    built: ``seed`` an int in [0, 2**63), ``size`` an int in [8, 8192], ``n`` an int >= 1, ``split``
    a string. The dataset itself checks the rest.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _shared_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        bounds = {"seed": (0, MAX_SEED), "size": (8, MAX_IMAGE_SIZE), "n": (1, None)}
        for key, (low, high) in bounds.items():
            if key in value:
                _check_bounded_int(value[key], f"dataset option '{key}'", low, high)
        if "split" in value and not isinstance(value["split"], str):
            raise ValueError(f"dataset option 'split' must be a string, got {value['split']!r}")
        return value


def attack_display_name(entry: dict[str, Any]) -> str:
    """The name results carry for a config's attack entry (as stored in a run's config): its
    label, or its name with the stages it asks for (``mla-u on psi + repair``)."""
    if entry.get("label"):
        return str(entry["label"])
    on_psi = " on psi" if entry.get("flip_set", "own") == "consistent" else ""
    extra = entry.get("repair_extra_steps", 0)
    repair = (
        (f" + repair (+{extra} steps)" if extra else " + repair") if entry.get("repair") else ""
    )
    return str(entry["name"]) + on_psi + repair


class AttackSpec(_Section):
    """One attack: a name of the attack registry (``mla-u``, ``mla-c``, ``gmla``, ``ml-dp``,
    ``mla-lp``, and any registered since: :mod:`mlattack.attacks.registry`) + options.

    ``flip_set: consistent`` attacks the consistent target set Ψ of Ω instead of the attack's own
    flip set ("MLA-U on Ψ"); ``repair: true`` follows the attack with the repair stage
    (:class:`~mlattack.attacks.stages.Repair`, GMLA's collateral-flip repair): together, the
    control "MLA-U on Ψ + repair". ``repair_extra_steps: k`` (with ``repair: true``) gives that
    repair ``k`` steps per image beyond the attack's unused ones (``Repair(extra_steps=k)``). GMLA
    attacks Ψ and repairs by itself (``options.repair``); it takes ``repair: true`` only with
    ``options.repair: false``, to run its search followed by a repair with extra steps.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # distinguishes two entries of the same attack (e.g. GMLA modes)
    flip_set: Literal["own", "consistent"] = "own"
    repair: bool = False
    repair_extra_steps: int = Field(default=0, ge=0)

    @model_serializer(mode="wrap")
    def _without_stage_defaults(self, handler: Any) -> Any:
        """The stage keys only when set: configs written before them keep their hash."""
        data = handler(self)
        if isinstance(data, dict):
            if data.get("flip_set") == "own":
                data.pop("flip_set")
            if data.get("repair") is False:
                data.pop("repair")
            if data.get("repair_extra_steps") == 0:
                data.pop("repair_extra_steps")
        return data

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from mlattack.attacks.registry import REGISTRY

        if value.lower() not in REGISTRY:
            raise ValueError(f"unknown attack {value!r}; choose from {', '.join(REGISTRY)}")
        return value.lower()

    @field_validator("options")
    @classmethod
    def _no_runner_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted({"eps", "graph", "model", "on_invalid"} & set(value))
        if clash:
            raise ValueError(
                f"options {clash} are set by the runner (use the top-level 'eps' list)"
            )
        return value

    @model_validator(mode="after")
    def _known_preset(self) -> AttackSpec:
        """``options.preset`` is checked here; every other option by the attack's constructor,
        which the runner calls once per attack before any work, naming the attack's config key."""
        if "preset" not in self.options or self.options["preset"] is None:
            return self
        from mlattack.attacks.official import PRESETS
        from mlattack.attacks.registry import REGISTRY

        preset = self.options["preset"]
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"options.preset must be one of {list(PRESETS)}, got {preset!r}")
        if preset not in REGISTRY[self.name].presets:
            takers = [name for name, entry in REGISTRY.items() if preset in entry.presets]
            raise ValueError(
                f"options.preset is for {', '.join(takers)}; {self.name} has no presets"
            )
        return self

    @model_validator(mode="after")
    def _stages_fit(self) -> AttackSpec:
        if self.repair_extra_steps and not self.repair:
            raise ValueError("repair_extra_steps needs repair: true (they are the repair's steps)")
        if self.name != "gmla":
            return self
        if self.flip_set != "own":
            raise ValueError("flip_set is for the other attacks: gmla attacks Ψ by itself")
        if self.repair and self.options.get("repair", True) is not False:
            raise ValueError(
                "repair is for the other attacks: gmla repairs by itself (options.repair); "
                "repair: true on gmla needs options.repair: false (its search, then this repair)"
            )
        return self

    @field_validator("label")
    @classmethod
    def _valid_label(cls, value: str | None) -> str | None:
        return _check_label(value)

    @property
    def display_name(self) -> str:
        """The label, or the name with the stages: ``mla-u on psi + repair``."""
        return attack_display_name(self.model_dump(mode="json"))


#: The most target sets one plan may hold (every size together): more is refused, naming the key.
MAX_TARGET_SETS = 20_000


class TargetSetSpec(_Section):
    """How target sets Ω are drawn.

    ``mode``:
      * ``combinations``: every subset of size k of ``labels`` (all labels when omitted), at most
        ``max_sets`` per size (the first ones in lexicographic order);
      * ``random``: ``draws`` distinct random subsets of size k of the candidate labels;
      * ``openimages``: the paper's OpenImages rule: ``ceil(k * leaf_fraction)`` labels among the
        graph's leaves and the rest among the labels outside the graph, ``draws`` sets per size;
      * ``leaves``: up to ``draws`` distinct sets of k graph leaves per size, each drawn among the
        leaves of one scanned image (clean prediction and ground truth; with
        ``images.require_consistent``, an image whose whole clean prediction is consistent), so
        that every set has at least one eligible image.
    With ``only_present`` (default), candidates are labels that are present (clean prediction and
    ground truth) in at least one scanned image, so few sets end up with no image.

    A plan holds at most :data:`MAX_TARGET_SETS` target sets over all sizes: ``draws`` above it is
    refused when the config is read, and a larger plan (e.g. every combination of 8 of 44 labels)
    is refused, naming the key, before any set is built.
    """

    sizes: list[int] = Field(default_factory=lambda: [1])
    mode: Literal["combinations", "random", "openimages", "leaves"] = "random"
    labels: list[str] | None = None
    draws: int = Field(default=20, ge=1, le=MAX_TARGET_SETS)
    max_sets: int | None = Field(default=None, ge=1)
    leaf_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    only_present: bool = True

    @field_validator("sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one target-set size")
        if any(k < 1 for k in value):
            raise ValueError(f"target-set sizes must be >= 1, got {value}")
        return sorted(set(value))


class ImageSpec(_Section):
    """Which images are attacked for each target set."""

    per_target_set: int = Field(default=50, ge=1)
    max_images: int | None = Field(default=None, ge=1)  # images scanned from the dataset
    require_consistent: bool = False  # keep only clean predictions consistent around Ω


class TransferSpec(_Section):
    """Fig. 7: perturbations found on each source model, scaled to ``eps``, tried on every model."""

    models: list[ModelSpec] = Field(min_length=2)
    attack: AttackSpec
    eps: Budget

    @model_validator(mode="after")
    def _distinct_names(self) -> TransferSpec:
        names = [m.display_name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"transfer models need distinct names (set 'label'), got {names}")
        return self


class ExperimentConfig(_Section):
    """A whole experiment; see ``configs/*.yaml`` for commented examples."""

    name: str = "experiment"  # also the default run folder runs/<name>: a plain file name
    model: ModelSpec
    dataset: DatasetSpec
    graph: str = "model"  # "model" | "dataset" | "builtin:NAME" | path to a LabelGraph JSON
    attacks: list[AttackSpec] = Field(min_length=1)
    eps: list[Budget] = Field(min_length=1)
    target_sets: TargetSetSpec = Field(default_factory=TargetSetSpec)
    images: ImageSpec = Field(default_factory=ImageSpec)
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N | mps
    batch_size: int = Field(default=16, ge=1)
    gradient_correlation: bool = False
    examples: int = Field(default=4, ge=0)  # images per target set kept as PNG/NPZ for Fig. 9-10
    example_target_sets: int = Field(default=2, ge=0)
    transfer: TransferSpec | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"name {value!r} must be a plain folder name (letters, digits, '.', '_', '-'; not "
                "starting with '.'; at most 128 characters): runs go to runs/<name>"
            )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("eps")
    @classmethod
    def _eps_distinct(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError(f"eps values repeat: {value}")
        return value

    @model_validator(mode="after")
    def _distinct_attacks(self) -> ExperimentConfig:
        names = [a.display_name for a in self.attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"attacks need distinct names (set 'label'), got {names}")
        return self

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate a YAML config; errors name the file and the offending key."""
        return cls.from_dict(load_yaml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> ExperimentConfig:
        """Validate ``data`` (numpy scalars count as the Python numbers they hold)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a config must be a mapping, got {type(data).__name__}")
        plain = _plain(data, source, "", 0)
        try:
            return cls.model_validate(plain)
        except ValidationError as exc:
            problems = _describe(exc)
            layout = " " if len(problems) == 1 else "\n  "  # one problem, one line
            raise ValueError(f"{source}: invalid config:{layout}{layout.join(problems)}") from None

    def with_device(self, device: str, *, source: str = "--device") -> ExperimentConfig:
        """This config on another ``device``, validated like the config's own key."""
        return type(self).from_dict({**self.model_dump(), "device": device}, source=source)

    # -- identity ------------------------------------------------------------------------------
    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """Identity of the experiment: the canonical JSON without where it runs (``device``)."""
        identity = self.model_dump(mode="json", exclude={"device"})
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


MAX_INT_DIGITS = 100  # the longest integer a config (YAML or JSON) may write


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (while composing: nothing is ever expanded) and
    duplicate mapping keys (which ``safe_load`` resolves silently to the last value)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in configs",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class names it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                    key_node.start_mark,
                )  # fmt: skip
        return super().construct_mapping(node, deep=deep)

    def construct_bounded_int(self, node: Any) -> int:
        digits = sum(ch.isdigit() for ch in str(self.construct_scalar(node)))
        if digits > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {digits} digits (at most {MAX_INT_DIGITS})",
                node.start_mark,
            )  # fmt: skip
        return int(super().construct_yaml_int(node))


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_bounded_int)


def bounded_int(text: str) -> int:
    """``int(text)`` for ``json.loads(parse_int=...)``: more than :data:`MAX_INT_DIGITS` digits is
    a ``ValueError`` saying so (Python's own limit, 4,300, names a setting instead)."""
    digits = sum(ch.isdigit() for ch in text)
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def load_yaml(path: str | Path) -> Any:
    """A YAML file's data, read with :class:`_ConfigLoader`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        try:
            return yaml.load(handle, Loader=_ConfigLoader)  # noqa: S506 -- a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = exc.problem or exc.context or "unreadable"
            raise ValueError(f"{path}: not valid YAML{where}: {problem}") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        except RecursionError:
            raise ValueError(f"{path}: not valid YAML: nested too deeply") from None


def _plain(value: Any, source: str, key: str, depth: int) -> Any:
    """``value`` with numpy scalars as Python numbers; nesting deeper than MAX_NESTING, and text
    that is not valid Unicode (a lone surrogate), refused naming the key."""
    if depth > MAX_NESTING:
        raise ValueError(f"{source}: key '{key}' nests more than {MAX_NESTING} levels deep")
    if isinstance(value, dict):
        return {
            _plain(k, source, key or "<top level>", depth): _plain(
                v, source, f"{key}.{k}" if key else str(k), depth + 1
            )
            for k, v in value.items()
        }
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: no file or store can hold it
            raise ValueError(
                f"{source}: key '{key.encode('utf-8', 'backslashreplace').decode()}' holds text "
                f"that is not valid Unicode (a lone surrogate at position {exc.start})"
            ) from None
    if isinstance(value, list | tuple):
        return [_plain(v, source, f"{key}.{i}", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()  # np.bool_ -> bool (still refused where a number is due)
    return value


def _check_bounded_int(value: Any, what: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{what} must be {allowed}, got {value!r}")


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "<top level>"
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif error["type"].endswith("_type") or error["type"] in _BOUND_ERRORS:
            shown = repr(error.get("input"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            lines.append(f"key '{key}': {error['msg']}, got {shown}")
        else:
            lines.append(f"key '{key}': {error['msg']}")
    return lines


# pydantic error types whose message does not show the refused value
_BOUND_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "literal_error",
}
