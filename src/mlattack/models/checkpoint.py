"""Self-describing checkpoints: weights plus everything needed to rebuild the model.

File layout (a ``torch.save`` dict, read back with ``weights_only=True``)::

    {"format": "mlattack.checkpoint", "version": 1,
     "metadata_json": "<JSON text>",      # see below
     "state_dict": {name: tensor, ...}}

The metadata JSON holds ``model`` (``model.config()``, dispatched on its ``"name"``),
``label_names``, ``graph`` (``LabelGraph.to_json()`` or null), ``input_size``, ``preprocessing``,
``extra`` (the caller's JSON-able notes, e.g. training history) and ``mlattack_version``.  Keeping
the metadata as JSON text means nothing but tensors and plain strings is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mlattack.models.registry import model_from_config

CHECKPOINT_FORMAT = "mlattack.checkpoint"
CHECKPOINT_VERSION = 1


def read_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as error:
        # Bytes that are not a checkpoint (a text file, a truncated archive, a hostile pickle) fail
        # anywhere inside torch's reader, with IndexError, KeyError, OSError, UnpicklingError...
        # that name no file: every such failure is the same "not a checkpoint" for the caller.
        reason = str(error) or type(error).__name__
        raise ValueError(
            f"{path}: cannot be read as a weights-only torch checkpoint (truncated, damaged or "
            f"not a checkpoint: {reason})"
        ) from error


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str | Path,
    *,
    tolerated_missing: Collection[str] = (),
) -> None:
    """``model.load_state_dict(state_dict)``; a mismatch raises ValueError naming ``source``.

    Missing keys ending in one of ``tolerated_missing`` are allowed. Weights with a NaN or infinite
    entry, or a BatchNorm ``running_var`` below zero, are refused naming the tensor: such a model
    gives NaN logits, and every target set would end empty with no word about the model.
    """
    for name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            continue
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{source}: weight {name!r} holds NaN or infinite values")
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise ValueError(
                f"{source}: BatchNorm variance {name!r} has negative entries (min "
                f"{tensor.min().item():.4g})"
            )
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{source}: weights do not fit the model: {error}") from error
    missing = [k for k in result.missing_keys if not k.endswith(tuple(tolerated_missing))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source}: weights do not fit the model: missing keys {missing[:5]}, "
            f"unexpected keys {list(result.unexpected_keys)[:5]}"
        )


def checkpoint_metadata(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata :func:`save` writes for ``model`` (JSON-able)."""
    from mlattack import __version__

    config = getattr(model, "config", None)
    if not callable(config):
        raise TypeError(
            f"{type(model).__name__} has no config(); only mlattack models (build_model) can be saved"
        )
    model_config = config()
    if not isinstance(model_config, dict) or not isinstance(model_config.get("name"), str):
        raise TypeError(f"{type(model).__name__}.config() must return a dict with a 'name'")
    graph = getattr(model, "graph", None)
    label_names = list(getattr(model, "label_names", ()))
    input_size = getattr(model, "input_size", None)
    preprocessing = getattr(model, "preprocessing", None) or {"input_size": input_size}
    return {
        "model": model_config,
        "label_names": label_names,
        "graph": None if graph is None else graph.to_json(),
        "input_size": input_size,
        "preprocessing": preprocessing,
        "extra": dict(extra) if extra is not None else {},
        "mlattack_version": __version__,
    }


def save(model: nn.Module, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (atomically); returns the path.

    ``extra`` is any JSON-able mapping stored beside the metadata (``read_metadata(path)["extra"]``).
    """
    path = Path(path)
    metadata = checkpoint_metadata(model, extra)
    try:
        metadata_json = json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"checkpoint metadata for {path} is not JSON-serialisable (check model.config() and "
            f"extra): {error}"
        ) from error
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "metadata_json": metadata_json,
        "state_dict": model.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _read_payload(path: str | Path, map_location: str | torch.device) -> tuple[dict[str, Any], Any]:
    data = read_checkpoint_file(path, map_location)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: not an mlattack checkpoint (no metadata; a bare state_dict?). Build the model "
            "with build_model(...) and call load_state_dict, or re-save it with mlattack.models.save"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {version!r} is newer than this mlattack reads "
            f"({CHECKPOINT_VERSION}); upgrade mlattack"
        )
    try:
        metadata = json.loads(data["metadata_json"])
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{path}: checkpoint metadata is missing or corrupt ({error})") from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("model"), dict):
        raise ValueError(f"{path}: checkpoint metadata has no 'model' config")
    return metadata, data.get("state_dict")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint written by :func:`save`, without building the model."""
    metadata, _ = _read_payload(path, "cpu")
    return metadata


def load(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    num_labels: int | None = None,
) -> nn.Module:
    """Rebuild a model saved by :func:`save` from the checkpoint alone, in eval mode.

    Args:
        path: the checkpoint file.
        map_location: where the tensors go (as in ``torch.load``).
        num_labels: when given, the checkpoint must have this many outputs.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an mlattack checkpoint, unknown model name, weights that do not fit, or a
            label count other than ``num_labels`` -- each naming the file.
    """
    metadata, state_dict = _read_payload(path, map_location)
    label_names = metadata.get("label_names")
    if num_labels is not None and isinstance(label_names, list) and len(label_names) != num_labels:
        raise ValueError(
            f"{path}: the checkpoint has {len(label_names)} labels but {num_labels} were asked for"
        )
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: checkpoint has no state_dict")
    graph = None
    if metadata.get("graph") is not None:
        from mlattack.graph import LabelGraph

        try:
            graph = LabelGraph.from_json(metadata["graph"])
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: the checkpoint's label graph is invalid: {error}") from error
    try:
        model = model_from_config(metadata["model"], graph)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path}: cannot rebuild the model: {error}") from error
    load_weights(model, state_dict, path)
    if graph is not None and getattr(model, "graph", None) is None:
        setattr(model, "graph", graph)  # noqa: B010 -- nn.Module's typed __setattr__
    rebuilt_names = list(getattr(model, "label_names", ()))
    if isinstance(label_names, list) and rebuilt_names != label_names:
        raise ValueError(f"{path}: rebuilt model's labels differ from the checkpoint's label_names")
    return model.to(map_location).eval()
