"""ssim_per_image and gradient_correlation against independent and closed-form references."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from mlattack.metrics import gradient_correlation, ssim_per_image

MakeLinear = Callable[[torch.Tensor, torch.Tensor], nn.Module]


def test_ssim_identical_images_is_one() -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 3, 24, 24)
    np.testing.assert_allclose(ssim_per_image(images, images.clone()).numpy(), 1.0, atol=1e-6)


def test_ssim_matches_scikit_image_gaussian_ssim() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(1)
    clean = torch.rand(2, 3, 32, 32)
    adv = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    ours = ssim_per_image(clean, adv)
    for i in range(2):
        reference = metrics.structural_similarity(
            clean[i].permute(1, 2, 0).double().numpy(),
            adv[i].permute(1, 2, 0).double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=2,
        )
        assert ours[i].item() == pytest.approx(reference, abs=2e-3)
    assert (ours < 1).all()


def test_ssim_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="at least 11"):
        ssim_per_image(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="adv has shape"):
        ssim_per_image(torch.zeros(1, 3, 16, 16), torch.zeros(2, 3, 16, 16))


def _closed_form(model: nn.Module, images: torch.Tensor, pred: torch.Tensor, flip: torch.Tensor):
    """g_t and g_nt of a linear model: dBCE/dlogit = sigmoid(f) − y, dlogit/dx = W."""
    logits = model(images).detach()
    prob = torch.sigmoid(logits)
    desired = (pred ^ flip).float()
    weight = model.weight.detach()
    g_t = -((prob - desired) * flip) @ weight
    g_nt = ((prob - pred.float()) * ~flip) @ weight
    return torch.nn.functional.cosine_similarity(g_t, g_nt, dim=1)


def test_gradient_correlation_matches_closed_form_on_linear_model(
    make_linear_model: MakeLinear,
) -> None:
    torch.manual_seed(2)
    dim = 3 * 4 * 4
    model = make_linear_model(torch.randn(5, dim) / 4, torch.randn(5))
    images = torch.rand(3, 3, 4, 4)
    pred = model(images).detach() > 0
    omega = torch.zeros(3, 5, dtype=torch.bool)
    omega[torch.arange(3), pred.float().argmax(dim=1)] = True
    psi = omega.clone()
    psi[:, 4] = True
    out = gradient_correlation(model, images, psi, targets=omega, clean_pred=pred)
    assert set(out) == {"mla-c", "gmla"}
    torch.testing.assert_close(out["mla-c"], _closed_form(model, images, pred, omega))
    torch.testing.assert_close(out["gmla"], _closed_form(model, images, pred, psi))


def test_identical_label_rows_are_fully_correlated_and_full_flip_set_is_nan(
    make_linear_model: MakeLinear,
) -> None:
    # Both labels share one weight row: turning label 0 off drags label 1 off (cos = 1). With
    # both in the flip set there is no non-target gradient: NaN.
    row = torch.randn(1, 12)
    model = make_linear_model(torch.cat([row, row]), torch.tensor([5.0, 5.0]))
    model.train()
    images = torch.zeros(1, 3, 2, 2)
    omega = torch.tensor([[True, False]])
    psi = torch.tensor([[True, True]])
    out = gradient_correlation(model, images, psi, targets=omega)
    assert out["mla-c"].item() == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(out["gmla"].item())
    assert model.training and model.weight.requires_grad  # mode and parameters restored


def test_gradient_correlation_validates_subsets(make_linear_model: MakeLinear) -> None:
    model = make_linear_model(torch.randn(2, 12), torch.zeros(2))
    with pytest.raises(ValueError, match="subset of flip_set"):
        gradient_correlation(
            model,
            torch.zeros(1, 3, 2, 2),
            torch.tensor([[False, True]]),
            targets=torch.tensor([[True, False]]),
        )
    with pytest.raises(ValueError, match="flip_set has shape"):
        gradient_correlation(model, torch.zeros(1, 3, 2, 2), torch.tensor([[True, False, True]]))
