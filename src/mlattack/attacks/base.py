"""The contract every attack follows: :class:`Attack` and :class:`AttackResult`.

The base class owns everything that is not the attack's own loop (foolbox-3 style): it validates the
inputs, puts the model in eval mode with frozen parameters (and restores both), computes the clean
prediction and the flip set, runs the subclass loop on the images that can be attacked, clips what
comes back to the ε-ball and to ``[0, 1]``, and recomputes the adversarial prediction with a fresh
forward pass. A subclass implements only :meth:`Attack._attack` (and, like GMLA, may override
:meth:`Attack._flip_set`).

Numbers are never silently wrong: the ε-ball holds exactly in the images' own dtype (also float16
and bfloat16, see :meth:`AttackProblem.bounds`), NaN or infinite logits never count as a flip, and
the precision options (``amp``, ``channels_last``, ``compile``) change how the model runs, never the
budget.
"""

from __future__ import annotations

import abc
import math
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any, ClassVar, Literal, final, overload

import torch
from torch import Tensor, nn

from mlattack._validation import check_bool, check_int, check_number, check_seed
from mlattack.losses import logit_threshold as probability_to_logit

from .compute import PassCounter

__all__ = [
    "AMP_DTYPES",
    "Attack",
    "AttackProblem",
    "AttackResult",
    "LoopOutput",
    "gradient_failed",
]

Direction = Literal["off", "on", "mixed"]
OnInvalid = Literal["raise", "skip"]
Amp = Literal["bf16", "fp16"]

#: The autocast dtype of each ``amp`` option value.
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class AttackResult:
    """What an attack returns (all tensors on the device of the input images).

    Attributes:
        adv: float ``[B, 3, H, W]`` in ``[0, 1]``, in the dtype of ``images``, with
            ``‖adv − images‖∞ ≤ eps`` per image, exactly: in real numbers and when the difference is
            computed in that dtype (equal to the input for images that were not attacked).
        images: float ``[B, 3, H, W]``, the clean images the attack received (a detached copy of
            the caller's tensor), so that metrics such as SSIM need nothing else.
        clean_pred: bool ``[B, C]``, the model's prediction on the clean images (``y``).
        adv_pred: bool ``[B, C]``, recomputed by the base class from ``adv`` by a fresh forward pass
            (``logit > threshold``; meaningless where ``nonfinite_logits``, a NaN compares False).
        targets: bool ``[B, C]``, the labels asked to flip (Ω).
        flip_set: bool ``[B, C]``, the labels the attack tried to flip (Ψ): Ω except for GMLA, where it
            is the consistent target set.
        success: bool ``[B]``, every label of Ω flipped and every logit of the fresh forward pass
            finite (False for unattacked images and wherever ``nonfinite_logits``).
        iterations: int64 ``[B]``, gradient steps taken (0 for unattacked images).
        eps: float ``[B]``, the L∞ budget of each image (float32, or float64 for float64 images).
        attacked: bool ``[B]``, False for images skipped by ``on_invalid="skip"``.
        gradient_failed: bool ``[B]``, a zero or non-finite gradient (or non-finite logits at an
            iterate) was met; the image stopped there.
        clean_logits: float ``[B, C]``, detached.
        adv_logits: float ``[B, C]``, detached, from the fresh forward pass on ``adv``.
        name: the attack's name, e.g. ``"GMLA"``.
        nonfinite_logits: bool ``[B]``, the fresh forward pass on ``adv`` gave a NaN or infinite
            logit: such an image never counts as a success. Filled from ``adv_logits`` when not
            given.
        skip_reasons: per image, why it was not attacked (``""`` for attacked images), e.g.
            ``"no target"``, ``"clean logits not finite"``, ``"target label 2 not predicted
            present"`` (``on_invalid="skip"``); several reasons are joined by ``"; "``.
        forward_passes: int64 ``[B]``, the image's rows through the model in the attack's loop
            and its stages (:mod:`mlattack.attacks.compute`). The base class's clean forward pass
            and its fresh forward pass on ``adv`` (one each per image and call) are not included.
            Zeros when not given.
        backward_passes: int64 ``[B]``, the image's backward passes through the model (one per
            gradient with respect to the input; a batched product of ``k`` cotangents counts
            ``k``). Zeros when not given.
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
    nonfinite_logits: Tensor = None  # type: ignore[assignment]  # filled in __post_init__
    skip_reasons: tuple[str, ...] = ()  # filled in __post_init__
    forward_passes: Tensor = None  # type: ignore[assignment]  # filled in __post_init__
    backward_passes: Tensor = None  # type: ignore[assignment]  # filled in __post_init__

    def __post_init__(self) -> None:
        if self.nonfinite_logits is None:
            self.nonfinite_logits = ~torch.isfinite(self.adv_logits).all(dim=1)
        if not self.skip_reasons:
            self.skip_reasons = tuple("" if a else "not attacked" for a in self.attacked.tolist())
        zeros = torch.zeros(self.adv.shape[0], dtype=torch.int64, device=self.adv.device)
        if self.forward_passes is None:
            self.forward_passes = zeros
        if self.backward_passes is None:
            self.backward_passes = zeros.clone()


@dataclass(frozen=True)
class AttackProblem:
    """The attacked images and everything a subclass loop needs about them (``b`` rows).

    ``desired`` is ``y*``: the clean prediction with the flip set toggled. A label ``c`` of image ``i``
    is on its desired side when ``(logit > logit_threshold) == desired[i, c]``. ``eps`` is each
    image's budget as the caller gave it (float64 in problems built by :class:`Attack`, so that no
    rounding enlarges it); :meth:`bounds` turns it into exact per-pixel bounds in the images' dtype.
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
    #: The module every forward pass of the loop runs: the attacked model under the call's
    #: ``amp``, ``channels_last`` and ``compile`` options (the model itself without them), in a
    #: :class:`~mlattack.attacks.compute.PassCounter` in problems built by :class:`Attack`.
    model: nn.Module
    #: Backward passes each image may spend (``max_backward``); ``None``: no limit.
    max_backward: int | None = None

    @contextmanager
    def rows(self, rows: Tensor) -> Iterator[None]:
        """Within the block, a batch through :attr:`model` is rows ``rows`` of the problem (for
        the per-image counts, :mod:`mlattack.attacks.compute`)."""
        if isinstance(self.model, PassCounter):
            with self.model.rows(rows):
                yield
        else:
            yield

    def backward_spent(self, rows: Tensor | None = None) -> Tensor:
        """int64 ``[n]``: backward passes spent so far by rows ``rows`` (all when ``None``)."""
        if isinstance(self.model, PassCounter):
            return self.model.spent(rows)
        count = self.images.shape[0] if rows is None else rows.numel()
        return torch.zeros(count, dtype=torch.int64, device=self.images.device)

    def add_backward(self, rows: Tensor | None, count: int) -> None:
        """Count ``count`` more backward passes for rows ``rows`` (see
        :meth:`~mlattack.attacks.compute.PassCounter.add_backward`)."""
        if isinstance(self.model, PassCounter):
            self.model.add_backward(rows, count)

    def within_budget(self, rows: Tensor | None, cost: Tensor | int) -> Tensor:
        """bool ``[n]``: rows ``rows`` can spend ``cost`` more backward passes within
        ``max_backward`` (all True without a budget)."""
        spent = self.backward_spent(rows)
        if self.max_backward is None:
            return torch.ones_like(spent, dtype=torch.bool)
        return spent + cost <= self.max_backward

    def subset(self, rows: Tensor) -> AttackProblem:
        """The sub-problem of rows ``rows`` (every per-image field indexed alike; its passes are
        counted for the same images)."""
        batch = self.images.shape[0]
        picked: dict[str, Any] = {
            field.name: value[rows]
            for field in fields(self)
            if isinstance(value := getattr(self, field.name), Tensor)
            and value.dim() > 0
            and value.shape[0] == batch
        }
        if isinstance(self.model, PassCounter):
            picked["model"] = self.model.subset(rows)
        return replace(self, **picked)

    def flip_set_reached(self, logits: Tensor, rows: Tensor | None = None) -> Tensor:
        """bool ``[n]``: every label of Ψ is on its desired side for ``logits`` (rows ``rows``).

        A row with any NaN or infinite logit is never reached (NaN compares False, which would
        otherwise read as "turned off").
        """
        flip_set = self.flip_set if rows is None else self.flip_set[rows]
        desired = self.desired if rows is None else self.desired[rows]
        on_desired_side = (logits > self.logit_threshold) == desired
        finite = torch.isfinite(logits).all(dim=1)
        return (on_desired_side | ~flip_set).all(dim=1) & finite

    def project(self, candidate: Tensor, rows: Tensor | None = None) -> Tensor:
        """Clip ``candidate`` to the ε-ball around the clean images (rows ``rows``) and to ``[0, 1]``.

        The result has the images' dtype and lies within :meth:`bounds`.
        """
        lower, upper = self.bounds()
        if rows is not None:
            lower, upper = lower[rows], upper[rows]
        return torch.clamp(candidate.to(lower.dtype), lower, upper)

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Per-pixel ``(lower, upper)`` of the feasible set: the ε-ball intersected with ``[0, 1]``.

        Both are in the images' dtype and exact: every value ``v`` of that dtype between them has
        ``|v − x| ≤ eps`` in real numbers and when ``v − x`` is computed in the dtype (float16 and
        bfloat16 round 0.03 up to 0.0300; the radius used is the largest value of the dtype that
        does not exceed ``eps``). ``torch.clamp(candidate, lower, upper)`` is then :meth:`project`
        in one pass. Computed once per problem.
        """
        return self._bounds

    @cached_property
    def _bounds(self) -> tuple[Tensor, Tensor]:
        return _exact_bounds(self.images, self.eps)

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
        radius = self.eps.to(device=self.images.device, dtype=self.images.dtype)
        noise = (2 * unit - 1).to(self.images.device) * _per_image(radius, self.images)
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


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """``values [b]`` shaped to broadcast over ``like [b, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _round_down(values: Tensor, dtype: torch.dtype) -> Tensor:
    """The largest value of ``dtype`` not above each (non-negative) float64 entry of ``values``."""
    rounded = values.to(dtype)
    above = rounded.double() > values
    return torch.where(above, torch.nextafter(rounded, torch.zeros_like(rounded)), rounded)


def _exact_bounds(images: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """See :meth:`AttackProblem.bounds`."""
    dtype = images.dtype
    eps64 = _per_image(eps.to(device=images.device, dtype=torch.float64), images)
    radius = _round_down(eps64, dtype)  # representable, so the in-dtype check below is exact
    radius64 = radius.double()
    x64 = images.double()
    lower = (x64 - radius64).clamp_min(0.0).to(dtype)
    upper = (x64 + radius64).clamp_max(1.0).to(dtype)

    def outside() -> tuple[Tensor, Tensor]:
        low_out = (x64 - lower.double() > radius64) | (images - lower > radius)
        high_out = (upper.double() - x64 > radius64) | (upper - images > radius)
        return low_out, high_out

    # Round-to-nearest may have put a bound one step outside the ball: step it back towards the
    # image until both the float64 and the in-dtype distance fit (one step suffices in practice).
    for _ in range(4):
        low_out, high_out = outside()
        if not bool(low_out.any() or high_out.any()):
            return lower, upper
        lower = torch.where(low_out, torch.nextafter(lower, images), lower)
        upper = torch.where(high_out, torch.nextafter(upper, images), upper)
    low_out, high_out = outside()  # the image itself always fits
    return torch.where(low_out, images, lower), torch.where(high_out, images, upper)


def _image_seed(seed: int, image: Tensor) -> int:
    """A seed mixing ``seed`` with the image content (not its batch slot)."""
    content = image.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return (seed * 1_000_003 + zlib.crc32(content)) % (2**63)


def _check_feasible(
    adv: Tensor, images: Tensor, attacked: Tensor, problem: AttackProblem | None
) -> None:
    """What an attack returns lies in the ε-ball and ``[0, 1]`` (:meth:`AttackProblem.bounds`) on
    the attacked rows and equals the clean images elsewhere, also after the fresh forward pass; a
    ``RuntimeError`` naming the images otherwise (it would be a bug: the model only ever sees
    copies)."""
    outside = torch.zeros_like(attacked)
    if problem is not None:
        lower, upper = problem.bounds()
        rows = adv[attacked]
        outside[attacked] = ((rows < lower) | (rows > upper)).flatten(1).any(dim=1)
    outside[~attacked] = (adv[~attacked] != images[~attacked]).flatten(1).any(dim=1)
    if outside.any():
        raise RuntimeError(
            f"the adversarial images {_describe_rows(outside)} left the eps-ball or [0, 1] (or an "
            "unattacked image changed); this is a bug in mlattack, please report it"
        )


def score_adversarial(
    adv_logits: Tensor, clean_pred: Tensor, targets: Tensor, attacked: Tensor, threshold: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(adv_pred, success, nonfinite)`` of the fresh forward pass at the returned images: an
    attacked image succeeds where every label of Ω left its clean side and every logit is finite
    (a NaN or infinite logit is never a success). Shared by the attacks and the stages."""
    nonfinite = ~torch.isfinite(adv_logits).all(dim=1)
    adv_pred = adv_logits > threshold
    flipped = ((adv_pred != clean_pred) | ~targets).all(dim=1)
    return adv_pred, attacked & flipped & ~nonfinite, nonfinite


def _refuse_meta(tensor: Tensor, what: str) -> None:
    if tensor.is_meta:
        raise ValueError(
            f"{what} is on the 'meta' device (a shape without data): give a tensor with values"
        )


def _describe_rows(rows: Tensor, limit: int = 10) -> str:
    indices = rows.nonzero().flatten().tolist()
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; both restored exactly afterwards.

    Freezing the parameters matters for speed: the input gradient then needs no weight gradients
    (ResNet-18, batch 16 at 96 px, 2 CPU cores: two input gradients from one forward cost 1.40×
    one forward and one gradient instead of 1.64×).
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


class _PreparedModel(nn.Module):
    """The attacked model as every forward pass of a call runs it (see :class:`Attack`).

    Each forward pass gets its own copy of the input: a model that writes into its input (an
    in-place normalisation, ``x.data.clamp_()``) can then neither move an iterate or the returned
    ``adv`` out of the ε-ball nor trip autograd on a leaf tensor. The copy is taken in
    ``channels_last`` layout when asked; the forward runs under ``torch.autocast`` when an ``amp``
    dtype is set. With ``upcast_half_logits`` (``amp``, or a float16/bfloat16 model), half-precision
    logits come back as float32, so that losses and the threshold test run in float32 whatever the
    model's precision. Backward passes follow the dtypes autocast chose in the forward (they run
    outside the context, as PyTorch recommends).
    """

    def __init__(
        self,
        inner: nn.Module,
        device_type: str,
        amp_dtype: torch.dtype | None,
        channels_last: bool,
        upcast_half_logits: bool,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.upcast_half_logits = upcast_half_logits

    def forward(self, x: Tensor) -> Any:
        layout = (
            torch.channels_last if self.channels_last and x.dim() == 4 else torch.preserve_format
        )
        x = x.clone(memory_format=layout)
        if self.amp_dtype is None:
            logits = self.inner(x)
        else:
            with torch.autocast(self.device_type, dtype=self.amp_dtype):
                logits = self.inner(x)
        if (
            self.upcast_half_logits
            and isinstance(logits, Tensor)
            and logits.dtype in (torch.float16, torch.bfloat16)
        ):
            return logits.float()
        return logits


_DETACHED_LOGITS = (
    "the model's output (its logits) does not require grad, so the attack cannot differentiate it "
    "with respect to the images: the model's forward detaches its result (.detach(), "
    "torch.no_grad(), a NumPy round trip or an integer operation)"
)


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> Any:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _check_budget(value: Any, name: str) -> float:
    """An L∞ budget on ``[0, 1]`` images: a number in ``(0, 1]``."""
    return check_number(value, name, minimum=0.0, maximum=1.0, exclusive_minimum=True)


def _check_autocast(amp: str, device: torch.device) -> None:
    """Refuse ``amp`` where ``torch.autocast`` cannot run its dtype on ``device``."""
    dtype = AMP_DTYPES[amp]
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.autocast(device.type, dtype=dtype):
                enabled = torch.is_autocast_enabled(device.type)
        notes = [str(warning.message) for warning in caught]
    except RuntimeError as exc:  # a device type autocast does not know
        enabled, notes = False, [str(exc)]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        enabled, notes = False, [*notes, "this GPU has no bfloat16 support"]
    if not enabled or notes:
        details = f": {'; '.join(notes)}" if notes else ""
        raise ValueError(f"amp={amp!r} is not available for images on device {device}{details}")


class Attack(abc.ABC):
    """Base class of all multi-label attacks (see ``docs/semantics.md``).

    Call an attack as ``result = attack(images, targets)``: ``images`` float ``[B, 3, H, W]`` in
    ``[0, 1]``, ``targets`` bool ``[B, C]`` (Ω, the labels to flip). The model maps images to
    **logits** ``[B, C]``; label ``c`` is predicted present when ``sigmoid(logit) > threshold``.

    **Several budgets in one call** (foolbox's pattern): ``attack(images, targets, eps=[e1, e2])``
    returns a list of :class:`AttackResult`, one per budget in the order given. The budgets must
    be strictly increasing. The clean forward pass and the flip set Ψ are computed once and shared;
    each budget is then attacked from the clean images on its own, so each result equals a call
    with that single ``eps``.

    **Numbers.** The images stay in their own dtype throughout (iterates, ε-ball, ``adv``), and
    ``‖adv − images‖∞ ≤ eps`` holds exactly, also for float16 and bfloat16 images (see
    :meth:`AttackProblem.bounds`). Without ``amp`` the images must have the dtype of the model's
    parameters: float64 images for a float32 model are refused rather than silently cast, so the
    budget holds in the dtype the caller gave. The loops and the threshold test see float32 logits
    at least (half-precision logits, from ``amp`` or a float16/bfloat16 model, are upcast). NaN or
    infinite logits on an evaluated image never count as a flip (``AttackResult.nonfinite_logits``).
    Every forward pass gives the model a copy of its input, so a model that writes into its input
    cannot move the images or ``adv``; the returned ``adv`` is checked against the ε-ball and
    ``[0, 1]`` after the fresh forward pass.

    Args:
        model: the multi-label classifier (an ``nn.Module`` returning logits).
        eps: L∞ budget in ``(0, 1]`` (default, may be overridden per call, also per image).
        steps: iteration budget; ``None`` uses the attack's ``default_steps``.
        threshold: probability threshold of the prediction, in ``(0, 1)``.
        early_stop: stop an image at the first iterate that puts its whole flip set on the desired
            side, and return that iterate.
        random_start: start from a uniform random point of the ε-ball instead of the clean image.
        seed: seeds the random start (same seed and image -> same start, whatever the batch).
        verbose: show a tqdm progress bar.
        direction: ``"off"``: targets are present labels to turn off; ``"on"``: absent labels to
            turn on; ``"mixed"``: both at once, as the paper defines Ω (present targets turn off,
            absent ones turn on). ``"off"`` and ``"on"`` check that every target is on that side.
        on_invalid: ``"raise"`` a ``ValueError`` for images whose targets are empty or do not fit
            ``direction`` (or whose clean logits are not finite), or ``"skip"`` them (``attacked``
            False, the reason in ``AttackResult.skip_reasons``).
        amp: ``None`` (the model's own precision), ``"bf16"`` or ``"fp16"``: every forward pass of
            the model (clean, attack loop, final) runs under ``torch.autocast`` with that dtype on
            the images' device and its logits come back as float32; the backward passes follow the
            forward's dtypes. Images may be float32 or the ``amp`` dtype, the model float32.
            Refused, naming the value, where autocast cannot run it (e.g. ``"bf16"`` on a GPU
            without bfloat16, any ``amp`` on a device without autocast). ``"fp16"`` can underflow
            small input gradients (reported in ``gradient_failed``); bfloat16 has float32's range.
        channels_last: convert the model (in place: the memory layout of its 4-D parameters, not
            their values) and every model input to ``torch.channels_last``. Opt-in: it speeds up
            convolutional nets on CUDA, above all under ``amp``, and can slow them on CPU.
        compile: run the model through ``torch.compile``, compiled lazily at the first call and
            kept for later ones (the first call pays for the compilation).
        max_backward: ``None`` (no limit) or a budget ``≥ 1`` of backward passes per image
            (``AttackResult.backward_passes``, :mod:`mlattack.attacks.compute`): an image stops
            where its next evaluation would exceed it (as at the end of its steps: its best
            iterate is returned), so that attacks can be compared at equal compute. The start is
            always evaluated once, even if that alone costs more; ML-DP and MLA-LP linearise their
            working batch together, so an image may be charged up to one more linearisation.

    Raises:
        TypeError: an argument of the wrong type, at construction or per call (``early_stop="false"``,
            ``random_start=1``, ``threshold=None`` or ``"0.5"``, ``seed=1.5``, non-tensor images).
        ValueError: a value out of range or inconsistent: ``eps`` outside ``(0, 1]``, an ``eps``
            list that is empty or not strictly increasing, masks of the wrong shape, images outside
            ``[0, 1]`` or of another dtype than the model, tensors or model parameters on the
            ``meta`` device, a model that does not return float logits ``[B, C]`` on the images'
            device in their precision (float32, or float64 for float64 images), returns them
            detached from the images or of another shape under autograd, an ``amp`` the device
            cannot run. Every message names the argument (or the model output) at fault.

    Exceptions raised by the model itself propagate unchanged; the model's modes and
    ``requires_grad`` flags are restored in every case.
    """

    #: The attack's name in results (a class attribute; a composite sets its own).
    name: str = "attack"
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
        amp: Amp | None = None,
        channels_last: bool = False,
        compile: bool = False,
        max_backward: int | None = None,
    ) -> None:
        self.model = model
        self.eps = _check_budget(eps, "eps")
        self.steps = check_int(self.default_steps if steps is None else steps, "steps", minimum=1)
        probability_to_logit(threshold)  # validates
        self.threshold = float(threshold)
        self.early_stop = check_bool(early_stop, "early_stop")
        self.random_start = check_bool(random_start, "random_start")
        self.seed = check_seed(seed)
        self.verbose = check_bool(verbose, "verbose")
        self.direction: Direction = _check_choice(direction, "direction", ("off", "on", "mixed"))
        self.on_invalid: OnInvalid = _check_choice(on_invalid, "on_invalid", ("raise", "skip"))
        self.amp: Amp | None = None if amp is None else _check_choice(amp, "amp", ("bf16", "fp16"))
        self.channels_last = check_bool(channels_last, "channels_last")
        self.compile = check_bool(compile, "compile")
        self.max_backward = (
            None if max_backward is None else check_int(max_backward, "max_backward", minimum=1)
        )

    def __repr__(self) -> str:
        """The budget, steps, threshold and direction, and every other shared option that is not
        at its default (each of them acts)."""
        shown = [
            f"eps={self.eps}",
            f"steps={self.steps}",
            f"threshold={self.threshold}",
            f"direction={self.direction!r}",
        ]
        defaults: dict[str, Any] = {
            "early_stop": True,
            "random_start": False,
            "seed": None,
            "on_invalid": "raise",
            "amp": None,
            "channels_last": False,
            "compile": False,
            "max_backward": None,
        }
        shown += [
            f"{name}={getattr(self, name)!r}"
            for name, default in defaults.items()
            if getattr(self, name) != default
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def model(self) -> nn.Module:
        """The attacked model, as given (also during a call: a loop runs
        :attr:`AttackProblem.model`, the model under the precision options)."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._model = model
        self._compiled: nn.Module | None = None

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
    @overload
    def __call__(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        eps: float | Tensor | None = None,
        flip_set: Tensor | None = None,
    ) -> AttackResult: ...

    @overload
    def __call__(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        eps: list[float] | tuple[float, ...],
        flip_set: Tensor | None = None,
    ) -> list[AttackResult]: ...

    @final
    def __call__(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        eps: float | Tensor | list[float] | tuple[float, ...] | None = None,
        flip_set: Tensor | None = None,
    ) -> AttackResult | list[AttackResult]:
        """Attack ``images`` so that the labels in ``targets`` flip; see the class docstring.

        ``eps``: ``None`` (the constructor's), a number, a tensor ``[B]`` of per-image budgets, or
        a list of numbers (several budgets: a list of results comes back).

        Works under ``torch.no_grad()`` and ``torch.inference_mode()`` too: the attack needs input
        gradients, so both are lifted for the duration of the call.
        """
        with torch.inference_mode(False):
            return self._run(images, targets, eps, flip_set)

    def _run(
        self,
        images: Tensor,
        targets: Tensor,
        eps: float | Tensor | list[float] | tuple[float, ...] | None,
        flip_set: Tensor | None,
    ) -> AttackResult | list[AttackResult]:
        images = self._check_images(images)
        targets = self._check_label_mask(targets, "targets", images)
        several = isinstance(eps, (list, tuple))
        if isinstance(eps, (list, tuple)):
            budgets = self._check_eps_list(eps, images)
        else:
            budgets = [self._check_eps(eps, images)]
        if flip_set is not None:
            flip_set = self._check_flip_set(flip_set, targets, images)
        self._check_precision(images)
        with _frozen_eval(self._model), self._prepared_model(images.device) as running:
            clean_logits = self._clean_logits(running, images, targets.shape)
            if clean_logits.min() >= 0 and clean_logits.max() <= 1:
                warnings.warn(
                    "all model outputs lie in [0, 1]: the model probably returns probabilities; "
                    "attacks expect logits",
                    UserWarning,
                    stacklevel=3,
                )
            clean_pred = clean_logits > self.logit_threshold
            attacked, skip_reasons = self._valid_rows(targets, clean_pred, clean_logits)
            if flip_set is None:
                flip_set = targets.clone()
                if attacked.any():
                    flip_set[attacked] = self._flip_set(
                        clean_pred[attacked], targets[attacked], clean_logits[attacked]
                    ).to(device=images.device, dtype=torch.bool)
            results = [
                self._attack_with_budget(
                    running,
                    images,
                    targets,
                    flip_set,
                    budget,
                    clean_logits,
                    clean_pred,
                    attacked,
                    skip_reasons,
                )
                for budget in budgets
            ]
        return results if several else results[0]

    def _attack_with_budget(
        self,
        running: nn.Module,
        images: Tensor,
        targets: Tensor,
        flip_set: Tensor,
        eps: Tensor,
        clean_logits: Tensor,
        clean_pred: Tensor,
        attacked: Tensor,
        skip_reasons: tuple[str, ...],
    ) -> AttackResult:
        """Run the loop on the attacked rows at budget ``eps`` (float64 ``[B]``) and score it;
        ``running`` is the model as this call runs it (:meth:`_prepared_model`)."""
        batch = images.shape[0]
        adv = images.clone()
        problem: AttackProblem | None = None
        iterations = torch.zeros(batch, dtype=torch.int64, device=images.device)
        failed = torch.zeros(batch, dtype=torch.bool, device=images.device)
        forward_passes = torch.zeros_like(iterations)
        backward_passes = torch.zeros_like(iterations)
        if attacked.any():
            problem = self._problem(
                running, images, attacked, eps, clean_logits, clean_pred, targets, flip_set
            )
            out = self._run_loop(problem)
            assert isinstance(problem.model, PassCounter)
            forward_passes[attacked] = problem.model.forward_passes.to(images.device)
            backward_passes[attacked] = problem.model.backward_passes.to(images.device)
            found = out.adv.detach().to(device=images.device, dtype=images.dtype)
            # A loop must return finite iterates; any other entry falls back to the clean pixel.
            found = torch.where(torch.isfinite(found), found, problem.images)
            adv[attacked] = problem.project(found)
            iterations[attacked] = out.iterations.to(device=images.device, dtype=torch.int64)
            failed[attacked] = out.gradient_failed.to(device=images.device, dtype=torch.bool)
        adv_logits = self._forward(running, adv, targets.shape)
        _check_feasible(adv, images, attacked, problem)
        adv_pred, success, nonfinite = score_adversarial(
            adv_logits, clean_pred, targets, attacked, self.logit_threshold
        )
        return AttackResult(
            adv=adv,
            images=images,
            clean_pred=clean_pred,
            adv_pred=adv_pred,
            targets=targets,
            flip_set=flip_set,
            success=success,
            iterations=iterations,
            eps=eps.to(torch.promote_types(images.dtype, torch.float32)),
            attacked=attacked,
            gradient_failed=failed,
            clean_logits=clean_logits,
            adv_logits=adv_logits,
            name=self.name,
            nonfinite_logits=nonfinite,
            skip_reasons=skip_reasons,
            forward_passes=forward_passes,
            backward_passes=backward_passes,
        )

    def _run_loop(self, problem: AttackProblem) -> LoopOutput:
        try:
            with torch.enable_grad():
                return self._attack(problem)
        except RuntimeError as exc:
            # autograd's wording for a loss that has no path back to the images
            if "does not require grad" in str(exc):
                raise ValueError(_DETACHED_LOGITS) from exc
            raise

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _prepared_model(self, device: torch.device) -> Iterator[nn.Module]:
        """The model as every forward pass of a call runs it: under the precision options, on a
        copy of its input, and giving float32 logits for a half-precision model (see
        :class:`_PreparedModel`)."""
        half_model = any(
            param.dtype in (torch.float16, torch.bfloat16) for param in self._model.parameters()
        )
        if self.channels_last:
            self._model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.compile and self._compiled is None:
            self._compiled = torch.compile(self._model)  # type: ignore[assignment]
        inner = self._compiled if self.compile and self._compiled is not None else self._model
        amp_dtype = None if self.amp is None else AMP_DTYPES[self.amp]
        # Handed down the call, never stored: the attack object keeps nothing of a call.
        yield _PreparedModel(
            inner, device.type, amp_dtype, self.channels_last, amp_dtype is not None or half_model
        )

    def _clean_logits(self, running: nn.Module, images: Tensor, shape: torch.Size) -> Tensor:
        """The clean forward pass, run with autograd on as the loops run the model, so that logits
        the loops could not use (detached, of another shape, dtype or device) are refused here,
        before any loop, in one line naming the problem. ``shape`` is the targets' ``[B, C]``."""
        with torch.enable_grad():
            logits = running(images.detach().requires_grad_(True))
        if isinstance(logits, Tensor) and logits.dim() == 2 and logits.shape != shape:
            with torch.no_grad():
                plain = running(images)
            if isinstance(plain, Tensor) and plain.shape == shape:
                raise ValueError(
                    f"the model's logits change shape under autograd: {tuple(plain.shape)} under "
                    f"torch.no_grad() but {tuple(logits.shape)} with gradients enabled (the attacks "
                    f"differentiate the model: it must return [B, C] = {tuple(shape)} either way)"
                )
        self._check_logits(logits, images, shape, "")
        if not logits.requires_grad:
            raise ValueError(_DETACHED_LOGITS)
        return logits.detach()

    def _forward(self, running: nn.Module, images: Tensor, shape: torch.Size) -> Tensor:
        """Logits of ``images`` without autograd (the fresh forward pass on ``adv``), checked."""
        with torch.no_grad():
            logits = running(images)
        self._check_logits(logits, images, shape, " in the final forward pass (torch.no_grad())")
        return logits.detach()

    def _check_logits(self, logits: Any, images: Tensor, shape: torch.Size, where: str) -> None:
        """Float ``[B, C]`` logits on the images' device, in float32 or the images' wider dtype."""
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            found = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits of shape [B, C], got {found}{where}")
        if logits.device != images.device:
            raise ValueError(
                f"the model returned logits on device {logits.device.type!r} for images on "
                f"{images.device.type!r}{where}: they must be on the images' device"
            )
        if not logits.is_floating_point():
            raise ValueError(f"the model must return float logits, got dtype {logits.dtype}{where}")
        if logits.shape != shape:
            raise ValueError(
                f"the model returned logits of shape {tuple(logits.shape)} but targets have "
                f"shape {tuple(shape)} (expected [B, C] with B images and C labels){where}"
            )
        expected = torch.promote_types(images.dtype, torch.float32)
        if logits.dtype != expected:
            raise ValueError(
                f"the model returned {logits.dtype} logits for {images.dtype} images{where}: the "
                f"attacks need {expected} logits, the precision of the images (cast the model's "
                f"output, or give images and model one dtype; amp='bf16' or 'fp16' runs a float32 "
                f"model in half precision)"
            )

    def _problem(
        self,
        running: nn.Module,
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
            model=PassCounter.around(running, int(rows.sum()), images.device),
            max_backward=self.max_backward,
        )

    def _check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(
                f"images must have shape [B, 3, H, W] (rank 4), got rank {images.dim()} "
                f"shape {tuple(images.shape)}"
            )
        _refuse_meta(images, "images")
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

    def _check_precision(self, images: Tensor) -> None:
        """Images and model dtypes that fit together (class docstring, *Numbers*), and ``amp``;
        a model tensor on the ``meta`` device (a shape without data) is refused by name."""
        for name, tensor in (*self._model.named_parameters(), *self._model.named_buffers()):
            if tensor.is_meta:
                raise ValueError(
                    f"the model's tensor {name!r} is on the 'meta' device (a shape without data): "
                    "load the model's weights (e.g. to_empty() then load_state_dict()) first"
                )
        model_dtypes = {p.dtype for p in self._model.parameters() if p.is_floating_point()}
        if self.amp is None:
            if len(model_dtypes) == 1 and images.dtype not in model_dtypes:
                (model_dtype,) = model_dtypes
                raise ValueError(
                    f"images are {images.dtype} but the model's parameters are {model_dtype}: "
                    f"pass images.to({model_dtype}) (or, for lower precision, amp='bf16' or 'fp16')"
                )
            return
        allowed = {torch.float32, AMP_DTYPES[self.amp]}
        if images.dtype not in allowed:
            raise ValueError(
                f"amp={self.amp!r} needs float32 or {AMP_DTYPES[self.amp]} images, got {images.dtype}"
            )
        if not model_dtypes <= allowed:
            raise ValueError(
                f"amp={self.amp!r} needs a model with float32 parameters, got "
                f"{', '.join(sorted(str(dtype) for dtype in model_dtypes))}"
            )
        _check_autocast(self.amp, images.device)

    def _check_label_mask(self, mask: Tensor, what: str, images: Tensor) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(mask).__name__}")
        _refuse_meta(mask, what)
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

    def _check_flip_set(self, flip_set: Tensor, targets: Tensor, images: Tensor) -> Tensor:
        flip_set = self._check_label_mask(flip_set, "flip_set", images)
        if flip_set.shape != targets.shape:
            raise ValueError(
                f"flip_set has shape {tuple(flip_set.shape)} but targets have shape "
                f"{tuple(targets.shape)} (one column per label)"
            )
        missing = (targets & ~flip_set).any(dim=1)
        if missing.any():
            raise ValueError(
                f"flip_set must contain every target; it misses some for images "
                f"{_describe_rows(missing)}"
            )
        return flip_set

    def _check_eps(self, eps: float | Tensor | None, images: Tensor) -> Tensor:
        """Per-image budgets, float64 ``[B]`` (exact: no rounding to the images' dtype)."""
        batch = images.shape[0]
        if eps is None:
            eps = self.eps
        if not isinstance(eps, Tensor):
            value = _check_budget(eps, "eps")
            return torch.full((batch,), value, dtype=torch.float64, device=images.device)
        _refuse_meta(eps, "eps")
        if eps.dim() == 0:
            eps = eps.expand(batch)
        if eps.shape != (batch,):
            raise ValueError(
                f"a per-image eps must have shape [{batch}] (one per image), got {tuple(eps.shape)}"
            )
        if not eps.is_floating_point():
            raise TypeError(f"a per-image eps tensor must be floating point, got {eps.dtype}")
        values = eps.detach().to(device=images.device, dtype=torch.float64).clone()
        bad = ~torch.isfinite(values) | (values <= 0) | (values > 1)
        if bad.any():
            raise ValueError(
                f"eps must be a number in (0, 1] (images are in [0, 1]); it is not for images "
                f"{_describe_rows(bad)} (got {values[bad].tolist()[:5]})"
            )
        return values

    def _check_eps_list(self, eps: list[float] | tuple[float, ...], images: Tensor) -> list[Tensor]:
        """Several budgets: numbers in ``(0, 1]``, strictly increasing; one ``[B]`` tensor each."""
        if len(eps) == 0:
            raise ValueError(f"eps={list(eps)!r} is empty: give at least one budget")
        values = [_check_budget(value, f"eps[{i}]") for i, value in enumerate(eps)]
        for i in range(1, len(values)):
            if values[i] <= values[i - 1]:
                raise ValueError(
                    f"a list of eps must be strictly increasing (no repeats), got {list(eps)!r}: "
                    f"eps[{i}]={eps[i]!r} after eps[{i - 1}]={eps[i - 1]!r}"
                )
        return [
            torch.full((images.shape[0],), value, dtype=torch.float64, device=images.device)
            for value in values
        ]

    def _valid_rows(
        self, targets: Tensor, clean_pred: Tensor, clean_logits: Tensor
    ) -> tuple[Tensor, tuple[str, ...]]:
        """bool ``[B]`` of attackable images and, per image, why it is not attackable (``""``
        for those that are); raises for the others unless ``on_invalid="skip"``."""
        reasons: list[list[str]] = [[] for _ in range(targets.shape[0])]
        problems: list[str] = []
        empty = ~targets.any(dim=1)
        if empty.any():
            problems.append(
                f"targets are empty (no label to flip) for images {_describe_rows(empty)}"
            )
            for i in empty.nonzero().flatten().tolist():
                reasons[i].append("no target")
        non_finite = ~torch.isfinite(clean_logits).all(dim=1)
        if non_finite.any():
            problems.append(
                f"the model's logits are NaN/Inf for images {_describe_rows(non_finite)}"
            )
            for i in non_finite.nonzero().flatten().tolist():
                reasons[i].append("clean logits not finite")
        # Turn-off targets must be predicted present; turn-on targets must be predicted absent.
        if self.direction == "mixed":
            wrong_side = torch.zeros_like(targets)
        else:
            wrong_side = targets & (~clean_pred if self.direction == "off" else clean_pred)
        if wrong_side.any():
            state = (
                "not predicted present" if self.direction == "off" else "already predicted present"
            )
            pairs = wrong_side.nonzero().tolist()
            listed = ", ".join(f"image {i} label {c}" for i, c in pairs[:10])
            more = f", ... ({len(pairs)} in all)" if len(pairs) > 10 else ""
            problems.append(
                f"targets to turn {self.direction} are {state}: {listed}{more} "
                f"(direction must be one of 'off', 'on', 'mixed': pass direction='mixed' to turn "
                f"present targets off and absent ones on together, or on_invalid='skip' to leave "
                f"such images unattacked)"
            )
            for i, c in pairs:
                reasons[i].append(f"target label {c} {state}")
        if problems and self.on_invalid == "raise":
            raise ValueError("; ".join(problems))
        attacked = torch.tensor([not r for r in reasons], dtype=torch.bool, device=targets.device)
        return attacked, tuple("; ".join(r) for r in reasons)
