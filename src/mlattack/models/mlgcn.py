"""ML-GCN (Chen et al., CVPR 2019): a GCN over label embeddings produces the label classifiers.

A two-layer graph convolution maps label embeddings ``E`` [C, d] through the re-weighted label
co-occurrence matrix ``A`` [C, C] to one classifier vector per label, ``W = A·σ(A·E·W1)·W2``
[C, D]; the logits are ``W · maxpool(backbone(x))``. ``A`` is the paper's (eq. 8) or the released
code's (:mod:`mlattack.models.adjacency`); the released checkpoints load with
:func:`mlattack.models.load_mlgcn_checkpoint`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack.models.adjacency import DEFAULT_P, AdjacencyStyle, cooccurrence_adjacency
from mlattack.models.backbones import Backbone, build_backbone
from mlattack.models.base import ModelOptions, MultiLabelModel, resolve_label_names
from mlattack.models.embeddings import resolve_label_embeddings

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from mlattack.graph import LabelGraph

MLGCNT = TypeVar("MLGCNT", bound="MLGCN")


class MLGCN(MultiLabelModel):
    """ML-GCN: backbone features (global max pooling) scored by GCN-made label classifiers.

    Args:
        backbone: feature extractor giving ``[B, D, h, w]``.
        label_embeddings: ``[C, d]`` word embeddings of the labels (a buffer, saved with the model).
        adjacency: ``[C, C]`` propagation matrix, e.g. :func:`cooccurrence_adjacency` (a buffer).
        hidden_dim: width of the first graph convolution.
        negative_slope: LeakyReLU slope between the two graph convolutions (0.2 in the paper).
        tau, p: the co-occurrence threshold and re-weighting used to make ``adjacency`` (recorded
            in :meth:`config`; ``None`` when the adjacency was given directly).
        adjacency_style: how ``adjacency`` was made, ``"paper"`` or ``"official"`` (see
            :mod:`mlattack.models.adjacency`); ``None`` when it was given directly.
    """

    name = "ml-gcn"
    label_embeddings: Tensor
    adjacency: Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        label_embeddings: Tensor,
        adjacency: Tensor,
        hidden_dim: int = 1024,
        negative_slope: float = 0.2,
        tau: float | None = None,
        p: float | None = None,
        adjacency_style: AdjacencyStyle | None = None,
        **options: Unpack[ModelOptions],
    ) -> None:
        super().__init__(backbone, **options)
        count = self.num_labels
        embeddings = torch.as_tensor(label_embeddings, dtype=torch.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != count:
            raise ValueError(
                f"label_embeddings must have shape [{count}, d], got {list(embeddings.shape)}"
            )
        matrix = torch.as_tensor(adjacency, dtype=torch.float32)
        if matrix.shape != (count, count):
            raise ValueError(
                f"adjacency must have shape [{count}, {count}], got {list(matrix.shape)}"
            )
        if not (torch.isfinite(matrix).all() and torch.isfinite(embeddings).all()):
            raise ValueError("label_embeddings and adjacency must be finite")
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim!r}")
        self.register_buffer("label_embeddings", embeddings.clone())
        self.register_buffer("adjacency", matrix.clone())
        self.hidden_dim = int(hidden_dim)
        self.negative_slope = float(negative_slope)
        self.tau = tau
        self.p = p
        self.adjacency_style = adjacency_style
        self.gcn1 = nn.Linear(embeddings.shape[1], self.hidden_dim, bias=False)
        self.gcn2 = nn.Linear(self.hidden_dim, backbone.out_channels, bias=False)

    def label_classifiers(self) -> Tensor:
        """The GCN output: one classifier vector per label, ``[C, D]``."""
        hidden = self.adjacency @ self.gcn1(self.label_embeddings)
        hidden = F.leaky_relu(hidden, self.negative_slope)
        out: Tensor = self.adjacency @ self.gcn2(hidden)
        return out

    def head_logits(self, features: Tensor) -> Tensor:
        pooled = features.amax(dim=(2, 3))
        return pooled @ self.label_classifiers().t()

    def head_config(self) -> dict[str, Any]:
        return {
            "embedding_dim": int(self.label_embeddings.shape[1]),
            "hidden_dim": self.hidden_dim,
            "negative_slope": self.negative_slope,
            "tau": self.tau,
            "p": self.p,
            "adjacency_style": self.adjacency_style,
        }

    @classmethod
    def build(
        cls: type[MLGCNT],
        *,
        backbone: str | Mapping[str, Any] = "small-cnn",
        pretrained_backbone: bool = False,
        num_labels: int | None = None,
        label_names: Sequence[str] | None = None,
        graph: LabelGraph | None = None,
        label_embeddings: Any = None,
        adjacency: Any = None,
        train_labels: Any = None,
        tau: float = 0.4,
        p: float | None = None,
        adjacency_style: AdjacencyStyle = "paper",
        **options: Any,
    ) -> MLGCNT:
        """Build ML-GCN, making its embeddings and adjacency from what is given.

        Args:
            label_embeddings: a ``.npy``/``.pt``/``.json`` path, a ``[C, d]`` array, a
                ``{label: vector}`` mapping, or ``None``/``"minilm"`` to embed the label names
                offline with all-MiniLM-L6-v2 (``mlattack[embeddings]``).
            adjacency: a ``[C, C]`` matrix; else computed from ``train_labels``.
            train_labels: ``[N, C]`` bool training labels for :func:`cooccurrence_adjacency`.
            tau, p: threshold and re-weighting for :func:`cooccurrence_adjacency` (``p``
                defaults to the style's: 0.2 for the paper, 0.25 for the official code).
            adjacency_style: ``"paper"`` (default: eq. 8 of the paper, rows re-weighted) or
                ``"official"`` (the released code's ``gen_adj(gen_A)``, whose edges point the
                other way); see :mod:`mlattack.models.adjacency`. Recorded in :meth:`config`.
            **options: ``hidden_dim``, ``negative_slope``, ``input_size``, ``mean``, ``std``.
        """
        names = resolve_label_names(num_labels, label_names, graph)
        if label_embeddings is None and label_names is None and graph is None:
            warnings.warn(
                "ml-gcn: embedding the placeholder names 'label_0', 'label_1', ...; give "
                "label_names (or a graph) or label_embeddings for meaningful label embeddings",
                stacklevel=2,
            )
        if adjacency is None:
            if train_labels is None:
                raise ValueError(
                    "ml-gcn needs train_labels=[N, C] training labels (for the co-occurrence "
                    "adjacency) or adjacency=[C, C]"
                )
            matrix = torch.as_tensor(
                cooccurrence_adjacency(np.asarray(train_labels), tau, p, style=adjacency_style)
            )
            if matrix.shape[0] != len(names):
                raise ValueError(
                    f"train_labels has {matrix.shape[0]} label columns but the model has {len(names)}"
                )
            recorded_tau: float | None = tau
            recorded_p: float | None = DEFAULT_P[adjacency_style] if p is None else p
            recorded_style: AdjacencyStyle | None = adjacency_style
        else:
            matrix = torch.as_tensor(np.asarray(adjacency, dtype=np.float32))
            recorded_tau = recorded_p = recorded_style = None
        return cls(
            build_backbone(backbone, pretrained=pretrained_backbone),
            label_embeddings=resolve_label_embeddings(label_embeddings, names),
            adjacency=matrix,
            label_names=names,
            graph=graph,
            tau=recorded_tau,
            p=recorded_p,
            adjacency_style=recorded_style,
            **options,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], graph: LabelGraph | None) -> MLGCN:
        """Skeleton with zero embeddings and identity adjacency; the state dict fills them."""
        options = {
            key: value
            for key, value in config.items()
            if key not in ("name", "backbone", "embedding_dim", "num_labels")
        }
        count = int(config["num_labels"])
        return cls(
            build_backbone(config["backbone"]),
            label_embeddings=torch.zeros(count, int(config["embedding_dim"])),
            adjacency=torch.eye(count),
            num_labels=count,
            graph=graph,
            **options,
        )
