"""ASL (Ridnik et al., ICCV 2021): asymmetric loss and the TResNet + linear-head model.

The ASL model is a global-pool classifier (TResNet from timm in the paper) trained with
:class:`AsymmetricLoss`; :func:`load_asl_checkpoint` reads the official checkpoints. OpenImages
models know each output's MID (``label_mids``), which is how their outputs meet the dataset's labels
and the class hierarchy (see :mod:`mlattack.models.classlist`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack.models.backbones import Backbone
from mlattack.models.base import ModelOptions
from mlattack.models.checkpoint import load_weights, read_checkpoint_file
from mlattack.models.classlist import check_mids, checkpoint_mids, names_for_mids, read_mid_list
from mlattack.models.small import GlobalPoolClassifier

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mlattack.graph import LabelGraph

Reduction = Literal["mean", "sum", "none"]


def _check_gamma(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _check_clip(clip: float) -> float:
    if not 0 <= clip < 1:
        raise ValueError(f"clip must be in [0, 1), got {clip!r}")
    return float(clip)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss on logits (Ridnik et al. 2021, eq. 4-6).

    With ``p = sigmoid(logit)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        L+ = (1 - p)^gamma_pos * log(p)            for positive labels
        L- = p_m^gamma_neg * log(1 - p_m)          for negative labels
        loss = -(y * L+ + (1 - y) * L-)

    ``gamma_pos = gamma_neg = clip = 0`` gives exactly binary cross-entropy.  Targets may be soft
    (floats in [0, 1]).  ``reduction="mean"`` averages over all B*C entries like
    ``BCEWithLogitsLoss``; the official code sums (``reduction="sum"``).
    """

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        self.gamma_pos = _check_gamma("gamma_pos", gamma_pos)
        self.gamma_neg = _check_gamma("gamma_neg", gamma_neg)
        self.clip = _check_clip(clip)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape != targets.shape:
            raise ValueError(
                f"logits {list(logits.shape)} and targets {list(targets.shape)} must have one shape"
            )
        targets = targets.to(logits.dtype)
        positive = F.logsigmoid(logits)
        if self.gamma_pos > 0:
            positive = positive * torch.sigmoid(-logits).pow(self.gamma_pos)
        if self.clip > 0:
            shifted = (torch.sigmoid(logits) - self.clip).clamp(min=0)
            negative = torch.log1p(-shifted)  # 1 - shifted >= clip, so the log stays finite
        else:
            shifted = torch.sigmoid(logits)
            negative = F.logsigmoid(-logits)
        if self.gamma_neg > 0:
            negative = negative * shifted.pow(self.gamma_neg)
        loss = -(targets * positive + (1 - targets) * negative)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"


class ASLModel(GlobalPoolClassifier):
    """Backbone + global average pooling + linear head, trained with :class:`AsymmetricLoss`.

    The paper's backbone is TResNet (``backbone="timm:tresnet_l"``, needs ``timm``); any backbone
    works.  The loss's hyper-parameters are kept with the model (``criterion()``, ``config()``).
    ``label_mids``: the OpenImages MID of each output (in output order), kept in checkpoints; the
    runner matches outputs to dataset labels and hierarchy nodes by it.
    """

    name = "asl"

    def __init__(
        self,
        backbone: Backbone,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        label_mids: Sequence[str] | None = None,
        **options: Unpack[ModelOptions],
    ) -> None:
        super().__init__(backbone, **options)
        self.gamma_pos = _check_gamma("gamma_pos", gamma_pos)
        self.gamma_neg = _check_gamma("gamma_neg", gamma_neg)
        self.clip = _check_clip(clip)
        self.label_mids = (
            None
            if label_mids is None
            else check_mids(label_mids, self.num_labels, source="label_mids")
        )

    def criterion(self, reduction: Reduction = "mean") -> AsymmetricLoss:
        """The loss this model is meant to be trained with."""
        return AsymmetricLoss(self.gamma_pos, self.gamma_neg, self.clip, reduction)

    def head_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "gamma_pos": self.gamma_pos,
            "gamma_neg": self.gamma_neg,
            "clip": self.clip,
        }
        if self.label_mids is not None:
            config["label_mids"] = list(self.label_mids)
        return config


# The official ASL TResNet wraps each conv in nn.Sequential(Conv2d, InPlaceABN) -- nested once more
# when followed by an anti-aliasing layer -- and timm's port names them conv/bn.
_INPLACE_ABN_TO_TIMM = [
    (re.compile(r"\b(conv\d+)\.0\.0\."), r"\1.conv."),
    (re.compile(r"\b(conv\d+)\.0\.1\."), r"\1.bn."),
    (re.compile(r"\b(conv\d+)\.0\."), r"\1.conv."),
    (re.compile(r"\b(conv\d+)\.1\."), r"\1.bn."),
    (re.compile(r"\b(downsample\.\d+)\.0\."), r"\1.conv."),
    (re.compile(r"\b(downsample\.\d+)\.1\."), r"\1.bn."),
]
# InPlaceABN scales by |weight| + eps; BatchNorm by weight.
_INPLACE_ABN_EPS = 1e-5


def map_asl_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official ASL (TResNet + fc) state dict to :class:`ASLModel`'s names.

    ``body.*`` -> ``backbone.net.body.*`` (the timm TResNet inside), ``head.fc.*`` ->
    ``classifier.*``; a ``module.`` prefix (DataParallel) is dropped.  Checkpoints of the original
    InPlaceABN code are converted to timm's conv/bn layout (BN weights -> ``|w| + 1e-5``); the fixed
    anti-aliasing filters (``*.filt``) are dropped, since timm rebuilds them.

    Raises:
        ValueError: naming the first key that is neither ``body.*`` nor ``head.fc.*``.
    """
    stripped = {
        (key[len("module.") :] if key.startswith("module.") else key): value
        for key, value in state_dict.items()
    }
    abn_layout = "body.conv1.0.weight" in stripped and "body.conv1.conv.weight" not in stripped
    mapped: dict[str, Tensor] = {}
    for key, value in stripped.items():
        if key.startswith("head.fc."):
            mapped["classifier." + key[len("head.fc.") :]] = value
            continue
        if not key.startswith("body."):
            raise ValueError(
                f"key {key!r} is not part of an ASL TResNet + fc checkpoint "
                "(expected 'body.*' and 'head.fc.*' keys)"
            )
        if key.endswith(".filt"):
            continue
        if abn_layout:
            for pattern, replacement in _INPLACE_ABN_TO_TIMM:
                key = pattern.sub(replacement, key)
            if key.endswith(".bn.weight"):
                value = value.abs() + _INPLACE_ABN_EPS
        mapped["backbone.net." + key] = value
    return mapped


def load_asl_checkpoint(
    path: str | Path,
    *,
    backbone: str | Mapping[str, Any] = "timm:tresnet_l",
    label_names: Sequence[str] | None = None,
    graph: LabelGraph | None = None,
    input_size: int | None = None,
    map_location: str | torch.device = "cpu",
    mids: Sequence[str] | str | Path | None = None,
    class_descriptions: str | Path | Mapping[str, str] | None = None,
) -> ASLModel:
    """Build an :class:`ASLModel` from an official ASL checkpoint.

    The file holds ``{"model": state_dict, "num_classes": C, ...}``; OpenImages ones add
    ``"idx_to_class"``. The official MS-COCO models are TResNet-L at ``input_size=448``. Loaded
    with ``weights_only=True``.

    Which label each output is:

    * by MID when one is known: the checkpoint's own class list (``class_list``, ``mids``,
      ``idx_to_mid``, or ``idx_to_class`` holding MIDs), or ``mids`` (a sequence, or a file with
      one MID per line / per CSV row; it must agree with the checkpoint's list when both exist).
      The model keeps them as ``label_mids``; the label names are the display names in
      ``class_descriptions`` (a path or ``{MID: name}``; ``" (MID)"`` added to names several MIDs
      share), or the MIDs without it. Display names stored in the checkpoint are never used then.
    * otherwise from ``idx_to_class``'s display names (the MS-COCO checkpoints), which must be
      distinct; ``label_names``/``graph`` override both.

    Raises:
        ValueError: naming the value: a MID list of another length than the outputs, an entry that
            is not a MID, a repeated MID, a MID list that disagrees with the checkpoint's, a MID
            the descriptions lack, repeated display names without MIDs.
    """
    data = read_checkpoint_file(path, map_location)
    state = data.get("model", data.get("state_dict", data)) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not an ASL checkpoint (no 'model' state dict of tensors)")
    mapped = map_asl_state_dict(state)
    if "classifier.weight" not in mapped:
        raise ValueError(f"{path}: ASL checkpoint has no 'head.fc.weight'")
    num_classes = int(mapped["classifier.weight"].shape[0])
    if "num_classes" in data and int(data["num_classes"]) != num_classes:
        raise ValueError(
            f"{path}: num_classes={data['num_classes']} but head.fc has {num_classes} outputs"
        )
    label_mids = _output_mids(data, num_classes, path, mids)
    if label_names is None and graph is None:
        if label_mids is not None:
            label_names = names_for_mids(label_mids, _descriptions(class_descriptions))
        elif isinstance(data.get("idx_to_class"), dict):
            label_names = _checkpoint_display_names(data["idx_to_class"], path)
    model = ASLModel.build(
        backbone=backbone,
        num_labels=num_classes,
        label_names=label_names,
        graph=graph,
        input_size=input_size,
        label_mids=label_mids,
    )
    # InPlaceABN keeps no num_batches_tracked counters.
    load_weights(model, mapped, path, tolerated_missing=("num_batches_tracked",))
    return model.eval()


def _output_mids(
    data: Mapping[str, Any],
    num_classes: int,
    path: str | Path,
    mids: Sequence[str] | str | Path | None,
) -> tuple[str, ...] | None:
    """The MID of each output: the user's list and/or the checkpoint's own, which must agree."""
    own = checkpoint_mids(data, num_classes, source=str(path))
    if mids is None:
        return own
    if isinstance(mids, (str, Path)):
        given = check_mids(read_mid_list(mids), num_classes, source=f"mids file {str(mids)!r}")
    else:
        given = check_mids(mids, num_classes, source="mids")
    if own is not None and own != given:
        index = next(i for i, (a, b) in enumerate(zip(given, own, strict=True)) if a != b)
        raise ValueError(
            f"mids: output {index} is {given[index]!r} but {path}'s own class list says "
            f"{own[index]!r}; leave 'mids' out to use the checkpoint's"
        )
    return given


def _descriptions(source: str | Path | Mapping[str, str] | None) -> Mapping[str, str] | None:
    if source is None or isinstance(source, Mapping):
        return source
    from mlattack.graph_sources.openimages import read_class_descriptions

    return read_class_descriptions(source)


def _checkpoint_display_names(index_to_class: Mapping[Any, Any], path: str | Path) -> list[str]:
    names = [str(index_to_class[i]) for i in sorted(index_to_class, key=int)]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"{path}: 'idx_to_class' names outputs {seen[name]} and {index} both {name!r}; "
                "give the outputs' MIDs (mids=...) to tell them apart"
            )
        seen[name] = index
    return names
