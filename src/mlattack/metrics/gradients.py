"""Correlation between the target and non-target gradients (the paper's Fig. 8).

With ``y`` the clean prediction and, for a label set ``S``, ``y*_S`` = ``y`` with ``S`` flipped
(``docs/semantics.md``):

* ``g_t(S)  = −∇ₓ Σ_{c∈S} BCE(f_c(x), y*_c)`` — the direction that moves ``S`` toward its desired
  values;
* ``g_nt(S) =  ∇ₓ Σ_{c∉S} BCE(f_c(x), y_c)`` — the direction that disturbs the other labels.

Reading of Fig. 8 used here: each attack's objective is built on its own split of the labels, so the
correlation an attack faces is ``cos(g_t(S), g_nt(S))`` with ``S`` the set that attack flips,
measured at the clean image:

* ``"mla-c"`` — ``S = Ω`` (MLA-C moves the targets against *all* other labels);
* ``"gmla"`` — ``S = Ψ``, the consistent target set (GMLA moves Ψ against ``Ψ̄``).

A value near 1 means that moving the flip set drags the other labels along (the case where GMLA's
eq. 10 projection is needed). Where either gradient is zero (e.g. an empty complement) the cosine is
undefined and reported as NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mlattack.attacks.base import _frozen_eval
from mlattack.losses import logit_threshold, masked_bce

__all__ = ["gradient_correlation", "target_nontarget_gradients"]


def _check_mask(mask: Tensor, what: str, shape: tuple[int, int]) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{what} has shape {tuple(mask.shape)}, expected {shape} ([B, C])")
    return mask.bool()


def target_nontarget_gradients(
    model: nn.Module, images: Tensor, clean_pred: Tensor, flip_sets: list[Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """``(g_t(S), g_nt(S))`` per image for every ``S`` of ``flip_sets``, from one forward pass.

    The model is put in eval mode with frozen parameters for the call (both restored).

    Args:
        model: maps ``[B, 3, H, W]`` to logits ``[B, C]``.
        images: float ``[B, 3, H, W]``.
        clean_pred: bool ``[B, C]``, ``y``.
        flip_sets: bool ``[B, C]`` masks ``S``.

    Returns:
        one pair of float tensors shaped like ``images`` per mask.
    """
    with _frozen_eval(model), torch.enable_grad():
        inputs = images.detach().clone().requires_grad_(True)
        logits = model(inputs)
        losses: list[Tensor] = []
        for flip_set in flip_sets:
            desired = clean_pred ^ flip_set
            # g_t is the negative gradient of the target loss: take the gradient of −loss.
            losses.append(-masked_bce(logits, desired, flip_set).sum())
            losses.append(masked_bce(logits, clean_pred, ~flip_set).sum())
        gradients = []
        for index, loss in enumerate(losses):
            last = index == len(losses) - 1
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, inputs, retain_graph=not last)
            else:  # an empty label set: no loss, no direction
                grad = torch.zeros_like(inputs)
            gradients.append(grad.detach())
    return [(gradients[2 * k], gradients[2 * k + 1]) for k in range(len(flip_sets))]


def _cosine(first: Tensor, second: Tensor) -> Tensor:
    first, second = first.flatten(1).double(), second.flatten(1).double()
    norms = first.norm(dim=1) * second.norm(dim=1)
    dot = (first * second).sum(dim=1)
    return torch.where(norms > 0, dot / norms.clamp_min(1e-300), math.nan).to(torch.float32)


def gradient_correlation(
    model: nn.Module,
    images: Tensor,
    flip_set: Tensor,
    *,
    targets: Tensor | None = None,
    clean_pred: Tensor | None = None,
    threshold: float = 0.5,
) -> dict[str, Tensor]:
    """Per-image ``cos(g_t, g_nt)`` under the MLA-C and the GMLA objectives (module docstring).

    Args:
        model: maps ``[B, 3, H, W]`` images in ``[0, 1]`` to logits ``[B, C]``.
        images: float ``[B, 3, H, W]``.
        flip_set: bool ``[B, C]``, Ψ (the consistent target set GMLA flips, e.g. GMLA's
            ``result.flip_set`` or ``graph.consistent_target_set(clean_pred, targets)``).
        targets: bool ``[B, C]``, Ω ⊆ Ψ (what MLA-C flips). ``None`` means Ω = Ψ, and then both
            entries coincide.
        clean_pred: bool ``[B, C]``, ``y``; computed as ``sigmoid(model(images)) > threshold`` when
            not given.
        threshold: probability threshold of the prediction.

    Returns:
        ``{"mla-c": cos(g_t(Ω), g_nt(Ω)), "gmla": cos(g_t(Ψ), g_nt(Ψ))}``, float ``[B]`` each (NaN
        where a gradient is zero).
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("images must be a float tensor of shape [B, 3, H, W]")
    logit_cut = logit_threshold(threshold)  # validates before any work
    if clean_pred is None:
        with _frozen_eval(model), torch.no_grad():
            logits = model(images)
        clean_pred = logits > logit_cut
    shape = (images.shape[0], clean_pred.shape[-1])
    clean_pred = _check_mask(clean_pred, "clean_pred", shape).to(images.device)
    psi = _check_mask(flip_set, "flip_set", shape).to(images.device)
    omega = psi if targets is None else _check_mask(targets, "targets", shape).to(images.device)
    outside = omega & ~psi
    if outside.any():
        rows = outside.any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"targets must be a subset of flip_set; they are not for images {rows}")
    (g_t_omega, g_nt_omega), (g_t_psi, g_nt_psi) = target_nontarget_gradients(
        model, images, clean_pred, [omega, psi]
    )
    return {"mla-c": _cosine(g_t_omega, g_nt_omega), "gmla": _cosine(g_t_psi, g_nt_psi)}
