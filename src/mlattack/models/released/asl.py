"""Loading the released ASL checkpoints (Alibaba-MIIL/ASL) into :class:`ASLModel`, exactly."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from mlattack.models.asl import ASLModel
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

# Official head names -> ASLModel's.
_HEAD_KEYS = {
    "head.fc.weight": "classifier.weight",
    "head.fc.bias": "classifier.bias",
    "head.fc.embedding_generator.0.weight": "bottleneck.weight",
    "head.fc.embedding_generator.0.bias": "bottleneck.bias",
    "head.fc.FC.weight": "classifier.weight",
    "head.fc.FC.bias": "classifier.bias",
}


def map_asl_state_dict(
    state_dict: Mapping[str, Tensor], source: str | Path = "state dict"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Official ASL names -> :class:`ASLModel`'s: ``body.*`` -> ``backbone.body.*`` (the same
    TResNet, see :mod:`mlattack.models.tresnet`), ``head.fc.*`` -> ``classifier.*`` (and
    ``head.fc.embedding_generator.0.*`` -> ``bottleneck.*``). Tensors are not copied.

    Returns ``(mapped, {our name: official name})``.

    Raises:
        ValueError: naming ``source`` and the first key that is neither ``body.*`` nor an ASL head.
    """
    return rename_official_keys(
        state_dict,
        _asl_name,
        source,
        "an ASL checkpoint holds 'body.*' (TResNet) and 'head.fc.*' keys only",
    )


def _asl_name(key: str) -> str | None:
    return "backbone." + key if key.startswith("body.") else _HEAD_KEYS.get(key)


def load_asl_checkpoint(path: str | Path, **options: Unpack[TResNetReleaseOptions]) -> ASLModel:
    """An :class:`ASLModel` giving the official ASL model's logits, from a released file.

    Reads ``{"model": state_dict, "num_classes": C, "idx_to_class": {...}}`` or the bare state dict
    of ASL's ``train.py`` (``weights_only=True``). Needs neither timm nor ``inplace_abn``:

    * **backbone**: TResNet read from the tensors (M, L, XL, or v2-L; any depth and width), with
      the official key names (:class:`~mlattack.models.tresnet.TResNetBackbone`);
    * **head**: the plain ``head.fc`` Linear (COCO, VOC, NUS-WIDE), or the OpenImages bottleneck
      head (``head.fc.embedding_generator.0``: D -> 512, then ``head.fc.FC``: 512 -> C) **kept as
      two layers**, not folded into one: the official model computes it in two steps, and the
      folded product rounds differently (1.5e-5 at full size, above the 1e-5 tolerance); it also
      keeps the file's tensors as they are, so loading multiplies nothing (a 9605 x 512 x 2432
      product otherwise) and the head costs 6 M instead of 23 M multiply-adds per image;
    * **input size**: ``input_size`` if given (a multiple of 32), else the released layout's (224
      for M COCO, 448 for L COCO / OpenImages / NUS-WIDE and XL VOC, 640 for XL COCO); any other
      layout needs ``input_size``: it is never defaulted;
    * **normalisation**: none (mean 0, std 1), as the official code.

    Which label each output is: by MID when known (the file's own MID list, or ``mids``: a list or
    a file; the names are then the display names in ``class_descriptions``), else ``label_names``
    or ``graph``, else the file's ``idx_to_class`` (distinct display names). The released
    OpenImages list holds display names only, some repeated: give ``mids``.

    Raises:
        ValueError: one line naming the file and the key: another family's file, a truncated or
            unreadable file, a missing, unexpected or reshaped key, a class list of another
            length than the head, an input size TResNet cannot take.
    """
    state, extras = read_released_state_dict(path, "asl")
    return asl_from_state_dict(state, extras, path, **options)


def asl_from_state_dict(
    state: Mapping[str, Tensor],
    extras: Mapping[str, Any],
    source: str | Path,
    **options: Unpack[TResNetReleaseOptions],
) -> ASLModel:
    """:func:`load_asl_checkpoint` on a state dict already read (official names, no ``module.``
    prefix) and the file's other top-level entries; ``source`` names it in errors."""
    path = source
    spec = tresnet_spec_from_state_dict(state, str(path))
    if "head.fc.FC.weight" in state:
        head_key = "head.fc.FC.weight"
        bottleneck_key = "head.fc.embedding_generator.0.weight"
        if bottleneck_key not in state:
            raise ValueError(
                f"{path}: key {bottleneck_key!r} is missing (the bottleneck head's first layer)"
            )
        bottleneck: int | None = int(state[bottleneck_key].shape[0])
    else:
        head_key, bottleneck = "head.fc.weight", None
    num_classes = int(state[head_key].shape[0])
    release = tresnet_release(spec, extras, path, "asl", head_key, num_classes, **options)
    model = build_on_meta(
        lambda: ASLModel(
            TResNetBackbone(**release.backbone), **release.labels, bottleneck_features=bottleneck
        )
    )
    mapped, official = map_asl_state_dict(state, path)
    head = "head.fc." if bottleneck is None else "head.fc.FC."

    def official_name(key: str) -> str:
        if key in official:
            return official[key]
        if key.startswith("backbone."):
            return key[len("backbone.") :]
        if key.startswith("bottleneck."):
            return "head.fc.embedding_generator.0." + key[len("bottleneck.") :]
        return key.replace("classifier.", head, 1)

    load_released_weights(model, mapped, official_name, path)
    return model.eval()
