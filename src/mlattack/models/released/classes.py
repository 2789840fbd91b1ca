"""Which label each output of a released checkpoint is: names from the file's ``idx_to_class`` or
the caller, MIDs for OpenImages (see :mod:`mlattack.models.classlist`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlattack.models.classlist import check_mids, checkpoint_mids, names_for_mids, read_mid_list


def output_labels(
    path: str | Path,
    head_key: str,
    num_classes: int,
    extras: Mapping[str, Any],
    *,
    label_names: Sequence[str] | None,
    mids: Sequence[str] | str | Path | None,
    class_descriptions: str | Path | Mapping[str, str] | None,
) -> tuple[list[str] | None, tuple[str, ...] | None]:
    """``(label names, MIDs)`` of the outputs.

    By MID when one is known (the file's own class list, or ``mids``: a sequence or a file, which
    must agree with the file's); the names are then the display names in ``class_descriptions``,
    or the MIDs. Otherwise ``label_names``, else the file's ``idx_to_class`` display names (which
    must be distinct). ``label_names`` always wins for the names.
    """
    label_mids = output_mids(extras, num_classes, path, mids)
    if label_names is None and label_mids is not None:
        return list(names_for_mids(label_mids, read_descriptions(class_descriptions))), label_mids
    index_to_class = extras.get("idx_to_class")
    if label_mids is not None:
        index_to_class = None  # MIDs named the outputs; the stored display names are not used
    names = label_names_for(path, head_key, num_classes, label_names, index_to_class)
    return names, label_mids


def label_names_for(
    path: str | Path,
    head_key: str,
    num_classes: int,
    label_names: Sequence[str] | None,
    index_to_class: Any,
) -> list[str] | None:
    """The output names: ``label_names`` if given, else the file's ``idx_to_class`` (distinct
    names, 0..C-1), else ``None``; each must name exactly ``num_classes`` outputs."""
    if label_names is not None:
        if isinstance(label_names, str):
            raise TypeError("label_names must be a sequence of strings, not one string")
        if len(label_names) != num_classes:
            raise ValueError(
                f"{path}: {len(label_names)} label names given but {head_key!r} has "
                f"{num_classes} outputs"
            )
        return [str(name) for name in label_names]
    if index_to_class is None:
        return None
    if not isinstance(index_to_class, Mapping):
        raise ValueError(f"{path}: 'idx_to_class' is a {type(index_to_class).__name__}, not a dict")
    if len(index_to_class) != num_classes:
        raise ValueError(
            f"{path}: 'idx_to_class' names {len(index_to_class)} classes but {head_key!r} has "
            f"{num_classes} outputs"
        )
    try:
        order = sorted(index_to_class, key=int)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'idx_to_class' must be keyed by output index") from None
    if [int(index) for index in order] != list(range(num_classes)):
        raise ValueError(
            f"{path}: 'idx_to_class' keys are not the output indices 0..{num_classes - 1}"
        )
    names = [str(index_to_class[index]) for index in order]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"{path}: 'idx_to_class' names outputs {seen[name]} and {index} both {name!r}; "
                "give label_names (or, for OpenImages, the outputs' MIDs: mids=...)"
            )
        seen[name] = index
    return names


def output_mids(
    data: Mapping[str, Any],
    num_classes: int,
    path: str | Path,
    mids: Sequence[str] | str | Path | None,
) -> tuple[str, ...] | None:
    """The MID of each output: the user's list and/or the checkpoint's own, which must agree."""
    own = checkpoint_mids(data, num_classes, source=str(path))
    if mids is None:
        return own
    if isinstance(mids, (str, Path)):
        given = check_mids(read_mid_list(mids), num_classes, source=f"mids file {str(mids)!r}")
    else:
        given = check_mids(mids, num_classes, source="mids")
    if own is not None and own != given:
        index = next(i for i, (a, b) in enumerate(zip(given, own, strict=True)) if a != b)
        raise ValueError(
            f"mids: output {index} is {given[index]!r} but {path}'s own class list says "
            f"{own[index]!r}; leave 'mids' out to use the checkpoint's"
        )
    return given


def read_descriptions(source: str | Path | Mapping[str, str] | None) -> Mapping[str, str] | None:
    if source is None or isinstance(source, Mapping):
        return source
    from mlattack.graph_sources.openimages import read_class_descriptions

    return read_class_descriptions(source)
