"""The tiny official models of shared/data/official-models load with their family's loader and give
the official code's logits within the data's tolerance (1e-5 absolute)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlattack.models import (
    MLGCN,
    ASLModel,
    MLDecoderModel,
    load,
    load_asl_checkpoint,
    load_mldecoder_checkpoint,
    load_mlgcn_checkpoint,
    save,
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


@pytest.mark.parametrize(
    "name", ["asl_tiny_openimages", "mldecoder_tiny_c25_g10", "mlgcn_tiny_voc"]
)
def test_bare_state_dict_with_module_prefix_and_other_counter_layout_load_the_same(
    name: str, tmp_path: Path, tiny: TinyModels
) -> None:
    data = torch.load(tiny.folder / tiny.index[name]["checkpoint"], weights_only=True)
    state = data["state_dict" if name.startswith("mlgcn") else "model"]
    counters = [key for key in state if key.endswith("num_batches_tracked")]
    # what the official train.py saves: the bare state dict, here of a DataParallel model; and
    # the other inplace_abn version's layout (ML-Decoder files without the counters)
    bare = {
        f"module.{key}": value
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }
    path = tmp_path / "model-highest.ckpt"
    torch.save(bare, path)
    model = tiny.load(name, path)
    assert tiny.max_logit_error(name, model) <= TOLERANCE
    assert bool(counters) == (name.startswith("mldecoder"))
    if not name.startswith("mlgcn"):  # InPlaceABN 1.0.12's layout: no counters
        assert not any(key.endswith("num_batches_tracked") for key in model.state_dict())


def test_mlgcn_file_with_batchnorm_counters_loads_the_same(
    tiny: TinyModels, tmp_path: Path
) -> None:
    # ML-GCN retrained on torch >= 0.4 keeps BatchNorm's num_batches_tracked
    name = "mlgcn_tiny_synthetic12"
    data = torch.load(tiny.folder / tiny.index[name]["checkpoint"], weights_only=True)
    state = data["state_dict"]
    for key in [key for key in state if key.endswith("running_var")]:
        state[key[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(7)
    path = tmp_path / "counted.pth.tar"
    torch.save(data, path)
    model = tiny.load(name, path)
    assert tiny.max_logit_error(name, model) <= TOLERANCE
    assert model.state_dict()["backbone.features.1.num_batches_tracked"].item() == 7


def test_mldecoder_counters_are_kept_and_read_from_the_tensors(tiny: TinyModels) -> None:
    model = tiny.load("mldecoder_tiny_v1_c45_g8")
    assert model.backbone.spec()["batch_counters"] is True
    assert model.head.num_groups == 8 and model.head.group_size == 6
    assert "backbone.body.conv1.1.num_batches_tracked" in model.state_dict()
    # the file's tensors went in by reference, as trainable parameters on the CPU
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert {tensor.device.type for tensor in [*model.parameters(), *model.buffers()]} == {"cpu"}


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


@pytest.mark.parametrize(
    "name", ["asl_tiny_openimages", "mldecoder_tiny_c24_gall", "mlgcn_tiny_voc"]
)
def test_saved_and_reloaded_as_an_mlattack_checkpoint_the_logits_stay_official(
    name: str, tiny: TinyModels, tmp_path: Path
) -> None:
    again = load(save(tiny.load(name), tmp_path / "converted.pt"))
    assert tiny.max_logit_error(name, again) <= TOLERANCE
    assert again.input_size == tiny.index[name]["tiny_architecture"]["input_size"]


def test_the_released_layouts_load_with_timm_and_torchvision_unimportable(
    official_models: Path,
) -> None:
    # A fresh environment without the zoo extra: importing either library fails.
    script = f"""
import sys
sys.modules["timm"] = None
sys.modules["torchvision"] = None
from pathlib import Path
from mlattack.models import load_asl_checkpoint, load_mldecoder_checkpoint, load_mlgcn_checkpoint
tiny = Path({str(official_models / "tiny")!r})
load_asl_checkpoint(tiny / "asl_tiny_fc.pth", input_size=128)
load_mldecoder_checkpoint(tiny / "mldecoder_tiny_c25_g10.pth", input_size=128)
load_mlgcn_checkpoint(tiny / "mlgcn_tiny_voc.pth.tar", label_names=[str(i) for i in range(20)],
                      word_vectors=tiny / "mlgcn_data" / "voc_glove_word2vec.pkl")
print("loaded")
"""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded"
