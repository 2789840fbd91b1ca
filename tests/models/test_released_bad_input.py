"""Bad input to the released-checkpoint loaders: one ValueError line naming the file and the key."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlattack.models import (
    load_asl_checkpoint,
    load_mldecoder_checkpoint,
    load_mlgcn_checkpoint,
    save,
)
from mlattack.models.released import read_numpy_pickle


@pytest.fixture
def tiny(official_models: Path) -> Path:
    return official_models / "tiny"


def one_line(error: pytest.ExceptionInfo[ValueError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def resave(source: Path, target: Path, change: Any) -> Path:
    data = torch.load(source, weights_only=True)
    change(data)
    torch.save(data, target)
    return target


def test_a_file_of_another_family_names_its_family_and_loader(tiny: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_asl_checkpoint(tiny / "mldecoder_tiny_c25_g10.pth", input_size=128)
    assert "mldecoder_tiny_c25_g10.pth: key 'head.decoder.duplicate_pooling'" in one_line(error)
    assert "load_mldecoder_checkpoint" in str(error.value)
    with pytest.raises(ValueError, match=r"asl_tiny_fc.pth: key 'head.fc.weight' .* ASL"):
        load_mldecoder_checkpoint(tiny / "asl_tiny_fc.pth", input_size=128)
    with pytest.raises(ValueError, match=r"asl_tiny_fc.pth: key 'head.fc.weight' .* ASL"):
        load_mlgcn_checkpoint(
            tiny / "asl_tiny_fc.pth", word_vectors=tiny / "mlgcn_data/voc_glove_word2vec.pkl"
        )


def test_an_mlattack_checkpoint_is_sent_to_mlattack_load(tiny: Path, tmp_path: Path) -> None:
    converted = save(
        load_asl_checkpoint(tiny / "asl_tiny_fc.pth", input_size=128), tmp_path / "m.pt"
    )
    with pytest.raises(ValueError) as error:
        load_asl_checkpoint(converted, input_size=128)
    assert "m.pt: key 'format' makes this an mlattack checkpoint already" in one_line(error)


def test_a_truncated_file_is_named(tiny: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((tiny / "asl_tiny_fc.pth").read_bytes()[:100_000])
    with pytest.raises(ValueError) as error:
        load_asl_checkpoint(truncated, input_size=128)
    assert one_line(error).startswith(f"{truncated}: cannot be read")


def load_tiny(tiny: Path, path: Path) -> torch.nn.Module:
    """``path`` (a changed copy of one of the tiny files) loaded by its family's loader."""
    if path.name.startswith("mlgcn"):
        return load_mlgcn_checkpoint(
            path,
            word_vectors=tiny / "mlgcn_data/voc_glove_word2vec.pkl",
            label_names=[f"c{i}" for i in range(20)],
        )
    loader = load_asl_checkpoint if path.name.startswith("asl") else load_mldecoder_checkpoint
    return loader(path, input_size=128)


@pytest.mark.parametrize(
    ("source", "key", "replacement", "message"),
    [
        ("asl_tiny_fc.pth", "body.layer3.0.conv2.0.1.bias", None, "key {!r} is missing"),
        ("asl_tiny_fc.pth", "body.layer1.0.se.fc3.weight", torch.zeros(1), "unexpected key {!r}"),
        ("asl_tiny_fc.pth", "body.layer2.0.se.fc1.bias", torch.zeros(3), "key {!r} has shape [3]"),
        (
            "mldecoder_tiny_c24_gall.pth",
            "head.decoder.layers.0.norm3.bias",
            None,
            "key {!r} is missing",
        ),
        ("mlgcn_tiny_voc.pth.tar", "features.5.0.bn2.running_mean", None, "key {!r} is missing"),
    ],
    ids=["missing", "extra", "reshaped", "decoder-missing", "gcn-missing"],
)
def test_missing_extra_and_reshaped_keys_are_named(
    tiny: Path,
    tmp_path: Path,
    source: str,
    key: str,
    replacement: torch.Tensor | None,
    message: str,
) -> None:
    def change(data: dict[str, Any]) -> None:
        state = data["state_dict" if source.startswith("mlgcn") else "model"]
        if replacement is None:
            del state[key]
        else:
            state[key] = replacement

    changed = resave(tiny / source, tmp_path / source, change)
    with pytest.raises(ValueError) as error:
        load_tiny(tiny, changed)
    assert f"{changed}: {message.format(key)}" in one_line(error)


def test_a_class_list_of_another_length_than_the_head_is_named(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_asl_checkpoint(tiny / "asl_tiny_fc.pth", input_size=128, label_names=["a", "b"])
    assert "asl_tiny_fc.pth: 2 label names given but 'head.fc.weight' has 80" in one_line(error)

    def shorten(data: dict[str, Any]) -> None:
        data["idx_to_class"].pop(24)

    short = resave(tiny / "mldecoder_tiny_c25_g10.pth", tmp_path / "short.pth", shorten)
    with pytest.raises(ValueError) as error:
        load_mldecoder_checkpoint(short, input_size=128)
    message = one_line(error)
    assert "short.pth: 'idx_to_class' names 24 classes" in message
    assert "'head.decoder.duplicate_pooling_bias' has 25 outputs" in message
    with pytest.raises(ValueError, match=r"mlgcn_tiny_voc.pth.tar: 3 label names .* 'A' has 20"):
        load_mlgcn_checkpoint(
            tiny / "mlgcn_tiny_voc.pth.tar",
            word_vectors=tiny / "mlgcn_data/voc_glove_word2vec.pkl",
            label_names=["a", "b", "c"],
        )


def test_an_input_size_the_layout_does_not_support_is_named(tiny: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_asl_checkpoint(tiny / "asl_tiny_fc.pth", input_size=100)
    assert "input_size=100 is not supported by TResNet" in one_line(error)
    with pytest.raises(ValueError) as error:
        load_mlgcn_checkpoint(
            tiny / "mlgcn_tiny_voc.pth.tar",
            word_vectors=tiny / "mlgcn_data/voc_glove_word2vec.pkl",
            input_size=224,
        )
    assert "mlgcn_tiny_voc.pth.tar: input_size=224 is not supported" in one_line(error)
    # not a released layout: the size is required, never defaulted
    with pytest.raises(ValueError) as error:
        load_asl_checkpoint(tiny / "asl_tiny_fc.pth")
    assert "asl_tiny_fc.pth: input_size is required" in one_line(error)


def test_a_glove_pickle_of_the_wrong_width_or_count_is_named(tiny: Path, tmp_path: Path) -> None:
    narrow = tmp_path / "narrow_glove.pkl"
    narrow.write_bytes(pickle.dumps(np.zeros((20, 50), np.float32), protocol=3))
    names = [f"c{i}" for i in range(20)]
    with pytest.raises(ValueError) as error:
        load_mlgcn_checkpoint(
            tiny / "mlgcn_tiny_voc.pth.tar", word_vectors=narrow, label_names=names
        )
    assert "narrow_glove.pkl: word vectors of width 50" in one_line(error)
    assert "mlgcn_tiny_voc.pth.tar key 'gc1.weight' takes 300" in str(error.value)
    with pytest.raises(ValueError) as error:
        load_mlgcn_checkpoint(
            tiny / "mlgcn_tiny_voc.pth.tar",
            word_vectors=tiny / "mlgcn_data/synthetic12_glove_word2vec.pkl",
            label_names=names,
        )
    assert "12 word vectors but" in one_line(error) and "key 'A' has 20 labels" in str(error.value)


class Hostile:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this ran",))


def test_pickles_are_read_without_running_code(tiny: Path, tmp_path: Path) -> None:
    vectors = read_numpy_pickle(tiny / "mlgcn_data/voc_glove_word2vec.pkl")
    assert vectors.shape == (20, 300) and vectors.dtype == np.float32
    counts = read_numpy_pickle(tiny / "mlgcn_data/voc_adj.pkl")
    assert set(counts) == {"adj", "nums"}
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps(Hostile()))
    with pytest.raises(ValueError, match=r"hostile.pkl: the pickle refers to builtins.print"):
        read_numpy_pickle(hostile)
    broken = tmp_path / "broken.pkl"
    broken.write_bytes((tiny / "mlgcn_data/voc_adj.pkl").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"broken.pkl: cannot be read as a pickle"):
        read_numpy_pickle(broken)


def test_mlgcn_files_need_a_class_list(tiny: Path) -> None:
    with pytest.raises(ValueError) as error:
        load_mlgcn_checkpoint(
            tiny / "mlgcn_tiny_voc.pth.tar", word_vectors=tiny / "mlgcn_data/voc_glove_word2vec.pkl"
        )
    assert "ML-GCN files keep no class list" in one_line(error)
