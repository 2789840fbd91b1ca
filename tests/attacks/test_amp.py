"""Mixed precision (``amp``), ``channels_last`` and ``compile`` on every attack, on CPU.

bfloat16 autocast runs on CPU, so the ε-ball, the ``[0, 1]`` box and the agreement with float32
are checked here; GPUs add speed, not behaviour. ``compile=True`` is only validated (compiling
would take longer than the whole suite should).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks import ATTACKS, Attack, build_attack
from mlattack.attacks.base import _check_autocast
from mlattack.attacks.mldp import AMP_MARGIN

ATTACK_NAMES = sorted(ATTACKS)
EPS = 0.05
#: Agreement with float32 on the trained model: at most this share of images may differ in success.
SUCCESS_TOLERANCE = 1 / 8
#: bfloat16 keeps 8 significant bits: clean logits of magnitude ~10 agree to a few hundredths.
LOGIT_TOLERANCE = 0.25


def make_attack(name: str, model: nn.Module, graph: Any, **options: Any) -> Attack:
    takes_graph = "graph" in inspect.signature(ATTACKS[name].__init__).parameters
    options.setdefault("eps", EPS)
    options.setdefault("steps", 3 if name == "mla-lp" else 20)
    if name == "ml-dp":
        options.setdefault("margin", AMP_MARGIN)  # the same margin in both precisions
    return build_attack(name, model, graph=graph if takes_graph else None, **options)


def assert_in_ball(adv: Tensor, images: Tensor, eps: float) -> None:
    assert (adv - images).abs().amax() <= eps  # in the images' dtype
    assert (adv.double() - images.double()).abs().amax() <= eps  # in real numbers
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_bf16_keeps_the_budget_and_agrees_with_float32(name: str, trained_hierarchy: Any) -> None:
    model, graph = trained_hierarchy.model, trained_hierarchy.graph
    images, targets = trained_hierarchy.images[:8], trained_hierarchy.targets[:8]
    full = make_attack(name, model, graph)(images, targets)
    mixed = make_attack(name, model, graph, amp="bf16")(images, targets)
    assert mixed.adv.dtype == torch.float32 and mixed.adv_logits.dtype == torch.float32
    assert_in_ball(mixed.adv, images, EPS)
    assert full.success.float().mean() >= 0.5, "the comparison needs an attack that works"
    differing = (mixed.success != full.success).float().mean().item()
    assert differing <= SUCCESS_TOLERANCE, (full.success, mixed.success)
    assert (mixed.clean_logits - full.clean_logits).abs().max() <= LOGIT_TOLERANCE
    # The forward really ran in bfloat16: its logits differ from float32 ones.
    assert not torch.equal(mixed.clean_logits, full.clean_logits)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("image_dtype", [torch.float32, "amp"])
def test_amp_iterates_stay_in_the_images_dtype(
    amp: str, image_dtype: Any, linear_model: nn.Module, make_case: Any
) -> None:
    images, targets = make_case(linear_model, n=3)
    if image_dtype == "amp":
        images = images.to(torch.bfloat16 if amp == "bf16" else torch.float16)
    seen: list[torch.dtype] = []

    class Recording(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = linear_model

        def forward(self, x: Tensor) -> Tensor:
            logits = nn.functional.linear(x.flatten(1), self.inner.weight, self.inner.bias)
            seen.append(logits.dtype)
            return logits

    result = build_attack("mla-u", Recording(), eps=0.3, steps=5, amp=amp)(images, targets)
    assert result.adv.dtype == images.dtype
    assert_in_ball(result.adv, images, 0.3)
    assert set(seen) == {torch.bfloat16 if amp == "bf16" else torch.float16}
    assert result.success.all()


def test_amp_refuses_what_it_cannot_run(linear_model: nn.Module, make_case: Any) -> None:
    images, targets = make_case(linear_model, n=2)
    with pytest.raises(ValueError, match="amp='bf16' needs float32 or torch.bfloat16 images"):
        build_attack("mla-u", linear_model, amp="bf16")(images.double(), targets)
    with pytest.raises(ValueError, match="amp='bf16' needs float32 or torch.bfloat16 images"):
        build_attack("mla-u", linear_model, amp="bf16")(images.half(), targets)
    double_model = copy.deepcopy(linear_model).double()
    with pytest.raises(ValueError, match="amp='fp16' needs a model with float32 parameters"):
        build_attack("mla-u", double_model, amp="fp16")(images, targets)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_amp_on_a_device_without_autocast_names_the_value() -> None:
    with pytest.raises(ValueError, match="amp='bf16' is not available for images on device cuda"):
        _check_autocast("bf16", torch.device("cuda"))


def test_channels_last_changes_layout_not_results(conv_model: nn.Module, make_case: Any) -> None:
    images, targets = make_case(conv_model, n=3)
    reference = build_attack("mla-u", conv_model, eps=EPS, steps=10)(images, targets)
    weights = conv_model.conv.weight.detach().clone()
    result = build_attack("mla-u", conv_model, eps=EPS, steps=10, channels_last=True)(
        images, targets
    )
    assert conv_model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(conv_model.conv.weight.detach(), weights)
    torch.testing.assert_close(result.adv, reference.adv, atol=1e-5, rtol=0)
    assert torch.equal(result.success, reference.success)
    assert_in_ball(result.adv, images, EPS)


def test_compile_is_validated_and_lazy(linear_model: nn.Module) -> None:
    attack = build_attack("mla-u", linear_model, compile=True)
    assert attack.compile is True and attack._compiled is None  # nothing compiled before a call
    assert attack.model is linear_model
    with pytest.raises(TypeError, match="compile must be True or False"):
        build_attack("mla-u", linear_model, compile="yes")
