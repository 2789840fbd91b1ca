"""ML-Decoder (Ridnik et al., WACV 2023): attention-based group decoding over a feature map.

The spatial features become tokens; ``G`` group queries attend to them through one
transformer-decoder layer without self-attention (cross-attention + feed-forward), and a
group fully-connected layer turns each query's output into ``ceil(C / G)`` logits, of which the
first ``C`` are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mlattack.models.backbones import Backbone
from mlattack.models.base import ModelOptions, MultiLabelModel
from mlattack.models.classlist import check_mids

if TYPE_CHECKING:
    from typing_extensions import Unpack


DEFAULT_MAX_GROUPS = 100


class MLDecoderHead(nn.Module):
    """Group-decoding head: feature map ``[B, D, h, w]`` -> logits ``[B, C]``.

    Args:
        in_channels: D.
        num_labels: C.
        num_groups: G query groups (default ``min(C, 100)`` as in the paper; ``G = C`` is one
            query per label).
        embed_dim: decoder width.
        num_heads: attention heads (must divide ``embed_dim``).
        feedforward_dim: hidden width of the decoder's feed-forward block.
        dropout: dropout inside the decoder layer (training only).
        learnable_queries: learn the queries; the paper keeps them fixed (random, not trained),
            which works as well and lets the head generalise to unseen classes.
    """

    def __init__(
        self,
        in_channels: int,
        num_labels: int,
        *,
        num_groups: int | None = None,
        embed_dim: int = 768,
        num_heads: int = 8,
        feedforward_dim: int = 2048,
        dropout: float = 0.1,
        learnable_queries: bool = False,
    ) -> None:
        super().__init__()
        groups = min(num_labels, DEFAULT_MAX_GROUPS) if num_groups is None else num_groups
        if not 1 <= groups <= num_labels:
            raise ValueError(f"num_groups must be in [1, {num_labels}], got {num_groups!r}")
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        if feedforward_dim < 1:
            raise ValueError(f"feedforward_dim must be positive, got {feedforward_dim!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_labels = num_labels
        self.num_groups = groups
        self.group_size = math.ceil(num_labels / groups)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.feedforward_dim = feedforward_dim
        self.dropout = dropout
        self.learnable_queries = learnable_queries

        self.token_projection = nn.Linear(in_channels, embed_dim)
        queries = torch.randn(groups, embed_dim)
        if learnable_queries:
            self.queries = nn.Parameter(queries)
        else:
            self.register_buffer("queries", queries)
        self.query_dropout = nn.Dropout(dropout)
        self.query_norm = nn.LayerNorm(embed_dim)
        self.cross_attention = nn.MultiheadAttention(
            embed_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_norm = nn.LayerNorm(embed_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(embed_dim, feedforward_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(feedforward_dim, embed_dim),
        )
        self.feedforward_dropout = nn.Dropout(dropout)
        self.feedforward_norm = nn.LayerNorm(embed_dim)
        self.group_weight = nn.Parameter(torch.empty(groups, embed_dim, self.group_size))
        nn.init.xavier_normal_(self.group_weight)
        self.group_bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, features: Tensor) -> Tensor:
        tokens = torch.relu(self.token_projection(features.flatten(2).transpose(1, 2)))
        # As the official decoder layer: no self-attention, but the residual q + dropout(q) stays.
        queries = self.query_norm(self.queries + self.query_dropout(self.queries))
        queries = queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        attended, _ = self.cross_attention(queries, tokens, tokens, need_weights=False)
        decoded = self.attention_norm(queries + self.attention_dropout(attended))
        decoded = self.feedforward_norm(
            decoded + self.feedforward_dropout(self.feedforward(decoded))
        )
        # Group fully-connected: each group's output is projected by its own [E, k] matrix.
        per_group = torch.einsum("bge,gek->bgk", decoded, self.group_weight)
        return per_group.flatten(1)[:, : self.num_labels] + self.group_bias

    def config(self) -> dict[str, Any]:
        return {
            "num_groups": self.num_groups,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "feedforward_dim": self.feedforward_dim,
            "dropout": self.dropout,
            "learnable_queries": self.learnable_queries,
        }


class MLDecoderModel(MultiLabelModel):
    """Any backbone + :class:`MLDecoderHead` (see there for the head's options).

    ``label_mids``: the OpenImages MID of each output, as :class:`~mlattack.models.ASLModel`'s.
    The released checkpoints load with :func:`mlattack.models.load_mldecoder_checkpoint`.
    """

    name = "ml-decoder"

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_groups: int | None = None,
        embed_dim: int = 768,
        num_heads: int = 8,
        feedforward_dim: int = 2048,
        dropout: float = 0.1,
        learnable_queries: bool = False,
        label_mids: Sequence[str] | None = None,
        **options: Unpack[ModelOptions],
    ) -> None:
        super().__init__(backbone, **options)
        self.label_mids = (
            None
            if label_mids is None
            else check_mids(label_mids, self.num_labels, source="label_mids")
        )
        self.head = MLDecoderHead(
            backbone.out_channels,
            self.num_labels,
            num_groups=num_groups,
            embed_dim=embed_dim,
            num_heads=num_heads,
            feedforward_dim=feedforward_dim,
            dropout=dropout,
            learnable_queries=learnable_queries,
        )

    def head_logits(self, features: Tensor) -> Tensor:
        logits: Tensor = self.head(features)
        return logits

    def head_config(self) -> dict[str, Any]:
        config = self.head.config()
        if self.label_mids is not None:
            config["label_mids"] = list(self.label_mids)
        return config
