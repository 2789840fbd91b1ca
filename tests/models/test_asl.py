"""ASL: the asymmetric loss, and reading the official checkpoints' key layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mlattack.models import (
    ASLModel,
    AsymmetricLoss,
    TResNetBackbone,
    load_asl_checkpoint,
    map_asl_state_dict,
)


def test_asymmetric_loss_hand_computed() -> None:
    # positive with p = 0.75: -(1 - 0.75)^1 * log(0.75)
    # negative with p = 0.5, shifted by clip 0.05 to 0.45: -(0.45)^4 * log(1 - 0.45)
    # negative with p = 0.02 < clip: shifted to 0, no loss
    logits = torch.tensor([[math.log(3.0), 0.0, math.log(0.02 / 0.98)]])
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    loss = AsymmetricLoss(gamma_pos=1, gamma_neg=4, clip=0.05, reduction="none")(logits, targets)
    expected = [-0.25 * math.log(0.75), -(0.45**4) * math.log(0.55), 0.0]
    assert loss[0].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_asymmetric_loss_defaults_match_paper_settings() -> None:
    loss = AsymmetricLoss()
    assert (loss.gamma_pos, loss.gamma_neg, loss.clip) == (0.0, 4.0, 0.05)
    logits = torch.tensor([[0.0]])
    # gamma_pos 0: a positive costs plain -log(p)
    assert loss(logits, torch.ones(1, 1)).item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_asymmetric_loss_without_focusing_or_clip_is_bce() -> None:
    torch.manual_seed(0)
    logits = (torch.randn(4, 6) * 10).requires_grad_()
    logits.data[0, :2] = torch.tensor([60.0, -60.0])  # saturated logits stay finite
    targets = torch.rand(4, 6)  # soft targets too
    targets[0, :2] = torch.tensor([0.0, 1.0])
    asl = AsymmetricLoss(gamma_pos=0, gamma_neg=0, clip=0)(logits, targets)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(asl, bce)
    (asl_gradient,) = torch.autograd.grad(asl, logits)
    (bce_gradient,) = torch.autograd.grad(bce, logits)
    torch.testing.assert_close(asl_gradient, bce_gradient)


def test_asymmetric_loss_reductions_and_easy_negatives() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, requires_grad=True)
    targets = (torch.rand(3, 5) > 0.5).float()
    per_entry = AsymmetricLoss(reduction="none")(logits, targets)
    assert per_entry.shape == (3, 5)
    torch.testing.assert_close(AsymmetricLoss(reduction="sum")(logits, targets), per_entry.sum())
    torch.testing.assert_close(AsymmetricLoss()(logits, targets), per_entry.mean())
    # A confident negative (p < clip) contributes neither loss nor gradient.
    easy = torch.tensor([[-6.0]], requires_grad=True)
    value = AsymmetricLoss()(easy, torch.zeros(1, 1))
    (gradient,) = torch.autograd.grad(value, easy)
    assert value.item() == 0.0 and gradient.item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma_neg": -1.0}, "gamma_neg"),
        ({"gamma_pos": float("nan")}, "gamma_pos"),
        ({"clip": 1.0}, "clip"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_asymmetric_loss_rejects_bad_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        AsymmetricLoss(**kwargs)


def test_asymmetric_loss_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\[2, 3\].*\[2, 4\]"):
        AsymmetricLoss()(torch.zeros(2, 3), torch.zeros(2, 4))


def small_official_asl_state(num_classes: int, bottleneck: int | None = None) -> dict[str, Tensor]:
    """An ASL state dict in the official key layout over a small TResNet (random weights)."""
    backbone = TResNetBackbone(layers=[1, 1, 1, 1], planes=8, input_size=64)
    state = {
        key: (
            torch.rand_like(value) + 0.5 if key.endswith("running_var") else torch.randn_like(value)
        )
        for key, value in backbone.state_dict().items()
    }
    if bottleneck is None:
        state["head.fc.weight"] = torch.randn(num_classes, backbone.out_channels)
        state["head.fc.bias"] = torch.randn(num_classes)
    else:
        state["head.fc.embedding_generator.0.weight"] = torch.randn(
            bottleneck, backbone.out_channels
        )
        state["head.fc.embedding_generator.0.bias"] = torch.randn(bottleneck)
        state["head.fc.FC.weight"] = torch.randn(num_classes, bottleneck)
        state["head.fc.FC.bias"] = torch.randn(num_classes)
    return state


def test_map_asl_state_dict_is_a_prefix_map_and_rejects_other_heads() -> None:
    state = small_official_asl_state(3, bottleneck=4)
    mapped, official = map_asl_state_dict(state)
    assert mapped["backbone.body.conv1.0.weight"] is state["body.conv1.0.weight"]
    assert mapped["bottleneck.weight"] is state["head.fc.embedding_generator.0.weight"]
    assert mapped["classifier.weight"] is state["head.fc.FC.weight"]
    assert official["classifier.bias"] == "head.fc.FC.bias"
    with pytest.raises(ValueError, match="unexpected key 'head.decoder.query_embed.weight'"):
        map_asl_state_dict({"head.decoder.query_embed.weight": torch.ones(1)})


def test_load_asl_checkpoint_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = small_official_asl_state(3)
    path = tmp_path / "asl_official.pth"
    torch.save(
        {"model": state, "num_classes": 3, "idx_to_class": {0: "cat", 1: "dog", 2: "car"}}, path
    )

    model = load_asl_checkpoint(path, input_size=64)

    assert isinstance(model, ASLModel)
    assert model.label_names == ("cat", "dog", "car")
    assert model.input_size == 64 and model.mean == (0.0, 0.0, 0.0)
    assert model.backbone.spec()["layers"] == [1, 1, 1, 1]
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["classifier.weight"], state["head.fc.weight"])
    torch.testing.assert_close(loaded["backbone.body.conv1.1.weight"], state["body.conv1.1.weight"])
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    assert not model.training


def test_load_asl_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_asl_checkpoint(tmp_path / "nothing.pth", input_size=64)
    path = tmp_path / "wrong.pth"
    state = small_official_asl_state(3)
    state["head.fc.weight"] = torch.ones(3, 7)
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=r"wrong.pth: key 'head.fc.weight' has shape \[3, 7\]"):
        load_asl_checkpoint(path, input_size=64)
    path = tmp_path / "count.pth"
    torch.save({"model": small_official_asl_state(3), "num_classes": 80}, path)
    with pytest.raises(ValueError, match="'num_classes' is 80 but 'head.fc.weight' has 3"):
        load_asl_checkpoint(path, input_size=64)


# -- outputs matched by MID ------------------------------------------------------------------
DESCRIPTIONS = {
    "/m/011k07": "Tortoise",
    "/m/035r7c": "Human leg",
    "/m/09w5r": "Human leg",  # two MIDs share this display name in oidv6-class-descriptions.csv
    "/m/0k4j": "Car",
}
CLASS_MIDS = ["/m/0k4j", "/m/035r7c", "/m/011k07", "/m/09w5r"]
# How a published checkpoint may spell them: case, spaces, and a clash the CSV does not have.
MANGLED = {"0": "car ", "1": "Human_leg", "2": "tortoise", "3": "Human_leg"}


def _official_checkpoint(path: Path, num_classes: int, **extra: object) -> Path:
    """An official-layout ASL file over a small TResNet with ``num_classes`` outputs."""
    torch.save(
        {"model": small_official_asl_state(num_classes), "num_classes": num_classes, **extra}, path
    )
    return path


def test_mangled_checkpoint_names_are_replaced_by_mids_of_its_own_class_list(
    tmp_path: Path,
) -> None:
    path = _official_checkpoint(tmp_path / "oi.pth", 4, idx_to_class=MANGLED, class_list=CLASS_MIDS)
    model = load_asl_checkpoint(path, input_size=64, class_descriptions=DESCRIPTIONS)
    assert model.label_mids == tuple(CLASS_MIDS)
    assert model.label_names == (
        "Car", "Human leg (/m/035r7c)", "Tortoise", "Human leg (/m/09w5r)",
    )  # fmt: skip
    # The MIDs survive mlattack's own checkpoint format.
    from mlattack.models import load, save

    again = load(save(model, tmp_path / "saved.pt"))
    assert again.label_mids == tuple(CLASS_MIDS) and again.label_names == model.label_names


def test_user_mid_list_file_names_outputs_and_idx_to_class_of_mids_is_a_class_list(
    tmp_path: Path,
) -> None:
    descriptions = tmp_path / "descriptions.csv"
    descriptions.write_text("".join(f"{m},{n}\n" for m, n in DESCRIPTIONS.items()), "utf-8")
    mid_file = tmp_path / "mids.txt"
    mid_file.write_text("LabelName\n" + "\n".join(CLASS_MIDS) + "\n", "utf-8")
    path = _official_checkpoint(tmp_path / "oi.pth", 4, idx_to_class=MANGLED)
    model = load_asl_checkpoint(path, input_size=64, mids=mid_file, class_descriptions=descriptions)
    assert model.label_mids == tuple(CLASS_MIDS) and model.label_names[0] == "Car"
    by_index = {str(i): mid for i, mid in enumerate(CLASS_MIDS)}
    own = _official_checkpoint(tmp_path / "own.pth", 4, idx_to_class=by_index)
    without_names = load_asl_checkpoint(own, input_size=64)
    assert without_names.label_names == tuple(CLASS_MIDS) == without_names.label_mids


def test_mid_lists_that_do_not_fit_the_outputs_name_the_value(
    tmp_path: Path,
) -> None:
    path = _official_checkpoint(tmp_path / "oi.pth", 4, idx_to_class=MANGLED)
    load = lambda **kw: load_asl_checkpoint(path, input_size=64, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="has 3 entries but the model has 4 outputs"):
        load(mids=CLASS_MIDS[:3])
    with pytest.raises(ValueError, match="entry 2 is 'Tortoise', not a MID"):
        load(mids=["/m/0k4j", "/m/035r7c", "Tortoise", "/m/09w5r"])
    with pytest.raises(
        ValueError, match=r"MID '/m/0k4j' is listed more than once \(entries \[0, 3\]\)"
    ):
        load(mids=["/m/0k4j", "/m/035r7c", "/m/011k07", "/m/0k4j"])
    with pytest.raises(ValueError, match="no display name for 1 of the model's MIDs.*'/m/09w5r'"):
        load(
            mids=CLASS_MIDS,
            class_descriptions={k: v for k, v in DESCRIPTIONS.items() if k != "/m/09w5r"},
        )
    with pytest.raises(ValueError, match="both 'Human_leg'.*mids="):
        load()  # mangled display names alone cannot tell outputs 1 and 3 apart
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("/m/0k4j\nCar\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.txt, line 2: 'Car' is not a MID"):
        load(mids=bad_file)
    own = _official_checkpoint(tmp_path / "own.pth", 4, class_list=CLASS_MIDS)
    swapped = [CLASS_MIDS[1], CLASS_MIDS[0], *CLASS_MIDS[2:]]
    with pytest.raises(
        ValueError, match=r"output 0 is '/m/035r7c' but .*own.pth's own class list says '/m/0k4j'"
    ):
        load_asl_checkpoint(own, input_size=64, mids=swapped)
    short = _official_checkpoint(tmp_path / "short.pth", 4, class_list=CLASS_MIDS[:2])
    with pytest.raises(ValueError, match="short.pth 'class_list': the MID list has 2 entries"):
        load_asl_checkpoint(short, input_size=64)


def test_hierarchy_nodes_are_renamed_to_the_outputs_of_the_same_mid() -> None:
    from mlattack.graph import LabelGraph
    from mlattack.models.classlist import relabel_graph_by_mid

    graph = LabelGraph(
        ["Person", "Human leg", "Wheel"],
        [("Person", "Human leg")],
        metadata={
            "mids": {"Person": "/m/01g317", "Human leg": "/m/035r7c", "Wheel": "/m/083wq"},
            "part_edges": [["Person", "Human leg"]],
            "source": "openimages",
        },
    )
    outputs = {"/m/035r7c": "Human leg (/m/035r7c)", "/m/09w5r": "Human leg (/m/09w5r)",
               "/m/01g317": "Person"}  # fmt: skip
    renamed = relabel_graph_by_mid(graph, outputs)
    # The model's "Human leg" of the other MID is not this node; Wheel is no output: named by MID.
    assert renamed.names == ("Person", "Human leg (/m/035r7c)", "/m/083wq")
    assert renamed.children("Person").tolist() == [1]
    assert renamed.metadata["mids"]["Human leg (/m/035r7c)"] == "/m/035r7c"
    assert renamed.metadata["part_edges"] == [["Person", "Human leg (/m/035r7c)"]]
    assert renamed.metadata["source"] == "openimages"
    bare = LabelGraph(["a", "b"], [("a", "b")])
    assert relabel_graph_by_mid(bare, outputs) is bare  # no MIDs to go by
