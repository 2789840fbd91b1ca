"""Every released layout of shared/data/official-models/manifests loads strictly into our classes at
full size: a state dict made from the manifest's keys, shapes and dtypes (zeros) goes through the
family loader with no missing, unexpected or reshaped key, and the activations are placed as the
manifest's owning modules say. No forward pass: building on the meta device keeps it fast."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlattack.models.released.asl import asl_from_state_dict, map_asl_state_dict
from mlattack.models.released.mldecoder import (
    map_mldecoder_state_dict,
    mldecoder_from_state_dict,
)
from mlattack.models.released.mlgcn import mlgcn_from_state_dict
from mlattack.models.tresnet import InPlaceABN

MANIFESTS = [
    "asl_tresnet_m_coco_224",
    "asl_tresnet_l_coco_448",
    "asl_tresnet_xl_coco_640",
    "asl_tresnet_l_openimages_448",
    "asl_tresnet_xl_voc_448",
    "asl_tresnet_l_nuswide_448",
    "mldecoder_tresnet_m_coco_224",
    "mldecoder_tresnet_l_coco_448",
    "mldecoder_tresnet_xl_coco_640",
    "mldecoder_tresnet_m_openimages_224",
    "mlgcn_resnet101_voc_448",
    "mlgcn_resnet101_coco_448",
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
EXPECTED_BACKBONE = {
    "asl_tresnet_m": "tresnet-m",
    "asl_tresnet_l": "tresnet-l",
    "asl_tresnet_xl": "tresnet-xl",
    "mldecoder_tresnet_m": "tresnet-m",
    "mldecoder_tresnet_l": "tresnet-v2-l",
    "mldecoder_tresnet_xl": "tresnet-v2-xl",
}


def manifest_state(manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        key: torch.zeros(shape, dtype=DTYPES[dtype])
        for key, shape, dtype, _ in manifest["state_dict"]["keys"]
    }


@pytest.mark.parametrize("name", MANIFESTS)
def test_released_layout_loads_strictly_at_full_size(
    name: str, official_models: Path, tmp_path: Path
) -> None:
    manifest = json.loads((official_models / "manifests" / f"{name}.json").read_text("utf-8"))
    state = manifest_state(manifest)
    release = manifest["release"]
    num_classes = release["num_classes"]
    names = [f"class {i}" for i in range(num_classes)]
    if name.startswith("mlgcn"):
        vectors = tmp_path / "glove_word2vec.pkl"
        vectors.write_bytes(pickle.dumps(np.zeros((num_classes, 300), np.float32), protocol=3))
        model = mlgcn_from_state_dict(state, name, word_vectors=vectors, label_names=names)
        assert model.backbone.spec()["layers"] == [3, 4, 23, 3]  # ResNet-101
        assert model.gcn1.weight.shape == (1024, 300)
    else:
        loader = asl_from_state_dict if name.startswith("asl") else mldecoder_from_state_dict
        model = loader(state, {}, name, label_names=names)
        assert model.backbone.variant() == EXPECTED_BACKBONE[name.rsplit("_", 2)[0]]
        check_activations(manifest, state, model, name)
    assert model.input_size == release["input_size"]  # the layout's, not a default
    assert model.num_labels == num_classes
    # one tensor of ours per tensor of the file; ML-GCN adds the word vectors, and BatchNorm's
    # counters that the torch 0.3.1 layout lacks
    added = 0
    if name.startswith("mlgcn"):
        added = 1 + sum(key.endswith("running_var") for key in state)
    assert len(model.state_dict()) == len(state) + added


def check_activations(
    manifest: dict[str, Any], state: dict[str, torch.Tensor], model: torch.nn.Module, name: str
) -> None:
    """Each InPlaceABN has the activation the manifest's owning module names."""
    mapper = map_asl_state_dict if name.startswith("asl") else map_mldecoder_state_dict
    _, official = mapper(state)
    ours = {theirs: mine for mine, theirs in official.items()}
    checked = 0
    for key, _, _, owner in manifest["state_dict"]["keys"]:
        if not key.endswith(".running_mean"):
            continue
        match = re.fullmatch(
            r"InPlaceABN\(eps=1e-05, activation=(identity|leaky_relu\((.+)\))\)", owner
        )
        assert match, owner
        module = model.get_submodule(ours[key].rsplit(".", 1)[0])
        assert isinstance(module, InPlaceABN)
        expected = None if match.group(1) == "identity" else float(match.group(2))
        assert module.slope == expected, key
        checked += 1
    assert checked > 50
