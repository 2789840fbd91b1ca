"""Seconds per image of MLA-LP on a 20-label conv net at 32×32 and 224×224 (issue 3).

Each configuration attacks the same smooth random images (one present label to turn off per image,
ε = 8/255, ``steps`` steps without early stop: an image stops early only once every label is on
its desired side) and reports:

- seconds per image for the whole attack call;
- the share spent in the HiGHS solver and the seconds per program (one image, one step);
- the program size (variables of the perturbation ``d``).

Configurations: 32×32 (solved at full resolution, ``d = 3·32·32``), 224×224 with the default
low-resolution program (``lp_size = 112``) and a coarser one (``lp_size = 32``), and, with
``--full-res``, 224×224 at full resolution (``d = 150 528``; tens of seconds per program). ML-DP on
the same inputs is printed as a reference point (its step is a small pseudo-inverse, no program).

Usage: ``python benchmarks/bench_mlalp.py [--images 4] [--steps 3] [--full-res] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack.attacks import mlalp
from mlattack.attacks.mlalp import MLALP
from mlattack.attacks.mldp import MLDP

NUM_LABELS = 20


class ConvNet(nn.Module):
    """Four stride-2 conv blocks, global average pooling, a 20-logit head (seeded weights)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        channels = 3
        for width in (16, 32, 64, 64):
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, NUM_LABELS)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x - 0.5).mean(dim=(2, 3))) * 4


class SolverClock:
    """Wraps :func:`mlalp.solve_min_linf_step` to time the solver and count the programs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._solve = mlalp.solve_min_linf_step

    def __call__(self, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._solve(*args)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def make_inputs(model: nn.Module, images: int, size: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(size)
    # Smooth random images (bilinear upsampling of 8×8 noise), closer to photos than pixel noise.
    coarse = 0.1 + 0.8 * torch.rand((images, 3, 8, 8), generator=generator)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = model(x)
    # The present label nearest the threshold: a target the attack can plausibly reach.
    score = torch.where(logits > 0, logits, torch.full_like(logits, float("inf")))
    if not (logits > 0).any(dim=1).all():
        raise RuntimeError("every benchmark image needs a present label")
    targets = torch.nn.functional.one_hot(score.argmin(dim=1), NUM_LABELS).bool()
    return x, targets


def run(model: nn.Module, size: int, lp_size: int | None, args: argparse.Namespace) -> None:
    images, targets = make_inputs(model, args.images, size)
    clock = SolverClock()
    mlalp.solve_min_linf_step = clock
    try:
        attack = MLALP(model, eps=8 / 255, steps=args.steps, early_stop=False, lp_size=lp_size)
        start = time.perf_counter()
        result = attack(images, targets)
        total = time.perf_counter() - start
    finally:
        mlalp.solve_min_linf_step = clock._solve
    side = size if lp_size is None else min(size, lp_size)
    programs = max(clock.calls, 1)
    print(
        f"MLA-LP {size:>3}x{size:<3} lp {side:>3}x{side:<3} d={3 * side * side:>6}: "
        f"{total / args.images:7.3f} s/image  ({args.steps} steps; solver "
        f"{clock.seconds / total:5.1%} of the time, {clock.seconds / programs:6.3f} s/program; "
        f"success {int(result.success.sum())}/{args.images})"
    )
    reference = MLDP(model, eps=8 / 255, steps=args.steps, early_stop=False)
    start = time.perf_counter()
    reference(images, targets)
    print(f"  ML-DP on the same inputs: {(time.perf_counter() - start) / args.images:7.3f} s/image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-res", action="store_true", help="also 224x224 at full resolution")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ConvNet().eval()
    print(f"{NUM_LABELS}-label conv net, {args.images} images, torch threads {args.threads}")
    # Warm-up: the first attack call pays one-off library initialisation.
    MLALP(model, steps=1)(*make_inputs(model, 1, 32))
    MLDP(model, steps=1)(*make_inputs(model, 1, 32))
    run(model, 32, 32, args)
    run(model, 224, 32, args)
    run(model, 224, 112, args)
    if args.full_res:
        run(model, 224, None, args)


if __name__ == "__main__":
    main()
