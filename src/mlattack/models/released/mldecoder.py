"""Loading the released ML-Decoder checkpoints (Alibaba-MIIL/ML_Decoder) into
:class:`MLDecoderModel`, exactly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mlattack.models.mldecoder import MLDecoderModel
from mlattack.models.released.common import (
    TResNetReleaseOptions,
    build_on_meta,
    load_released_weights,
    read_released_state_dict,
    rename_official_keys,
    tresnet_release,
)
from mlattack.models.tresnet import TResNetBackbone, tresnet_spec_from_state_dict

if TYPE_CHECKING:
    from typing import Unpack

# ML-Decoder's decoder layer has 8 heads in every release (nhead=8 in add_ml_decoder_head); the
# count is not recoverable from the tensors.
OFFICIAL_NUM_HEADS = 8

# Official names (after "head.decoder.") -> MLDecoderHead's (after "head.").
_DECODER_PREFIXES = (
    ("embed_standart.", "token_projection."),
    ("layers.0.norm1.", "query_norm."),
    ("layers.0.multihead_attn.", "cross_attention."),
    ("layers.0.norm2.", "attention_norm."),
    ("layers.0.linear1.", "feedforward.0."),
    ("layers.0.linear2.", "feedforward.3."),
    ("layers.0.norm3.", "feedforward_norm."),
)
_DECODER_KEYS = {
    "query_embed.weight": "queries",
    "duplicate_pooling": "group_weight",
    "duplicate_pooling_bias": "group_bias",
}


def map_mldecoder_state_dict(
    state_dict: Mapping[str, Tensor], source: str | Path = "state dict"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Official ML-Decoder names -> :class:`MLDecoderModel`'s, one to one: ``body.*`` ->
    ``backbone.body.*``; ``head.decoder.embed_standart`` -> ``head.token_projection``,
    ``query_embed.weight`` -> ``queries``, ``layers.0.norm1/multihead_attn/norm2/linear1/linear2/
    norm3`` -> ``query_norm/cross_attention/attention_norm/feedforward.0/feedforward.3/
    feedforward_norm``, ``duplicate_pooling(_bias)`` -> ``group_weight``/``group_bias``.

    Returns ``(mapped, {our name: official name})``; raises ValueError naming an unknown key.
    """
    return rename_official_keys(
        state_dict,
        _mldecoder_name,
        source,
        "an ML-Decoder checkpoint holds 'body.*' (TResNet) and the decoder's 'head.decoder.*' "
        "keys only",
    )


def _mldecoder_name(key: str) -> str | None:
    if key.startswith("body."):
        return "backbone." + key
    if not key.startswith("head.decoder."):
        return None
    rest = key[len("head.decoder.") :]
    name = "head." + _DECODER_KEYS[rest] if rest in _DECODER_KEYS else None
    for theirs, ours in _DECODER_PREFIXES:
        if rest.startswith(theirs):
            name = "head." + ours + rest[len(theirs) :]
    return name


def official_mldecoder_name(key: str) -> str:
    """The official name of one of :class:`MLDecoderModel`'s keys (the inverse of the map)."""
    if key.startswith("backbone."):
        return key[len("backbone.") :]
    rest = key[len("head.") :]
    for theirs, ours in _DECODER_KEYS.items():
        if rest == ours:
            return "head.decoder." + theirs
    for theirs, ours in _DECODER_PREFIXES:
        if rest.startswith(ours):
            return "head.decoder." + theirs + rest[len(ours) :]
    return key


def load_mldecoder_checkpoint(
    path: str | Path, **options: Unpack[TResNetReleaseOptions]
) -> MLDecoderModel:
    """An :class:`MLDecoderModel` giving the official ML-Decoder logits, from a released file.

    Reads ``{"model": state_dict, "idx_to_class": {...}}`` or the bare state dict of ML_Decoder's
    ``train.py`` (``weights_only=True``), with or without InPlaceABN's ``num_batches_tracked``
    (inplace_abn 1.1.0 writes it, 1.0.12 does not). Needs neither timm nor ``inplace_abn``, and
    avoids the official forward that fails on torch 2 (ML_Decoder #82).

    * **backbone**: TResNet read from the tensors: ML_Decoder's "tresnet_m" is TResNet-M (v1),
      its "tresnet_l" TResNet-**v2**-L and its "tresnet_xl" TResNet-v2-XL (``layers [3, 8, 34,
      5]``, which timm has not);
    * **head**: the class count C from ``duplicate_pooling_bias``, the groups G, the width E and
      k = ceil(C / G) from ``duplicate_pooling`` [G, E, k] (the official scripts take C and G as
      command-line arguments; the released OpenImages model has G = 200), the feed-forward width
      from ``linear1``; 8 attention heads as in every release;
    * **input size**: ``input_size`` if given, else the released layout's (224 for M, 448 for
      v2-L, 640 for v2-XL); any other layout needs it;
    * **normalisation**: none (mean 0, std 1).

    The class list as :func:`~mlattack.models.load_asl_checkpoint`'s (MIDs for OpenImages).

    Raises:
        ValueError: one line naming the file and the key (see ``load_asl_checkpoint``).
    """
    state, extras = read_released_state_dict(path, "ml-decoder")
    return mldecoder_from_state_dict(state, extras, path, **options)


def mldecoder_from_state_dict(
    state: Mapping[str, Tensor],
    extras: Mapping[str, Any],
    source: str | Path,
    **options: Unpack[TResNetReleaseOptions],
) -> MLDecoderModel:
    """:func:`load_mldecoder_checkpoint` on a state dict already read (official names, no ``module.``
    prefix) and the file's other top-level entries; ``source`` names it in errors."""
    path = source
    spec = tresnet_spec_from_state_dict(state, str(path))
    weight_key, bias_key = "head.decoder.duplicate_pooling", "head.decoder.duplicate_pooling_bias"
    group_weight = state[weight_key]
    if group_weight.ndim != 3:
        raise ValueError(
            f"{path}: key {weight_key!r} has shape {list(group_weight.shape)}, not [groups, "
            "embedding, k]"
        )
    if bias_key not in state:
        raise ValueError(f"{path}: key {bias_key!r} is missing (it gives the class count)")
    num_classes = int(state[bias_key].shape[0])
    num_groups, embed_dim, group_size = (int(n) for n in group_weight.shape)
    if not num_groups * (group_size - 1) < num_classes <= num_groups * group_size:
        raise ValueError(
            f"{path}: key {weight_key!r} has shape {list(group_weight.shape)}, which does not "
            f"give {num_classes} outputs ({bias_key!r}) in groups of k = ceil(C / G)"
        )
    feedforward_key = "head.decoder.layers.0.linear1.weight"
    if feedforward_key not in state:
        raise ValueError(f"{path}: key {feedforward_key!r} is missing")
    release = tresnet_release(spec, extras, path, "ml-decoder", bias_key, num_classes, **options)
    head_options: dict[str, Any] = {
        "num_groups": num_groups,
        "embed_dim": embed_dim,
        "num_heads": OFFICIAL_NUM_HEADS,
        "feedforward_dim": int(state[feedforward_key].shape[0]),
    }
    if embed_dim % OFFICIAL_NUM_HEADS:
        raise ValueError(
            f"{path}: key {weight_key!r} gives an embedding width {embed_dim} that the official "
            f"{OFFICIAL_NUM_HEADS} attention heads cannot split"
        )
    model = build_on_meta(
        lambda: MLDecoderModel(
            TResNetBackbone(**release.backbone), **release.labels, **head_options
        )
    )
    mapped, official = map_mldecoder_state_dict(state, path)
    load_released_weights(
        model, mapped, lambda key: official.get(key) or official_mldecoder_name(key), path
    )
    return model.eval()
