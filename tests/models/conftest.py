"""Fixtures for the model tests: a tiny label graph and a stand-in for timm."""

from __future__ import annotations

import json
import sys
import types
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mlattack.graph import LabelGraph

TINY_LABELS = ("animal", "cat", "dog", "vehicle", "car")
TINY_EDGES = (("animal", "cat"), ("animal", "dog"), ("vehicle", "car"))


# The official-model reference data beside the repository root (52 MB, not copied here).


@pytest.fixture(scope="session")
def official_models(shared_data_dir: Callable[..., Path]) -> Path:
    """``../shared/data/official-models`` (see the root conftest's ``shared_data_dir``)."""
    return shared_data_dir("official-models")


@pytest.fixture(scope="session")
def tiny_index(official_models: Path) -> dict[str, Any]:
    """``tiny/index.json``'s ``models``: each tiny official model's description."""
    index = json.loads((official_models / "tiny" / "index.json").read_text("utf-8"))
    models: dict[str, Any] = index["models"]
    return models


FAMILIES = ("small-cnn", "ml-gcn", "asl", "ml-decoder")
SMALL_DECODER = {"embed_dim": 16, "num_heads": 2, "feedforward_dim": 32}


@pytest.fixture
def tiny_graph() -> LabelGraph:
    return LabelGraph(TINY_LABELS, TINY_EDGES)


def options_for(family: str) -> dict[str, Any]:
    """Small options per family (5 labels) so that every forward pass stays fast."""
    if family == "ml-gcn":
        labels = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
        return {"label_embeddings": torch.randn(5, 8), "train_labels": labels, "hidden_dim": 16}
    if family == "ml-decoder":
        return dict(SMALL_DECODER)
    return {}


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    """Each trainable model family in turn."""
    name: str = request.param
    return name


@pytest.fixture
def family_options(family: str) -> dict[str, Any]:
    return options_for(family)


class _ConvNormAct(nn.Module):
    """timm's ConvNormAct naming: ``conv``, ``bn`` (and ``aa`` when anti-aliased)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.aa = nn.AvgPool2d(2) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.aa(torch.relu(self.bn(self.conv(x))))


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvNormAct(channels, channels, 3)
        self.conv2 = _ConvNormAct(channels, channels, 3, stride=2)
        self.downsample = nn.Sequential(nn.AvgPool2d(2), _ConvNormAct(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x)) + self.downsample(x)


class FakeTResNet(nn.Module):
    """A miniature with the module names of timm's TResNet (``body.conv1``, ``body.layer1``...)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", _ConvNormAct(3, width, 3)),
                    ("layer1", nn.Sequential(_Block(width))),
                ]
            )
        )
        self.num_features = width
        self.pretrained_cfg = {
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "input_size": (3, 32, 32),
        }

    def forward_features(self, x: Tensor) -> Tensor:
        out: Tensor = self.body(x)
        return out


@pytest.fixture
def fake_timm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Install a fake ``timm`` whose ``create_model("fake_tresnet")`` gives :class:`FakeTResNet`."""
    module = types.ModuleType("timm")
    calls: list[dict[str, Any]] = []

    def create_model(name: str, **kwargs: Any) -> nn.Module:
        calls.append({"name": name, **kwargs})
        if name != "fake_tresnet":
            raise RuntimeError(f"Unknown model ({name})")
        return FakeTResNet(width=kwargs.get("width", 8))

    module.create_model = create_model  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", module)
    return module
