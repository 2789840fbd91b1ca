"""Cost of the model families for attacks and training, as ratios measured within one run.

For each family on the default ``small-cnn`` backbone (20 labels, 64x64 images, batch 32):

- ``attack step``: one forward + ``autograd.grad`` to the input, parameters frozen (what an
  attack iteration costs);
- ``train step``: one forward + backward + AdamW step.

Ratios are to the ``small-cnn`` family in the same run (the machine is shared and noisy; medians
of ``--repeats``).  Also compares the default backbone widths with doubled ones.

    python benchmarks/bench_models.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mlattack.models import build_model

NUM_LABELS = 20
SIZE = 64
BATCH = 32


def _median_seconds(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _attack_step(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x = images.clone().requires_grad_(True)
        torch.autograd.grad(model(x)[:, 0].sum(), x)

    return step


def _train_step(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    targets = (torch.rand(images.shape[0], NUM_LABELS) > 0.8).float()

    def step() -> None:
        loss = nn.functional.binary_cross_entropy_with_logits(model(images), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return step


def _family_options(name: str) -> dict[str, Any]:
    if name == "ml-gcn":
        labels = torch.rand(500, NUM_LABELS) > 0.8
        return {"label_embeddings": torch.randn(NUM_LABELS, 384), "train_labels": labels}
    if name == "ml-decoder":
        return {"embed_dim": 256, "feedforward_dim": 1024}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(BATCH, 3, SIZE, SIZE)

    rows = []
    variants: list[tuple[str, str, dict[str, Any]]] = [
        (name, name, _family_options(name)) for name in ("small-cnn", "ml-gcn", "asl", "ml-decoder")
    ]
    variants.append(
        (
            "small-cnn, widths x2",
            "small-cnn",
            {"backbone": {"name": "small-cnn", "widths": [32, 64, 128, 128]}},
        )
    )
    variants.append(("small-cnn, tiny-resnet", "small-cnn", {"backbone": "tiny-resnet"}))
    for label, name, options in variants:
        model = build_model(name, num_labels=NUM_LABELS, **options)
        train = _median_seconds(_train_step(model.train(), images), args.repeats)
        model.eval().requires_grad_(False)
        attack = _median_seconds(_attack_step(model, images), args.repeats)
        rows.append((label, attack, train))

    base_attack, base_train = rows[0][1], rows[0][2]
    print(f"batch {BATCH} x {SIZE}px, {NUM_LABELS} labels, {args.threads} threads")
    print(f"{'model':<26}{'attack step':>14}{'ratio':>8}{'train step':>14}{'ratio':>8}")
    for label, attack, train in rows:
        print(
            f"{label:<26}{attack * 1e3:>11.1f} ms{attack / base_attack:>8.2f}"
            f"{train * 1e3:>11.1f} ms{train / base_train:>8.2f}"
        )


if __name__ == "__main__":
    main()
