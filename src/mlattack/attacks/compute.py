"""Compute counted per image: the forward and backward passes an attack's loop makes.

Every loop runs the model as :attr:`AttackProblem.model`, a :class:`PassCounter` around the
model of the call. It adds one forward pass to each image whose row goes through the model, and
one backward pass to each image each time a gradient flows back through the model to its input (a
gradient of the loss with respect to the logits alone is not a backward pass through the model). A
batched vector-Jacobian product of ``k`` cotangents (``is_grads_batched``) is ``k`` passes: PyTorch
runs it as one, so its caller adds the other ``k − 1`` with :meth:`PassCounter.add_backward`. The counts are what
:class:`~mlattack.attacks.base.AttackResult` reports in ``forward_passes`` and
``backward_passes``; the base class's own clean forward pass and its fresh forward pass on the
returned images are not included (one each per image and call).

Which image a batch row is: a loop that runs a subset of its problem's rows says which, with
:meth:`PassCounter.rows` (the AutoPGD engine does so for every direction function); a batch of all
the problem's rows needs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PassCounter"]


class PassCounter(nn.Module):
    """The model of one attack call, counting the passes of each problem row (module docstring).

    ``forward_passes`` and ``backward_passes`` (int64 ``[b]``) are shared with the counters of
    :meth:`subset`, so that a loop on some rows (GMLA's fallbacks) adds to the same images.
    """

    def __init__(
        self,
        inner: nn.Module,
        forward_passes: Tensor,
        backward_passes: Tensor,
        row_map: Tensor,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.forward_passes = forward_passes
        self.backward_passes = backward_passes
        self.row_map = row_map
        self._rows: Tensor | None = None

    @classmethod
    def around(cls, inner: nn.Module, batch: int, device: torch.device) -> PassCounter:
        """A counter of ``batch`` rows, all at zero."""
        zeros = torch.zeros(batch, dtype=torch.int64, device=device)
        return cls(inner, zeros, zeros.clone(), torch.arange(batch, device=device))

    def subset(self, rows: Tensor) -> PassCounter:
        """The counter of the sub-problem of rows ``rows`` (its row ``i`` is row ``rows[i]``)."""
        return PassCounter(
            self.inner, self.forward_passes, self.backward_passes, self.row_map[rows]
        )

    @contextmanager
    def rows(self, rows: Tensor) -> Iterator[None]:
        """Within the block, a batch through the model is rows ``rows`` of the problem."""
        previous, self._rows = self._rows, rows
        try:
            yield
        finally:
            self._rows = previous

    def spent(self, rows: Tensor | None = None) -> Tensor:
        """Backward passes so far of the problem rows ``rows`` (all rows when ``None``)."""
        mapped = self.row_map if rows is None else self.row_map[rows]
        return self.backward_passes[mapped]

    def forward(self, x: Tensor) -> Any:
        if self._rows is None:
            if x.shape[0] != self.row_map.numel():
                raise ValueError(
                    f"the loop ran {x.shape[0]} rows of a problem of {self.row_map.numel()} "
                    "images through problem.model: say which with `with problem.model.rows(rows):` "
                    "so that compute is counted per image"
                )
            images = self.row_map
        else:
            if x.shape[0] != self._rows.numel():
                raise ValueError(
                    f"problem.model got {x.shape[0]} rows inside `rows()` of {self._rows.numel()}"
                )
            images = self.row_map[self._rows]
        if x.requires_grad:
            # A node of its own, so that a hook counts the gradients of this pass only.
            x = x.view_as(x)
            x.register_hook(lambda _: self._add(images, 1))
        self.forward_passes.index_add_(0, images, torch.ones_like(images))
        return self.inner(x)

    def add_backward(self, rows: Tensor | None, count: int) -> None:
        """Add ``count`` backward passes to the problem rows ``rows`` (all when ``None``)."""
        self._add(self.row_map if rows is None else self.row_map[rows], count)

    def _add(self, images: Tensor, count: int) -> None:
        self.backward_passes.index_add_(0, images, torch.full_like(images, count))
