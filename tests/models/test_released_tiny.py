"""The tiny official models of shared/data/official-models load with their family's loader and give
the official code's logits within the data's tolerance (1e-5 absolute)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlattack.models import (
    MLGCN,
    ASLModel,
    MLDecoderModel,
    load_asl_checkpoint,
    load_mldecoder_checkpoint,
    load_mlgcn_checkpoint,
)
from mlattack.models.adjacency import official_gen_a, official_propagation
from mlattack.models.released import read_numpy_pickle

TOLERANCE = 1e-5
# The seven models of tiny/index.json (its README lists them).
NAMES = [
    "asl_tiny_fc",
    "asl_tiny_openimages",
    "mldecoder_tiny_c25_g10",
    "mldecoder_tiny_c24_gall",
    "mldecoder_tiny_v1_c45_g8",
    "mlgcn_tiny_voc",
    "mlgcn_tiny_synthetic12",
]


@pytest.fixture
def tiny(official_models: Path, tiny_index: dict[str, Any]) -> TinyModels:
    return TinyModels(official_models / "tiny", tiny_index)


class TinyModels:
    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        self.folder = folder
        self.index = index

    def load(self, name: str, path: Path | None = None, **options: Any) -> torch.nn.Module:
        return load_tiny(self.folder, self.index[name], path, **options)

    def max_logit_error(self, name: str, model: torch.nn.Module) -> float:
        entry = self.index[name]
        images = torch.from_numpy(np.load(self.folder / entry["inputs"])["images"])
        reference = torch.from_numpy(np.load(self.folder / entry["reference"])["logits"])
        with torch.no_grad():
            logits = model(images)
        assert logits.shape == reference.shape
        return float((logits - reference).abs().max())


def load_tiny(
    folder: Path, entry: dict[str, Any], path: Path | None = None, **options: Any
) -> torch.nn.Module:
    """A tiny official model through its family's loader (128 px for TResNet, as the index says)."""
    path = folder / entry["checkpoint"] if path is None else path
    names = [f"output {i}" for i in range(entry["num_classes"])]
    if entry["family"] == "ASL":
        return load_asl_checkpoint(path, input_size=128, label_names=names, **options)
    if entry["family"] == "ML-Decoder":
        return load_mldecoder_checkpoint(path, input_size=128, label_names=names, **options)
    return load_mlgcn_checkpoint(
        path, word_vectors=folder / entry["word_vectors"], label_names=names, **options
    )


@pytest.mark.parametrize("name", NAMES)
def test_tiny_official_model_gives_the_official_logits(name: str, tiny: TinyModels) -> None:
    model = tiny.load(name)
    family = {"ASL": ASLModel, "ML-Decoder": MLDecoderModel, "ML-GCN": MLGCN}
    assert isinstance(model, family[tiny.index[name]["family"]])
    assert not model.training
    assert tiny.max_logit_error(name, model) <= TOLERANCE


@pytest.mark.parametrize("name", ["asl_tiny_openimages", "mldecoder_tiny_c25_g10"])
def test_bare_state_dict_with_module_prefix_and_other_counter_layout_load_the_same(
    name: str, tmp_path: Path, tiny: TinyModels
) -> None:
    data = torch.load(tiny.folder / tiny.index[name]["checkpoint"], weights_only=True)
    counters = [key for key in data["model"] if key.endswith("num_batches_tracked")]
    # what the official train.py saves: the bare state dict, here of a DataParallel model; and
    # the other inplace_abn version's layout (ML-Decoder files without the counters)
    bare = {
        f"module.{key}": value
        for key, value in data["model"].items()
        if not key.endswith("num_batches_tracked")
    }
    path = tmp_path / "model-highest.ckpt"
    torch.save(bare, path)
    model = tiny.load(name, path)
    assert tiny.max_logit_error(name, model) <= TOLERANCE
    assert bool(counters) == (name.startswith("mldecoder"))
    assert not any(key.endswith("num_batches_tracked") for key in model.state_dict())


def test_mldecoder_counters_are_kept_and_read_from_the_tensors(tiny: TinyModels) -> None:
    model = tiny.load("mldecoder_tiny_v1_c45_g8")
    assert model.backbone.spec()["batch_counters"] is True
    assert model.head.num_groups == 8 and model.head.group_size == 6
    assert "backbone.body.conv1.1.num_batches_tracked" in model.state_dict()


def test_mlgcn_adjacency_is_the_official_gen_adj_of_gen_a(tiny: TinyModels) -> None:
    folder = tiny.folder
    for name in ("mlgcn_tiny_voc", "mlgcn_tiny_synthetic12"):
        entry = tiny.index[name]
        model = tiny.load(name)
        reference = np.load(folder / entry["reference"])
        used = torch.from_numpy(reference["adjacency_used"])
        torch.testing.assert_close(model.adjacency, used, rtol=0, atol=1e-6)
        counts = read_numpy_pickle(folder / entry["cooccurrence"])
        a = official_gen_a(counts["adj"], counts["nums"], entry["gen_A"]["t"])
        stored = torch.load(folder / entry["checkpoint"], weights_only=True)["state_dict"]["A"]
        torch.testing.assert_close(torch.from_numpy(a), stored.float(), rtol=0, atol=1e-6)
        torch.testing.assert_close(official_propagation(stored.float()), used, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            model.label_classifiers(),
            torch.from_numpy(reference["label_classifiers"]),
            rtol=0,
            atol=1e-5,
        )
