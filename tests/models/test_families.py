"""Every model family: shapes, gradients to the input, preprocessing and argument checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from mlattack.graph import LabelGraph
from mlattack.models import (
    MLGCN,
    ASLModel,
    GlobalPoolClassifier,
    MLDecoderModel,
    available_models,
    build_model,
)

NUM_LABELS = 5
SMALL_DECODER = {"embed_dim": 16, "num_heads": 2, "feedforward_dim": 32}

BACKBONES = [
    {"name": "small-cnn", "widths": [8, 16]},
    {"name": "tiny-resnet", "widths": [8, 16]},
]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b["name"])
def test_forward_shape_and_input_gradient(
    family: str, family_options: dict[str, Any], backbone: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = build_model(
        family, num_labels=NUM_LABELS, backbone=backbone, input_size=32, **family_options
    ).eval()
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    logits = model(images)
    assert logits.shape == (3, NUM_LABELS)
    assert torch.isfinite(logits).all()
    (gradient,) = torch.autograd.grad(logits[:, 1].sum(), images, retain_graph=True)
    assert gradient.shape == images.shape
    assert gradient.abs().sum() > 0
    # image 0's logit does not depend on image 1 (eval mode: no batch statistics)
    (cross,) = torch.autograd.grad(logits[0].sum(), images)
    assert cross[1:].abs().sum() == 0


def test_model_attributes_and_json_config(
    family: str, family_options: dict[str, Any], tiny_graph: LabelGraph
) -> None:
    torch.manual_seed(0)
    model = build_model(
        family,
        graph=tiny_graph,
        backbone={"name": "small-cnn", "widths": [8]},
        **family_options,
    )
    assert model.label_names == tiny_graph.names
    assert model.graph is tiny_graph
    assert model.input_size == 64
    config = model.config()
    assert config["name"] == family
    assert json.loads(json.dumps(config)) == config
    assert config["label_names"] == list(tiny_graph.names)


FAMILY_CLASSES = {
    "small-cnn": GlobalPoolClassifier,
    "ml-gcn": MLGCN,
    "asl": ASLModel,
    "ml-decoder": MLDecoderModel,
}


def test_family_classes_are_registered(family: str, family_options: dict[str, Any]) -> None:
    assert family in available_models()
    assert isinstance(build_model(family, num_labels=5, **family_options), FAMILY_CLASSES[family])
    assert "imagenet-hierarchy" in available_models()


def test_config_rebuilds_same_architecture_with_build_model() -> None:
    torch.manual_seed(0)
    model = build_model(
        "ml-decoder", num_labels=NUM_LABELS, backbone="tiny-resnet", **SMALL_DECODER
    )
    rebuilt = build_model(**model.config())
    assert rebuilt.config() == model.config()
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_resizing_inside_model_matches_explicit_resize() -> None:
    torch.manual_seed(0)
    model = build_model("small-cnn", num_labels=3, input_size=32).eval()
    big = torch.rand(2, 3, 48, 40)
    resized = torch.nn.functional.interpolate(
        big, size=(32, 32), mode="bilinear", align_corners=False, antialias=True
    )
    with torch.no_grad():
        torch.testing.assert_close(model(big), model(resized))


def test_normalisation_uses_mean_and_std() -> None:
    torch.manual_seed(0)
    model = build_model(
        "small-cnn", num_labels=3, input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)
    )
    images = torch.full((1, 3, 16, 16), 0.75)
    normalised = model.preprocess(images)
    assert normalised[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.25])
    assert model.preprocessing["mean"] == [0.5, 0.5, 0.5]


def test_default_label_names_and_count_inference() -> None:
    model = build_model("small-cnn", num_labels=3)
    assert model.label_names == ("label_0", "label_1", "label_2")
    named = build_model("small-cnn", label_names=["a", "b"])
    assert named.label_names == ("a", "b")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_labels": 3, "label_names": ["a", "b"]}, "num_labels=3"),
        ({"label_names": ["a", "a"]}, "'a' appears more than once"),
        ({"num_labels": 0}, "positive integer"),
        ({}, "num_labels, label_names or graph"),
        ({"num_labels": 2, "input_size": 4}, "input_size"),
        ({"num_labels": 2, "std": (1.0, 0.0, 1.0)}, "std"),
        ({"num_labels": 2, "mean": (0.5, 0.5)}, "3 values"),
        ({"num_labels": 2, "backbone": "no-such-net"}, "no-such-net"),
        ({"num_labels": 2, "backbone": {"widths": [4]}}, "needs a 'name'"),
    ],
)
def test_bad_arguments_raise_clear_errors(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, ImportError), match=message):
        build_model("small-cnn", **arguments)


def test_label_names_must_follow_graph_order(tiny_graph: LabelGraph) -> None:
    shuffled = ["cat", "animal", "dog", "vehicle", "car"]
    with pytest.raises(ValueError, match="output 0: 'cat' vs graph label 'animal'"):
        build_model("small-cnn", label_names=shuffled, graph=tiny_graph)
    with pytest.raises(ValueError, match="has 5"):
        build_model("small-cnn", label_names=["a"], graph=tiny_graph)


def test_unknown_model_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet-gcn'.*small-cnn"):
        build_model("resnet-gcn", num_labels=3)


@pytest.mark.parametrize(
    "images",
    [torch.rand(3, 32, 32), torch.rand(2, 1, 32, 32), torch.zeros(2, 3, 32, 32, dtype=torch.uint8)],
)
def test_bad_images_are_rejected(images: torch.Tensor) -> None:
    model = build_model("small-cnn", num_labels=2)
    with pytest.raises((ValueError, TypeError), match="images"):
        model(images)


def test_ml_decoder_groups_and_queries() -> None:
    torch.manual_seed(0)
    fixed = build_model("ml-decoder", num_labels=7, num_groups=3, **SMALL_DECODER)
    assert fixed.head.group_size == 3
    assert fixed(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert "head.queries" not in dict(fixed.named_parameters())
    assert "head.queries" in fixed.state_dict()
    learned = build_model("ml-decoder", num_labels=7, learnable_queries=True, **SMALL_DECODER)
    assert learned.head.num_groups == 7
    assert "head.queries" in dict(learned.named_parameters())
    with pytest.raises(ValueError, match="num_groups"):
        build_model("ml-decoder", num_labels=4, num_groups=5, **SMALL_DECODER)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_model("ml-decoder", num_labels=4, embed_dim=10, num_heads=4)


def test_ml_decoder_has_no_self_attention_between_queries() -> None:
    """Each query's output depends on the image tokens, not on the other queries."""
    torch.manual_seed(0)
    model = build_model("ml-decoder", num_labels=4, dropout=0.0, **SMALL_DECODER).eval()
    features = torch.randn(1, model.backbone.out_channels, 4, 4)
    reference = model.head(features)
    with torch.no_grad():
        model.head.queries[3] = torch.randn(model.head.embed_dim)
    changed = model.head(features)
    torch.testing.assert_close(changed[:, :3], reference[:, :3])
    assert not torch.allclose(changed[:, 3], reference[:, 3])


def test_asl_model_keeps_its_loss_settings() -> None:
    model = build_model("asl", num_labels=3, gamma_neg=2.0, clip=0.1)
    loss = model.criterion()
    assert (loss.gamma_pos, loss.gamma_neg, loss.clip) == (0.0, 2.0, 0.1)
    assert model.config()["gamma_neg"] == 2.0


def test_imagenet_model_is_reachable_from_the_package() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from mlattack import models
    from mlattack.models import imagenet

    assert models.ImageNetHierarchyModel is imagenet.ImageNetHierarchyModel
    with pytest.raises(AttributeError, match="no attribute 'ResNet'"):
        _ = models.ResNet  # type: ignore[attr-defined]
