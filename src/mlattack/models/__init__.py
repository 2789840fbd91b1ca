"""Multi-label models: [B, 3, H, W] images in [0, 1] -> logits [B, C].

Families (``build_model(name, num_labels=..., backbone=...)``):

- ``"small-cnn"``: backbone + global average pooling + linear (fast baseline for tests/demos);
- ``"ml-gcn"``: ML-GCN (Chen et al. 2019), GCN-made label classifiers over label embeddings;
- ``"asl"``: ASL (Ridnik et al. 2021), TResNet + linear trained with :class:`AsymmetricLoss`;
- ``"ml-decoder"``: ML-Decoder (Ridnik et al. 2023) group-decoding head;
- ``"imagenet-hierarchy"``: a pretrained ImageNet classifier (EfficientNet-Lite0/1/2) read over a
  WordNet label graph (:class:`ImageNetHierarchyModel`, imported on first use). The real photos
  with labels that go with it are data: :class:`mlattack.data.PhotoDataset`.

Every model has ``label_names``, ``graph``, ``input_size`` and ``config()``; :func:`save` and
:func:`load` write and rebuild self-describing checkpoints.  ``timm``/``torchvision`` backbones are
imported only when asked for.

The released checkpoints of ASL, ML-Decoder and ML-GCN load exactly, with torch alone:
:func:`load_asl_checkpoint`, :func:`load_mldecoder_checkpoint`, :func:`load_mlgcn_checkpoint`
(:mod:`mlattack.models.released`, over the TResNet and ResNet written in
:mod:`mlattack.models.tresnet` and :mod:`mlattack.models.resnet`).
"""

from __future__ import annotations

import importlib
from typing import Any

from mlattack.models.asl import ASLModel, AsymmetricLoss
from mlattack.models.backbones import (
    Backbone,
    SmallCNNBackbone,
    TinyResNetBackbone,
    build_backbone,
)
from mlattack.models.base import MultiLabelModel
from mlattack.models.checkpoint import load, read_metadata, save
from mlattack.models.embeddings import embed_label_names, load_label_embeddings
from mlattack.models.mldecoder import MLDecoderHead, MLDecoderModel
from mlattack.models.mlgcn import MLGCN, cooccurrence_adjacency
from mlattack.models.registry import available_models, build_model, register_model
from mlattack.models.released import (
    load_asl_checkpoint,
    load_mldecoder_checkpoint,
    load_mlgcn_checkpoint,
    map_asl_state_dict,
    read_numpy_pickle,
)
from mlattack.models.resnet import ResNetBackbone
from mlattack.models.small import GlobalPoolClassifier
from mlattack.models.tresnet import TResNetBackbone

for _family in (GlobalPoolClassifier, MLGCN, ASLModel, MLDecoderModel):
    register_model(_family.name, _family.build, from_config=_family.from_config)

# Provided by mlattack.models.imagenet, whose dependencies are heavier: imported on first access.
_LAZY_ATTRIBUTES = {
    "ImageNetHierarchyModel": "mlattack.models.imagenet",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_ATTRIBUTES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'mlattack.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


__all__ = [
    "ASLModel",
    "AsymmetricLoss",
    "Backbone",
    "GlobalPoolClassifier",
    "ImageNetHierarchyModel",
    "MLDecoderHead",
    "MLDecoderModel",
    "MLGCN",
    "MultiLabelModel",
    "ResNetBackbone",
    "SmallCNNBackbone",
    "TResNetBackbone",
    "TinyResNetBackbone",
    "available_models",
    "build_backbone",
    "build_model",
    "cooccurrence_adjacency",
    "embed_label_names",
    "load",
    "load_asl_checkpoint",
    "load_label_embeddings",
    "load_mldecoder_checkpoint",
    "load_mlgcn_checkpoint",
    "map_asl_state_dict",
    "read_metadata",
    "read_numpy_pickle",
    "register_model",
    "save",
]
