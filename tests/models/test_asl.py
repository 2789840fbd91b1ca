"""ASL: the asymmetric loss, and reading the official checkpoints' key layout."""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mlattack.models import ASLModel, AsymmetricLoss, load_asl_checkpoint, map_asl_state_dict


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


def test_map_asl_state_dict_renames_inplace_abn_layout() -> None:
    weight = torch.tensor([-0.5, 0.0, 2.0])
    official = {
        "module.body.conv1.0.weight": torch.ones(1),
        "module.body.conv1.1.weight": weight,
        "module.body.conv1.1.running_var": torch.full((3,), 2.0),
        "module.body.layer2.0.conv1.0.0.weight": torch.ones(2),
        "module.body.layer2.0.conv1.0.1.bias": torch.ones(3),
        "module.body.layer2.0.conv1.1.filt": torch.ones(4),
        "module.body.layer2.0.downsample.1.0.weight": torch.ones(5),
        "module.body.layer2.0.downsample.1.1.weight": weight,
        "module.body.layer3.0.se.fc1.weight": torch.ones(6),
        "module.head.fc.weight": torch.ones(7),
        "module.head.fc.bias": torch.ones(8),
    }
    mapped = map_asl_state_dict(official)
    assert set(mapped) == {
        "backbone.net.body.conv1.conv.weight",
        "backbone.net.body.conv1.bn.weight",
        "backbone.net.body.conv1.bn.running_var",
        "backbone.net.body.layer2.0.conv1.conv.weight",
        "backbone.net.body.layer2.0.conv1.bn.bias",
        "backbone.net.body.layer2.0.downsample.1.conv.weight",
        "backbone.net.body.layer2.0.downsample.1.bn.weight",
        "backbone.net.body.layer3.0.se.fc1.weight",
        "classifier.weight",
        "classifier.bias",
    }
    # InPlaceABN scales by |w| + eps: BatchNorm weights become exactly that.
    expected_bn = torch.tensor([0.5 + 1e-5, 1e-5, 2.0 + 1e-5])
    torch.testing.assert_close(mapped["backbone.net.body.conv1.bn.weight"], expected_bn)
    torch.testing.assert_close(
        mapped["backbone.net.body.layer2.0.downsample.1.bn.weight"], expected_bn
    )
    torch.testing.assert_close(
        mapped["backbone.net.body.conv1.bn.running_var"], torch.full((3,), 2.0)
    )


def test_map_asl_state_dict_keeps_timm_layout_and_rejects_other_heads() -> None:
    timm_layout = {"body.conv1.conv.weight": torch.ones(1), "body.conv1.bn.weight": -torch.ones(2)}
    mapped = map_asl_state_dict(timm_layout)
    torch.testing.assert_close(mapped["backbone.net.body.conv1.bn.weight"], -torch.ones(2))
    with pytest.raises(ValueError, match="'head.decoder.query_embed.weight'"):
        map_asl_state_dict(
            {"body.conv1.0.weight": torch.ones(1), "head.decoder.query_embed.weight": torch.ones(1)}
        )


# Official (InPlaceABN) names -> names inside the fake timm TResNet of conftest.py.
OFFICIAL_TO_TIMM = {
    "body.conv1.0": "body.conv1.conv",
    "body.conv1.1": "body.conv1.bn",
    "body.layer1.0.conv1.0": "body.layer1.0.conv1.conv",
    "body.layer1.0.conv1.1": "body.layer1.0.conv1.bn",
    "body.layer1.0.conv2.0.0": "body.layer1.0.conv2.conv",
    "body.layer1.0.conv2.0.1": "body.layer1.0.conv2.bn",
    "body.layer1.0.downsample.1.0": "body.layer1.0.downsample.1.conv",
    "body.layer1.0.downsample.1.1": "body.layer1.0.downsample.1.bn",
}


def test_load_asl_checkpoint_end_to_end(tmp_path: Path, fake_timm: types.ModuleType) -> None:
    torch.manual_seed(0)
    reference = fake_timm.create_model("fake_tresnet")
    timm_state = reference.state_dict()
    official: dict[str, torch.Tensor] = {}
    for official_prefix, timm_prefix in OFFICIAL_TO_TIMM.items():
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            key = f"{timm_prefix}.{suffix}"
            if key in timm_state:
                official[f"{official_prefix}.{suffix}"] = torch.randn_like(timm_state[key])
    official["body.layer1.0.conv2.1.filt"] = torch.ones(1, 1, 3, 3)
    official["head.fc.weight"] = torch.randn(3, 8)
    official["head.fc.bias"] = torch.randn(3)
    path = tmp_path / "asl_official.pth"
    torch.save(
        {"model": official, "num_classes": 3, "idx_to_class": {"0": "cat", "1": "dog", "2": "car"}},
        path,
    )

    model = load_asl_checkpoint(path, backbone="timm:fake_tresnet")

    assert isinstance(model, ASLModel)
    assert model.label_names == ("cat", "dog", "car")
    assert model.input_size == 32 and model.mean == (0.0, 0.0, 0.0)
    state = model.state_dict()
    torch.testing.assert_close(state["classifier.weight"], official["head.fc.weight"])
    torch.testing.assert_close(
        state["backbone.net.body.layer1.0.conv2.conv.weight"],
        official["body.layer1.0.conv2.0.0.weight"],
    )
    torch.testing.assert_close(
        state["backbone.net.body.conv1.bn.weight"], official["body.conv1.1.weight"].abs() + 1e-5
    )
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert not model.training


def test_load_asl_checkpoint_errors(tmp_path: Path, fake_timm: types.ModuleType) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_asl_checkpoint(tmp_path / "nothing.pth", backbone="timm:fake_tresnet")
    path = tmp_path / "wrong.pth"
    torch.save(
        {
            "model": {
                "body.conv1.0.weight": torch.ones(8, 48, 3, 3),
                "head.fc.weight": torch.ones(3, 8),
                "head.fc.bias": torch.ones(3),
            }
        },
        path,
    )
    with pytest.raises(ValueError, match="wrong.pth: weights do not fit"):
        load_asl_checkpoint(path, backbone="timm:fake_tresnet")
    path = tmp_path / "count.pth"
    torch.save({"model": {"head.fc.weight": torch.ones(3, 8)}, "num_classes": 80}, path)
    with pytest.raises(ValueError, match="num_classes=80"):
        load_asl_checkpoint(path, backbone="timm:fake_tresnet")
