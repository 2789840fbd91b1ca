"""Experiment configuration: a YAML file validated into :class:`ExperimentConfig`.

Every section forbids unknown keys, so a typo fails loudly with the key and the file named instead of
being silently ignored. The canonical JSON of a config (sorted keys, defaults filled in) and its hash
identify a run: the results store refuses to mix records from two different configs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ATTACK_NAMES = ("mla-u", "mla-c", "gmla", "ml-dp", "mla-lp")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        if self.checkpoint is not None:
            return Path(self.checkpoint).stem
        assert self.name is not None
        return self.name


class DatasetSpec(_Section):
    """A dataset from ``mlattack.data.build_dataset(name, **options)``, or ``sample-photos``."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class AttackSpec(_Section):
    """One attack: a registry name (``mla-u``, ``mla-c``, ``gmla``, ``ml-dp``, ``mla-lp``) + options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None  # distinguishes two entries of the same attack (e.g. GMLA modes)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value.lower() not in ATTACK_NAMES:
            raise ValueError(f"unknown attack {value!r}; choose from {', '.join(ATTACK_NAMES)}")
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

    @property
    def display_name(self) -> str:
        return self.label or self.name


class TargetSetSpec(_Section):
    """How target sets Ω are drawn.

    ``mode``:
      * ``combinations``: every subset of size k of ``labels`` (all labels when omitted), at most
        ``max_sets`` per size (the first ones in lexicographic order);
      * ``random``: ``draws`` distinct random subsets of size k of the candidate labels;
      * ``openimages``: the paper's OpenImages rule: ``ceil(k * leaf_fraction)`` labels among the
        graph's leaves and the rest among the labels outside the graph, ``draws`` sets per size.
    With ``only_present`` (default), candidates are labels that are present (clean prediction and
    ground truth) in at least one scanned image, so few sets end up with no image.
    """

    sizes: list[int] = Field(default_factory=lambda: [1])
    mode: Literal["combinations", "random", "openimages"] = "random"
    labels: list[str] | None = None
    draws: int = Field(default=20, ge=1)
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
    eps: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _distinct_names(self) -> TransferSpec:
        names = [m.display_name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"transfer models need distinct names (set 'label'), got {names}")
        return self


class ExperimentConfig(_Section):
    """A whole experiment; see ``configs/*.yaml`` for commented examples."""

    name: str = "experiment"
    model: ModelSpec
    dataset: DatasetSpec
    graph: str = "model"  # "model" | "dataset" | "builtin:NAME" | path to a LabelGraph JSON
    attacks: list[AttackSpec] = Field(min_length=1)
    eps: list[float] = Field(min_length=1)
    target_sets: TargetSetSpec = Field(default_factory=TargetSetSpec)
    images: ImageSpec = Field(default_factory=ImageSpec)
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    seed: int = 0
    device: str = "cpu"
    batch_size: int = Field(default=16, ge=1)
    gradient_correlation: bool = False
    examples: int = Field(default=4, ge=0)  # images per target set kept as PNG/NPZ for Fig. 9-10
    example_target_sets: int = Field(default=2, ge=0)
    transfer: TransferSpec | None = None

    @field_validator("eps")
    @classmethod
    def _eps_positive(cls, value: list[float]) -> list[float]:
        if any(e < 0 for e in value):
            raise ValueError(f"eps values must be >= 0, got {value}")
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
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with path.open(encoding="utf-8") as handle:
            try:
                data = yaml.safe_load(handle)
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> ExperimentConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a config must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{source}: invalid config:\n{_describe(exc)}") from None

    # -- identity ------------------------------------------------------------------------------
    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """Identity of the experiment: the canonical JSON without where it runs (``device``)."""
        identity = self.model_dump(mode="json", exclude={"device"})
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "<top level>"
        if error["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        else:
            lines.append(f"  key '{key}': {error['msg']}")
    return "\n".join(lines)
