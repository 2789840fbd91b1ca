"""Model families by name: ``build_model`` for users, ``model_from_config`` for checkpoints.

A family registers a *builder* (called with keyword arguments) and, optionally, a *from_config*
hook that rebuilds an untrained skeleton from ``model.config()`` (and the saved label graph) for the
checkpoint's state dict to fill.  Without a hook, ``builder(**config_without_name)`` is used, so a
family whose ``config()`` lists its constructor's arguments needs nothing more:

    register_model("imagenet-hierarchy", ImageNetHierarchyModel)

Families in optional modules are imported the first time their name is asked for.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

ModelBuilder = Callable[..., nn.Module]
ConfigLoader = Callable[[Mapping[str, Any], "LabelGraph | None"], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: ModelBuilder
    from_config: ConfigLoader | None = None


_REGISTRY: dict[str, ModelEntry] = {}

# name -> (module, attribute): families that live in modules with heavier imports.  Importing the
# module may register the family itself; otherwise the attribute is registered as its builder.
_LAZY_FAMILIES: dict[str, tuple[str, str]] = {
    "imagenet-hierarchy": ("mlattack.models.imagenet", "ImageNetHierarchyModel"),
}


def register_model(
    name: str,
    builder: ModelBuilder,
    *,
    from_config: ConfigLoader | None = None,
    overwrite: bool = False,
) -> None:
    """Make ``build_model(name, ...)`` and ``load`` of checkpoints saved under ``name`` work.

    Args:
        name: the family name, as in ``model.config()["name"]``.
        builder: called with ``build_model``'s keyword arguments; returns the model.
        from_config: ``(config, graph) -> model`` rebuilding an untrained skeleton from
            ``model.config()``; default ``builder(**config_without_name)`` (plus ``graph=`` when the
            builder takes it).
        overwrite: replace an existing registration instead of raising.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder for model {name!r} must be callable, got {builder!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and not overwrite and existing.builder is not builder:
        raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = ModelEntry(name, builder, from_config)


def available_models() -> list[str]:
    """Names ``build_model`` accepts (some may need optional packages)."""
    return sorted(set(_REGISTRY) | set(_LAZY_FAMILIES))


def get_model_entry(name: str) -> ModelEntry:
    """The registration of ``name``, importing its module first if it is a lazy family."""
    if name not in _REGISTRY and name in _LAZY_FAMILIES:
        module_name, attribute = _LAZY_FAMILIES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ImportError(
                f"model {name!r} lives in {module_name}, which could not be imported: {error}"
            ) from error
        if name not in _REGISTRY:
            register_model(name, getattr(module, attribute))
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available_models())}")
    return entry


def _accepted_keywords(builder: ModelBuilder) -> set[str] | None:
    """Keyword names ``builder`` takes, or ``None`` when it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def build_model(
    name: str,
    *,
    num_labels: int | None = None,
    label_names: Any = None,
    graph: LabelGraph | None = None,
    backbone: str | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model family by name.

    Args:
        name: ``"small-cnn"``, ``"ml-gcn"``, ``"asl"``, ``"ml-decoder"``, ``"imagenet-hierarchy"``
            or any name given to :func:`register_model`.
        num_labels: C; may be left out when ``label_names`` or ``graph`` fixes it.
        label_names: output labels in logit order (default: the graph's, else ``label_<i>``).
        graph: the :class:`~mlattack.graph.LabelGraph` over the outputs (same order).
        backbone: feature extractor name or spec (families' default: ``"small-cnn"``).
        **kwargs: family options (see each family's class), e.g. ``input_size``.

    The model's outputs are checked against ``num_labels`` / ``label_names`` whichever family
    built it.
    """
    entry = get_model_entry(name)
    accepted = _accepted_keywords(entry.builder)
    common = {
        "num_labels": num_labels,
        "label_names": label_names,
        "graph": graph,
        "backbone": backbone,
    }
    arguments = dict(kwargs)
    for key, value in common.items():
        if value is None:
            continue
        if accepted is None or key in accepted:
            arguments[key] = value
        elif key in ("graph", "backbone"):
            raise ValueError(f"model {name!r} does not take {key!r}")
    model = entry.builder(**arguments)
    outputs = tuple(getattr(model, "label_names", ()))
    if num_labels is not None and len(outputs) != num_labels:
        raise ValueError(f"model {name!r} has {len(outputs)} outputs but num_labels={num_labels}")
    if label_names is not None and outputs != tuple(label_names):
        raise ValueError(f"model {name!r} outputs labels {list(outputs)}, not {list(label_names)}")
    return model


def model_from_config(config: Mapping[str, Any], graph: LabelGraph | None = None) -> nn.Module:
    """Rebuild an untrained model from ``model.config()`` (and its label graph, if any)."""
    name = config.get("name")
    if not isinstance(name, str):
        raise ValueError(f"model config has no 'name': {dict(config)!r}")
    entry = get_model_entry(name)
    if entry.from_config is not None:
        return entry.from_config(config, graph)
    arguments = {key: value for key, value in config.items() if key != "name"}
    accepted = _accepted_keywords(entry.builder)
    if graph is not None and (accepted is None or "graph" in accepted):
        arguments["graph"] = graph
    return entry.builder(**arguments)
