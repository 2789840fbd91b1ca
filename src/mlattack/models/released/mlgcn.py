"""Loading the released ML-GCN checkpoints (megvii-research/ML-GCN) into :class:`MLGCN`, exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mlattack.models.adjacency import official_propagation
from mlattack.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from mlattack.models.mlgcn import MLGCN
from mlattack.models.released.classes import label_names_for
from mlattack.models.released.common import (
    build_on_meta,
    load_released_weights,
    read_released_state_dict,
)
from mlattack.models.released.pickles import read_numpy_pickle
from mlattack.models.resnet import ResNetBackbone, resnet_spec_from_state_dict

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

# The official GCNResnet pools with a hard-coded MaxPool2d(14, 14): global only at 448 px.
MLGCN_INPUT_SIZE = 448
MLGCN_NEGATIVE_SLOPE = 0.2
# voc.py's object_categories: the output order of ML-GCN's VOC model.
MLGCN_VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def map_mlgcn_state_dict(
    state_dict: Mapping[str, Tensor], source: str | Path = "state dict"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Official ML-GCN tensors -> :class:`MLGCN`'s: ``features.*`` -> ``backbone.features.*``
    (torchvision's ResNet layout, :mod:`mlattack.models.resnet`), ``gc1.weight``/``gc2.weight``
    ([in, out]) -> ``gcn1.weight``/``gcn2.weight`` transposed ([out, in], ``nn.Linear``'s),
    ``A`` -> ``adjacency = gen_adj(A)`` (the matrix the official forward multiplies by).

    The torch 0.3.1 layout has no BatchNorm ``num_batches_tracked``: when every one is absent
    they are set to 0, BatchNorm's own rule for such state dicts (the counter plays no part in
    the forward). Returns ``(mapped, {our name: official name})``; ValueError on an unknown key.
    """
    mapped: dict[str, Tensor] = {}
    official: dict[str, str] = {}
    for key, value in state_dict.items():
        if key.startswith("features."):
            name = "backbone." + key
        elif key in ("gc1.weight", "gc2.weight"):
            name = key.replace("gc", "gcn")
            value = value.t().contiguous()
        elif key == "A":
            name = "adjacency"
            value = official_propagation(value)
        else:
            raise ValueError(
                f"{source}: unexpected key {key!r}: an ML-GCN checkpoint holds 'A', 'features.*' "
                "(ResNet) and 'gc1.weight', 'gc2.weight' only"
            )
        mapped[name] = value
        official[name] = key
    if not any(key.endswith(".num_batches_tracked") for key in mapped):
        for key in [key for key in mapped if key.endswith(".running_var")]:
            mapped[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
    return mapped, official


def load_mlgcn_checkpoint(
    path: str | Path,
    *,
    word_vectors: str | Path,
    label_names: Sequence[str] | None = None,
    graph: LabelGraph | None = None,
    input_size: int = MLGCN_INPUT_SIZE,
) -> MLGCN:
    """An :class:`MLGCN` giving the official ML-GCN logits, from a released file.

    Reads ``{"epoch", "arch", "state_dict", "best_score"}`` (``save_checkpoint``'s) or a bare
    state dict (``weights_only=True``); float16 tensors are made float32.

    * **backbone**: ResNet in torchvision's layout read from ``features.*`` (ResNet-101 in the
      releases), without torchvision; ImageNet normalisation; global max pooling;
    * **graph convolutions**: ``gc1.weight``/``gc2.weight`` are ``[in, out]`` and are transposed;
      LeakyReLU 0.2 between them, no bias;
    * **adjacency**: the stored ``A`` (``gen_A``'s output) through the official ``gen_adj``:
      ``(A D)^T D``, ``D = diag(rowsum(A))^-1/2``. Using ``A`` directly, or without the
      transpose, gives another model (see :mod:`mlattack.models.adjacency`);
    * **word vectors**: the GloVe label embeddings are a forward argument of the official model,
      not in the checkpoint: ``word_vectors`` is the repository's ``*_glove_word2vec.pkl``
      (``[C, 300]``, rows in output order), read with a numpy-only unpickler
      (:func:`~mlattack.models.read_numpy_pickle`). Other embeddings (e.g. MiniLM) would give
      another model;
    * **input size**: 448 only (the official ``MaxPool2d(14, 14)`` is global only there);
    * **labels**: the files keep no class list: ``label_names`` or ``graph`` in output order
      (VOC: :data:`MLGCN_VOC_CLASSES`; COCO: the category names sorted alphabetically).

    Raises:
        ValueError: one line naming the file and the key: another family's file, a truncated
            file, a missing, unexpected or reshaped key, a class list or word-vector pickle that
            does not fit ``A`` / ``gc1.weight``, an input size other than 448.
    """
    if input_size != MLGCN_INPUT_SIZE:
        raise ValueError(
            f"{path}: input_size={input_size!r} is not supported: the official ML-GCN pools with "
            f"MaxPool2d(14, 14), a global pool only at {MLGCN_INPUT_SIZE} px"
        )
    state, _ = read_released_state_dict(path, "ml-gcn")
    return mlgcn_from_state_dict(
        state, path, word_vectors=word_vectors, label_names=label_names, graph=graph
    )


def mlgcn_from_state_dict(
    state: Mapping[str, Tensor],
    source: str | Path,
    *,
    word_vectors: str | Path,
    label_names: Sequence[str] | None = None,
    graph: LabelGraph | None = None,
) -> MLGCN:
    """:func:`load_mlgcn_checkpoint` on a state dict already read (official names, float32);
    ``source`` names it in errors."""
    path = source
    for key in ("A", "gc1.weight", "gc2.weight"):
        if key not in state:
            raise ValueError(f"{path}: key {key!r} is missing")
    a, gc1, gc2 = state["A"], state["gc1.weight"], state["gc2.weight"]
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{path}: key 'A' has shape {list(a.shape)}, not [C, C]")
    if gc1.ndim != 2 or gc2.ndim != 2 or gc1.shape[1] != gc2.shape[0]:
        raise ValueError(
            f"{path}: keys 'gc1.weight' {list(gc1.shape)} and 'gc2.weight' {list(gc2.shape)} "
            "are not [in, hidden] and [hidden, features]"
        )
    num_classes = int(a.shape[0])
    names = label_names_for(
        path, "A", num_classes, label_names if graph is None else list(graph.names), None
    )
    if names is None:
        raise ValueError(
            f"{path}: ML-GCN files keep no class list: give label_names (or a graph) for the "
            f"{num_classes} outputs of 'A', in output order"
        )
    embeddings = _word_vectors(word_vectors, num_classes, int(gc1.shape[0]), path)
    spec = resnet_spec_from_state_dict(state, str(path))
    backbone = build_on_meta(
        lambda: ResNetBackbone(spec["layers"], spec["width_per_group"], MLGCN_INPUT_SIZE)
    )
    if int(gc2.shape[1]) != backbone.out_channels:
        raise ValueError(
            f"{path}: key 'gc2.weight' gives {int(gc2.shape[1])} features per label but the "
            f"backbone has {backbone.out_channels}"
        )
    model = MLGCN(
        backbone,
        label_embeddings=embeddings,
        adjacency=torch.eye(num_classes),
        hidden_dim=int(gc1.shape[1]),
        negative_slope=MLGCN_NEGATIVE_SLOPE,
        adjacency_style="official",
        label_names=names,
        graph=graph,
        input_size=MLGCN_INPUT_SIZE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    mapped, official = map_mlgcn_state_dict(state, path)
    mapped["label_embeddings"] = embeddings
    official["label_embeddings"] = f"word vectors {word_vectors}"
    renamed = {"gcn1.weight": "gc1.weight", "gcn2.weight": "gc2.weight", "adjacency": "A"}

    def official_name(key: str) -> str:
        if key in official:
            return official[key]
        return renamed.get(key, key[len("backbone.") :] if key.startswith("backbone.") else key)

    load_released_weights(model, mapped, official_name, path)
    return model.eval()


def _word_vectors(source: str | Path, num_classes: int, width: int, path: str | Path) -> Tensor:
    values = read_numpy_pickle(source)
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.dtype.kind != "f":
        raise ValueError(
            f"{source}: not a float [C, d] array of word vectors (a {type(values).__name__})"
        )
    if values.shape[0] != num_classes:
        raise ValueError(
            f"{source}: {values.shape[0]} word vectors but {path} key 'A' has {num_classes} labels"
        )
    if values.shape[1] != width:
        raise ValueError(
            f"{source}: word vectors of width {values.shape[1]} but {path} key 'gc1.weight' takes "
            f"{width}"
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{source}: word vectors contain NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
