"""The contract every attack follows: :class:`Attack` and :class:`AttackResult`.

The base class owns everything that is not the attack's own loop (foolbox-3 style): it validates the
inputs, puts the model in eval mode with frozen parameters (and restores both), computes the clean
prediction and the flip set, runs the subclass loop on the images that can be attacked, clips what
comes back to the ε-ball and to ``[0, 1]``, and recomputes the adversarial prediction with a fresh
forward pass. A subclass implements only :meth:`Attack._attack` (and, like GMLA, may override
:meth:`Attack._flip_set`).
"""

from __future__ import annotations

import abc
import math
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal, final

import torch
from torch import Tensor, nn

from mlattack._validation import check_int
from mlattack.losses import logit_threshold as probability_to_logit

__all__ = ["Attack", "AttackProblem", "AttackResult", "LoopOutput", "gradient_failed"]

Direction = Literal["off", "on"]
OnInvalid = Literal["raise", "skip"]


@dataclass
class AttackResult:
    """What an attack returns (all tensors on the device of the input images).

    Attributes:
        adv: float ``[B, 3, H, W]`` in ``[0, 1]`` with ``‖adv − images‖∞ ≤ eps`` per image (equal to the
            input for images that were not attacked).
        images: float ``[B, 3, H, W]``, the clean images the attack received (a detached copy of
            the caller's tensor), so that metrics such as SSIM need nothing else.
        clean_pred: bool ``[B, C]``, the model's prediction on the clean images (``y``).
        adv_pred: bool ``[B, C]``, recomputed by the base class from ``adv`` by a fresh forward pass.
        targets: bool ``[B, C]``, the labels asked to flip (Ω).
        flip_set: bool ``[B, C]``, the labels the attack tried to flip (Ψ): Ω except for GMLA, where it
            is the consistent target set.
        success: bool ``[B]``, every label of Ω flipped (False for unattacked images).
        iterations: int64 ``[B]``, gradient steps taken (0 for unattacked images).
        eps: float ``[B]``, the L∞ budget of each image.
        attacked: bool ``[B]``, False for images skipped by ``on_invalid="skip"``.
        gradient_failed: bool ``[B]``, a zero or non-finite gradient was met; the image stopped there.
        clean_logits: float ``[B, C]``, detached.
        adv_logits: float ``[B, C]``, detached, from the fresh forward pass on ``adv``.
        name: the attack's name, e.g. ``"GMLA"``.
    """

    adv: Tensor
    images: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    targets: Tensor
    flip_set: Tensor
    success: Tensor
    iterations: Tensor
    eps: Tensor
    attacked: Tensor
    gradient_failed: Tensor
    clean_logits: Tensor
    adv_logits: Tensor
    name: str


@dataclass(frozen=True)
class AttackProblem:
    """The attacked images and everything a subclass loop needs about them (``b`` rows).

    ``desired`` is ``y*``: the clean prediction with the flip set toggled. A label ``c`` of image ``i``
    is on its desired side when ``(logit > logit_threshold) == desired[i, c]``.
    """

    images: Tensor  # float [b, ...], the clean images (never modified)
    eps: Tensor  # float [b]
    clean_logits: Tensor  # float [b, C]
    clean_pred: Tensor  # bool [b, C]  (y)
    targets: Tensor  # bool [b, C]  (Omega)
    flip_set: Tensor  # bool [b, C]  (Psi)
    desired: Tensor  # bool [b, C]  (y*)
    logit_threshold: float
    seed: int | None  # seeds random draws per image (see :meth:`random_start`); None: global RNG

    def flip_set_reached(self, logits: Tensor, rows: Tensor | None = None) -> Tensor:
        """bool ``[n]``: every label of Ψ is on its desired side for ``logits`` (rows ``rows``)."""
        flip_set = self.flip_set if rows is None else self.flip_set[rows]
        desired = self.desired if rows is None else self.desired[rows]
        on_desired_side = (logits > self.logit_threshold) == desired
        return (on_desired_side | ~flip_set).all(dim=1)

    def project(self, candidate: Tensor, rows: Tensor | None = None) -> Tensor:
        """Clip ``candidate`` to the ε-ball around the clean images (rows ``rows``) and to ``[0, 1]``."""
        images = self.images if rows is None else self.images[rows]
        eps = self.eps if rows is None else self.eps[rows]
        return _project(candidate, images, eps)

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Per-pixel ``(lower, upper)`` of the feasible set: the ε-ball intersected with ``[0, 1]``.

        ``torch.clamp(candidate, lower, upper)`` is then :meth:`project` in one pass.
        """
        radius = self.eps.view(-1, *([1] * (self.images.dim() - 1))).to(self.images.dtype)
        return (self.images - radius).clamp_min(0.0), (self.images + radius).clamp_max(1.0)

    def random_start(self) -> Tensor:
        """A uniform random point of each image's ε-ball (clipped to ``[0, 1]``).

        With a seed, each image's draw depends only on the seed and the image content, so the start
        is the same whether an image is attacked alone or inside a batch.
        """
        if self.seed is None:
            unit = torch.rand(self.images.shape, dtype=self.images.dtype)
        else:
            draws = []
            for image in self.images:
                generator = torch.Generator(device="cpu")
                generator.manual_seed(_image_seed(self.seed, image))
                draws.append(torch.rand(image.shape, generator=generator, dtype=image.dtype))
            unit = torch.stack(draws)
        noise = (2 * unit - 1).to(self.images.device) * self.eps.view(
            -1, *[1] * (self.images.dim() - 1)
        )
        return self.project(self.images + noise)


@dataclass
class LoopOutput:
    """What a subclass loop returns for the ``b`` rows of its :class:`AttackProblem`."""

    adv: Tensor  # float [b, ...]; the base class clips it again
    iterations: Tensor  # int64 [b]
    gradient_failed: Tensor  # bool [b]


def gradient_failed(gradient: Tensor) -> Tensor:
    """bool ``[b]``: the per-image gradient ``[b, ...]`` is all zero or has a NaN/Inf entry."""
    # One pass: the largest magnitude is 0 for a zero gradient, NaN or Inf for a non-finite one.
    peak = torch.linalg.vector_norm(gradient.flatten(1), ord=math.inf, dim=1)
    return ~(peak > 0) | torch.isinf(peak)


def _project(candidate: Tensor, images: Tensor, eps: Tensor) -> Tensor:
    radius = eps.view(-1, *([1] * (images.dim() - 1))).to(images.dtype)
    return torch.minimum(torch.maximum(candidate, images - radius), images + radius).clamp(0.0, 1.0)


def _image_seed(seed: int, image: Tensor) -> int:
    """A seed mixing ``seed`` with the image content (not its batch slot)."""
    content = image.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return (seed * 1_000_003 + zlib.crc32(content)) % (2**63)


def _describe_rows(rows: Tensor, limit: int = 10) -> str:
    indices = rows.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored exactly afterwards.

    Freezing the parameters matters for speed: the input gradient then needs no weight gradients
    (DESIGN §6: two input gradients from one forward cost 1.40× instead of 1.64×).
    """
    modes = [(module, module.training) for module in model.modules()]
    params = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in params:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in params:
            param.requires_grad_(requires_grad)


class Attack(abc.ABC):
    """Base class of all multi-label attacks (see DESIGN §3.2).

    Call an attack as ``result = attack(images, targets)``: ``images`` float ``[B, 3, H, W]`` in
    ``[0, 1]``, ``targets`` bool ``[B, C]`` (Ω, the labels to flip). The model maps images to
    **logits** ``[B, C]``; label ``c`` is predicted present when ``sigmoid(logit) > threshold``.

    Args:
        model: the multi-label classifier (an ``nn.Module`` returning logits).
        eps: L∞ budget (default, may be overridden per call, also per image).
        steps: iteration budget; ``None`` uses the attack's ``default_steps``.
        threshold: probability threshold of the prediction, in ``(0, 1)``.
        early_stop: stop an image at the first iterate that puts its whole flip set on the desired
            side, and return that iterate.
        random_start: start from a uniform random point of the ε-ball instead of the clean image.
        seed: seeds the random start (same seed and image -> same start, whatever the batch).
        verbose: show a tqdm progress bar.
        direction: ``"off"``: targets are present labels to turn off; ``"on"``: absent labels to
            turn on.
        on_invalid: ``"raise"`` a ``ValueError`` for images whose targets do not fit ``direction``
            (or whose clean logits are not finite), or ``"skip"`` them (``attacked`` False).
    """

    name: ClassVar[str] = "attack"
    default_steps: ClassVar[int] = 100

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float = 0.01,
        steps: int | None = None,
        threshold: float = 0.5,
        early_stop: bool = True,
        random_start: bool = False,
        seed: int | None = None,
        verbose: bool = False,
        direction: Direction = "off",
        on_invalid: OnInvalid = "raise",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"eps must be a number, got {type(eps).__name__}")
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        steps = self.default_steps if steps is None else steps
        check_int(steps, "steps", minimum=1)
        probability_to_logit(threshold)  # validates
        if direction not in ("off", "on"):
            raise ValueError(f"direction must be 'off' or 'on', got {direction!r}")
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.model = model
        self.eps = float(eps)
        self.steps = steps
        self.threshold = float(threshold)
        self.early_stop = bool(early_stop)
        self.random_start = bool(random_start)
        self.seed = seed
        self.verbose = bool(verbose)
        self.direction: Direction = direction
        self.on_invalid: OnInvalid = on_invalid

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps}, steps={self.steps}, "
            f"threshold={self.threshold}, direction={self.direction!r})"
        )

    @property
    def logit_threshold(self) -> float:
        """The threshold on logits equivalent to ``threshold`` on probabilities."""
        return probability_to_logit(self.threshold)

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _attack(self, problem: AttackProblem) -> LoopOutput:
        """Run the attack loop on the rows of ``problem`` (model frozen, in eval mode, grad enabled)."""

    def _flip_set(self, clean_pred: Tensor, targets: Tensor, clean_logits: Tensor) -> Tensor:
        """Ψ for valid rows when the caller gives no ``flip_set``: Ω itself unless overridden."""
        return targets.clone()

    # ------------------------------------------------------------------ public entry point
    @final
    def __call__(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        eps: float | Tensor | None = None,
        flip_set: Tensor | None = None,
    ) -> AttackResult:
        """Attack ``images`` so that the labels in ``targets`` flip; see the class docstring.

        Works under ``torch.no_grad()`` and ``torch.inference_mode()`` too: the attack needs input
        gradients, so both are lifted for the duration of the call.
        """
        with torch.inference_mode(False):
            return self._run(images, targets, eps, flip_set)

    def _run(
        self, images: Tensor, targets: Tensor, eps: float | Tensor | None, flip_set: Tensor | None
    ) -> AttackResult:
        images = self._check_images(images)
        batch = images.shape[0]
        targets = self._check_label_mask(targets, "targets", images)
        eps_per_image = self._check_eps(eps, images)
        with _frozen_eval(self.model):
            clean_logits = self._forward(images)
            if clean_logits.shape != targets.shape:
                raise ValueError(
                    f"the model returned logits of shape {tuple(clean_logits.shape)} but targets have "
                    f"shape {tuple(targets.shape)} (expected [B, C] with B images and C labels)"
                )
            if clean_logits.min() >= 0 and clean_logits.max() <= 1:
                warnings.warn(
                    "all model outputs lie in [0, 1]: the model probably returns probabilities; "
                    "attacks expect logits",
                    UserWarning,
                    stacklevel=2,
                )
            clean_pred = clean_logits > self.logit_threshold
            attacked = self._valid_rows(targets, clean_pred, clean_logits)
            if flip_set is not None:
                flip_set = self._check_label_mask(flip_set, "flip_set", images)
                missing = (targets & ~flip_set).any(dim=1)
                if missing.any():
                    raise ValueError(
                        f"flip_set must contain every target; it misses some for images "
                        f"{_describe_rows(missing)}"
                    )
            else:
                flip_set = targets.clone()
                if attacked.any():
                    flip_set[attacked] = self._flip_set(
                        clean_pred[attacked], targets[attacked], clean_logits[attacked]
                    ).to(device=images.device, dtype=torch.bool)
            adv = images.clone()
            iterations = torch.zeros(batch, dtype=torch.int64, device=images.device)
            failed = torch.zeros(batch, dtype=torch.bool, device=images.device)
            # A zero budget leaves nothing to search: those images are returned as they are.
            run = attacked & (eps_per_image > 0)
            if run.any():
                problem = self._problem(
                    images, run, eps_per_image, clean_logits, clean_pred, targets, flip_set
                )
                with torch.enable_grad():
                    out = self._attack(problem)
                adv[run] = _project(out.adv.detach().to(images.dtype), problem.images, problem.eps)
                iterations[run] = out.iterations.to(device=images.device, dtype=torch.int64)
                failed[run] = out.gradient_failed.to(device=images.device, dtype=torch.bool)
            adv_logits = self._forward(adv)
        adv_pred = adv_logits > self.logit_threshold
        success = attacked & ((adv_pred != clean_pred) | ~targets).all(dim=1)
        return AttackResult(
            adv=adv,
            images=images,
            clean_pred=clean_pred,
            adv_pred=adv_pred,
            targets=targets,
            flip_set=flip_set,
            success=success,
            iterations=iterations,
            eps=eps_per_image,
            attacked=attacked,
            gradient_failed=failed,
            clean_logits=clean_logits,
            adv_logits=adv_logits,
            name=self.name,
        )

    # ------------------------------------------------------------------ helpers
    def _forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            logits = self.model(images)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape [B, C], got {shape}")
        return logits.detach()

    def _problem(
        self,
        images: Tensor,
        rows: Tensor,
        eps: Tensor,
        clean_logits: Tensor,
        clean_pred: Tensor,
        targets: Tensor,
        flip_set: Tensor,
    ) -> AttackProblem:
        return AttackProblem(
            images=images[rows],
            eps=eps[rows],
            clean_logits=clean_logits[rows],
            clean_pred=clean_pred[rows],
            targets=targets[rows],
            flip_set=flip_set[rows],
            desired=clean_pred[rows] ^ flip_set[rows],
            logit_threshold=self.logit_threshold,
            seed=self.seed,
        )

    def _check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(
                f"images must have shape [B, 3, H, W] (rank 4), got rank {images.dim()} "
                f"shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch")
        images = images.detach()
        finite = torch.isfinite(images).flatten(1).all(dim=1)
        if not finite.all():
            raise ValueError(f"images contain NaN or Inf (images {_describe_rows(~finite)})")
        inside = ((images >= 0) & (images <= 1)).flatten(1).all(dim=1)
        if not inside.all():
            raise ValueError(
                f"images must lie in [0, 1]; images {_describe_rows(~inside)} do not "
                f"(min {images.min().item():.4g}, max {images.max().item():.4g})"
            )
        # A private copy: the caller's tensor is never modified, not even through a view.
        return images.clone()

    def _check_label_mask(self, mask: Tensor, what: str, images: Tensor) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
        if mask.dim() != 2:
            raise ValueError(f"{what} must have shape [B, C], got shape {tuple(mask.shape)}")
        if mask.shape[0] != images.shape[0]:
            raise ValueError(
                f"{what} has {mask.shape[0]} rows but there are {images.shape[0]} images"
            )
        if mask.dtype != torch.bool:
            if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
                raise ValueError(f"{what} must be a bool (or 0/1) tensor, got dtype {mask.dtype}")
            mask = mask != 0
        return mask.to(images.device).clone()

    def _check_eps(self, eps: float | Tensor | None, images: Tensor) -> Tensor:
        batch = images.shape[0]
        if eps is None:
            eps = self.eps
        if isinstance(eps, Tensor):
            if eps.dim() == 0:
                eps = eps.expand(batch)
            if eps.shape != (batch,):
                raise ValueError(
                    f"a per-image eps must have shape [{batch}] (one per image), got {tuple(eps.shape)}"
                )
            values = eps.detach().to(device=images.device, dtype=images.dtype).clone()
        elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
            values = torch.full((batch,), float(eps), device=images.device, dtype=images.dtype)
        else:
            raise TypeError(f"eps must be a number or a tensor, got {type(eps).__name__}")
        bad = ~torch.isfinite(values) | (values < 0)
        if bad.any():
            raise ValueError(
                f"eps must be finite and >= 0; it is not for images {_describe_rows(bad)}"
            )
        return values

    def _valid_rows(self, targets: Tensor, clean_pred: Tensor, clean_logits: Tensor) -> Tensor:
        """bool ``[B]`` of attackable images; raises (or lets them be skipped) for the others."""
        empty = ~targets.any(dim=1)
        if empty.any():
            raise ValueError(
                f"targets are empty (no label to flip) for images {_describe_rows(empty)}"
            )
        problems: list[str] = []
        invalid = torch.zeros_like(empty)
        non_finite = ~torch.isfinite(clean_logits).all(dim=1)
        if non_finite.any():
            invalid |= non_finite
            problems.append(
                f"the model's logits are NaN/Inf for images {_describe_rows(non_finite)}"
            )
        # Turn-off targets must be predicted present; turn-on targets must be predicted absent.
        wrong_side = targets & (~clean_pred if self.direction == "off" else clean_pred)
        if wrong_side.any():
            invalid |= wrong_side.any(dim=1)
            state = (
                "not predicted present" if self.direction == "off" else "already predicted present"
            )
            pairs = wrong_side.nonzero().tolist()
            listed = ", ".join(f"image {i} label {c}" for i, c in pairs[:10])
            more = f", ... ({len(pairs)} in all)" if len(pairs) > 10 else ""
            problems.append(
                f"targets to turn {self.direction} are {state}: {listed}{more} "
                f"(pass on_invalid='skip' to leave such images unattacked)"
            )
        if problems and self.on_invalid == "raise":
            raise ValueError("; ".join(problems))
        return ~invalid
