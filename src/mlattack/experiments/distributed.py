"""The ranks of a run: which one this process is, and what they exchange.

Two ways to run ``W`` ranks, both writing ``results-rank{r}.sqlite`` into one run folder:

* **joined** (``torchrun``, one or many nodes): ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR`` are
  set, so the ranks form a ``torch.distributed`` process group (gloo on CPU, NCCL on CUDA). The
  clean scan is then sharded: each rank scans a contiguous share of the image batches and the shares
  are gathered, so every rank holds the whole scan at ``1/W`` of its cost. The ranks also check that
  they agree on the config and on the gathered scan before any unit runs.
* **independent** (e.g. a Slurm job array: ``RANK``/``WORLD_SIZE`` set, no ``MASTER_ADDR``): no
  group; each rank scans everything itself, and the report refuses to merge ranks whose clean scans
  (stored as a hash in every store) differ.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# A rank that waits longer than this on the others (one crashed outside torchrun, say) gives up.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a run."""

    rank: int = 0
    world: int = 1
    joined: bool = False  # a process group connects the ranks

    def share(self, n_items: int) -> range:
        """This rank's contiguous share of ``n_items`` (sizes differ by at most one)."""
        return range(self.rank * n_items // self.world, (self.rank + 1) * n_items // self.world)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (``[value]`` when the ranks are not joined)."""
        if not self.joined:
            return [value]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.joined:
            dist.barrier()


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment, ``(0, 1)`` outside it."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world


@contextmanager
def joined_ranks(device: torch.device) -> Iterator[Ranks]:
    """The ranks of this run, joined in a process group for the ``with`` block when torchrun set
    one up (``MASTER_ADDR``); a group someone else opened is used and left open."""
    rank, world = distributed_rank()
    if world == 1 or ("MASTER_ADDR" not in os.environ and not dist.is_initialized()):
        yield Ranks(rank, world)
        return
    opened = not dist.is_initialized()
    if opened:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    elif (dist.get_rank(), dist.get_world_size()) != (rank, world):
        raise ValueError(
            f"the open process group is rank {dist.get_rank()} of {dist.get_world_size()}, but "
            f"RANK={rank}, WORLD_SIZE={world}"
        )
    try:
        yield Ranks(rank, world, joined=True)
    finally:
        if opened:
            dist.destroy_process_group()


def check_ranks_agree(values: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming the ranks and values when ``values`` (one per rank) differ."""
    for rank, value in enumerate(values):
        if value != values[0]:
            raise ValueError(
                f"torchrun ranks disagree on {what}: rank 0 has {values[0]!r}, rank {rank} has "
                f"{value!r}; every rank must run the same config on the same data and code"
            )


__all__ = ["COLLECTIVE_TIMEOUT", "Ranks", "check_ranks_agree", "distributed_rank", "joined_ranks"]
