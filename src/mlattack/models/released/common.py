"""What the three released-checkpoint loaders share: reading the file, telling the families apart,
the released layouts' input sizes, and a strict, fast load into a model built on the meta device.

Every failure is one ``ValueError`` line naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import torch
from torch import Tensor, nn

from mlattack.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint_file
from mlattack.models.released.classes import output_labels
from mlattack.models.tresnet import check_tresnet_input_size, tresnet_variant

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

ModelT = TypeVar("ModelT", bound=nn.Module)

FAMILY_TITLES = {"asl": "ASL", "ml-decoder": "ML-Decoder", "ml-gcn": "ML-GCN"}
FAMILY_LOADERS = {
    "asl": "load_asl_checkpoint",
    "ml-decoder": "load_mldecoder_checkpoint",
    "ml-gcn": "load_mlgcn_checkpoint",
}
# The key that tells each family's state dict apart from the others'.
FAMILY_MARKERS = {
    "asl": ("head.fc.weight", "head.fc.FC.weight"),
    "ml-decoder": ("head.decoder.duplicate_pooling",),
    "ml-gcn": ("gc1.weight",),
}

# The released files (manifests in shared/data/official-models): (family, backbone preset,
# outputs) -> the input side their weights were trained at.
RELEASED_INPUT_SIZES: dict[tuple[str, str, int], int] = {
    ("asl", "tresnet-m", 80): 224,  # MS_COCO_TRresNet_M_224_81.8.pth
    ("asl", "tresnet-l", 80): 448,  # MS_COCO_TRresNet_L_448_86.6.pth
    ("asl", "tresnet-xl", 80): 640,  # MS_COCO_TResNet_xl_640_88.4.pth
    ("asl", "tresnet-l", 9605): 448,  # Open_ImagesV6_TRresNet_L_448.pth
    ("asl", "tresnet-xl", 20): 448,  # PASCAL_VOC_TResNet_xl_448_96.0.pth
    ("asl", "tresnet-l", 81): 448,  # NUS_WIDE_TRresNet_L_448_65.2.pth
    ("ml-decoder", "tresnet-m", 80): 224,  # tresnet_m_COCO_224_84_2.pth
    ("ml-decoder", "tresnet-v2-l", 80): 448,  # tresnet_l_COCO__448_90_0.pth
    ("ml-decoder", "tresnet-v2-xl", 80): 640,  # tresnet_xl_COCO_640_91_4.pth
    ("ml-decoder", "tresnet-m", 9605): 224,  # tresnet_m_open_images_200_groups_86_8.pth
}


def read_released_state_dict(
    path: str | Path, family: str
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state dict, the file's other top-level entries)`` of a released checkpoint.

    Accepts the released wrapping (``{"model": ...}`` for ASL and ML-Decoder, ``{"state_dict":
    ...}`` for ML-GCN) and the bare state dict the official training scripts save; a ``module.``
    prefix (DataParallel) is dropped. Floating tensors are made float32 (ML-GCN files may hold
    float16); the file must be of ``family``.
    """
    data = read_checkpoint_file(path, "cpu")
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a {FAMILY_TITLES[family]} checkpoint (a {type(data).__name__})"
        )
    if data.get("format") == CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: key 'format' makes this an mlattack checkpoint already; load it with "
            "mlattack.models.load"
        )
    extras: dict[str, Any] = {}
    state: Any = data
    for wrapper in ("model", "state_dict"):
        if isinstance(data.get(wrapper), dict):
            state = data[wrapper]
            extras = {key: value for key, value in data.items() if key != wrapper}
            break
    if not state or not all(isinstance(key, str) for key in state):
        raise ValueError(f"{path}: not a {FAMILY_TITLES[family]} checkpoint (no state dict)")
    bad = next((key for key, value in state.items() if not isinstance(value, Tensor)), None)
    if bad is not None:
        raise ValueError(
            f"{path}: key {bad!r} holds a {type(state[bad]).__name__}, not a tensor: not a "
            "state dict"
        )
    tensors: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
        tensors[name] = value
    _check_family(tensors, family, path)
    return tensors, extras


def _check_family(state: Mapping[str, Tensor], family: str, path: str | Path) -> None:
    if any(marker in state for marker in FAMILY_MARKERS[family]):
        return
    for other, markers in FAMILY_MARKERS.items():
        found = next((marker for marker in markers if marker in state), None)
        if other != family and found is not None:
            raise ValueError(
                f"{path}: key {found!r} makes this an {FAMILY_TITLES[other]} checkpoint, not "
                f"{FAMILY_TITLES[family]}; load it with {FAMILY_LOADERS[other]}"
            )
    wanted = " or ".join(repr(marker) for marker in FAMILY_MARKERS[family])
    raise ValueError(
        f"{path}: no key {wanted}: not a {FAMILY_TITLES[family]} checkpoint (first key "
        f"{next(iter(state))!r})"
    )


def released_input_size(
    family: str,
    variant: str | None,
    num_classes: int,
    input_size: int | None,
    path: str | Path,
) -> int:
    """The given ``input_size``, else the released layout's; never a silent default."""
    if input_size is not None:
        return input_size
    known = RELEASED_INPUT_SIZES.get((family, variant or "", num_classes))
    if known is None:
        raise ValueError(
            f"{path}: input_size is required: {variant or 'this backbone'} with {num_classes} "
            f"outputs is none of the released {FAMILY_TITLES[family]} layouts, whose sizes are known"
        )
    return known


def rename_official_keys(
    state_dict: Mapping[str, Tensor],
    rename: Callable[[str], str | None],
    source: str | Path,
    holds: str,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(mapped, {our name: official name})``: each tensor, not copied, under ``rename(its
    key)``; a key ``rename`` gives None for raises ``ValueError`` naming ``source`` and the key,
    with ``holds`` (what such a checkpoint holds)."""
    mapped: dict[str, Tensor] = {}
    official: dict[str, str] = {}
    for key, value in state_dict.items():
        name = rename(key)
        if name is None:
            raise ValueError(f"{source}: unexpected key {key!r}: {holds}")
        mapped[name] = value
        official[name] = key
    return mapped, official


class TResNetReleaseOptions(TypedDict, total=False):
    """The keyword options of the TResNet-based loaders (ASL, ML-Decoder); see
    :func:`mlattack.models.load_asl_checkpoint`."""

    input_size: int | None
    label_names: Sequence[str] | None
    graph: LabelGraph | None
    mids: Sequence[str] | str | Path | None
    class_descriptions: str | Path | Mapping[str, str] | None


@dataclass(frozen=True)
class TResNetRelease:
    """What a TResNet-based model is built from, besides its head."""

    backbone: dict[str, Any]  # TResNetBackbone's keyword arguments, the input size included
    labels: dict[str, Any]  # the model's num_labels, label_names, graph and label_mids


def tresnet_release(
    spec: Mapping[str, Any],
    extras: Mapping[str, Any],
    path: str | Path,
    family: str,
    class_key: str,
    num_classes: int,
    *,
    input_size: int | None = None,
    label_names: Sequence[str] | None = None,
    graph: LabelGraph | None = None,
    mids: Sequence[str] | str | Path | None = None,
    class_descriptions: str | Path | Mapping[str, str] | None = None,
) -> TResNetRelease:
    """The backbone and labels of a released ``family`` file whose TResNet is ``spec`` and whose
    ``class_key`` tensor gives ``num_classes`` outputs: the file's ``num_classes`` entry must
    agree, the input size is :func:`released_input_size`'s, the labels :func:`output_labels`'."""
    if "num_classes" in extras and extras["num_classes"] != num_classes:
        raise ValueError(
            f"{path}: 'num_classes' is {extras['num_classes']!r} but {class_key!r} has "
            f"{num_classes} outputs"
        )
    variant = tresnet_variant(spec["layers"], spec["planes"], spec["first_block"])
    size = released_input_size(family, variant, num_classes, input_size, path)
    check_tresnet_input_size(size)
    names, label_mids = output_labels(
        path,
        class_key,
        num_classes,
        extras,
        label_names=label_names if graph is None else list(graph.names),
        mids=mids,
        class_descriptions=class_descriptions,
    )
    backbone = {key: value for key, value in spec.items() if key != "name"}
    return TResNetRelease(
        backbone={**backbone, "input_size": size},
        labels={
            "num_labels": num_classes,
            "label_names": names,
            "graph": graph,
            "label_mids": label_mids,
        },
    )


def build_on_meta(factory: Callable[[], ModelT]) -> ModelT:
    """``factory()`` with every tensor on the meta device: no memory, no initialisation, since the
    checkpoint's tensors replace them all (see :func:`load_released_weights`)."""
    with torch.device("meta"):
        return factory()


def load_released_weights(
    model: nn.Module,
    mapped: Mapping[str, Tensor],
    official_name: Callable[[str], str],
    path: str | Path,
) -> None:
    """Put ``mapped`` (our names) into ``model``: strictly, by reference (``assign=True``).

    Every key must be there with its shape; ``official_name`` (our name -> the file's) names
    the offending key as the file spells it. Non-persistent buffers left on the meta device (the
    pixel normalisation) are made again from the model's own fields.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in mapped]
    if missing:
        name = official_name(missing[0])
        raise ValueError(
            f"{path}: key {name!r} is missing ({len(missing)} keys missing in all); the "
            "architecture read from the file's tensors needs it"
        )
    unexpected = [key for key in mapped if key not in expected]
    if unexpected:
        raise ValueError(
            f"{path}: unexpected key {official_name(unexpected[0])!r} "
            f"({len(unexpected)} in all) for the architecture read from the file's tensors"
        )
    for key, tensor in expected.items():
        if mapped[key].shape != tensor.shape:
            raise ValueError(
                f"{path}: key {official_name(key)!r} has shape "
                f"{list(mapped[key].shape)} but the architecture read from the file's tensors "
                f"needs {list(tensor.shape)}"
            )
    model.load_state_dict(mapped, strict=True, assign=True)
    _restore_pixel_buffers(model)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    left = next((name for name, value in tensors if value.is_meta), None)
    if left is not None:  # a constant that neither the file nor the model's fields can give
        raise RuntimeError(f"{path}: tensor {left!r} was left uninitialised")


def _restore_pixel_buffers(model: nn.Module) -> None:
    mean = getattr(model, "mean", None)
    std = getattr(model, "std", None)
    if mean is None or std is None:
        return
    model.pixel_mean = torch.tensor(mean).view(1, 3, 1, 1)
    model.pixel_std = torch.tensor(std).view(1, 3, 1, 1)
