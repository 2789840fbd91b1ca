"""Speed of the AutoPGD attacks, as ratios measured within one run (the machine is noisy).

Targets (issue 3):

- cost per iteration, same model and batch: GMLA <= 1.8 x MLA-U (floor ~1.67: one forward and two
  backward passes against one and one), and MLA-U <= 1.1 x a bare forward + backward on the input;
- a batch where half of the images succeed early is attacked >= 1.5 x faster with early-exit
  compaction (finished images leave the working batch) than without it.

"Per iteration" is the whole attack call (validation, clean forward, all steps, the final fresh
forward) divided by its number of direction evaluations (``steps + 1``), so fixed costs count against
the attack. The bare reference is ``model(x)`` + one ``torch.autograd.grad`` of a BCE loss on the
input with the parameters frozen, as the attacks run. Every figure is the best (smallest) of interleaved
repetitions, since other jobs only ever add time; on CPU with one thread (the default) the clock is the process's CPU time, which other
jobs on a shared machine disturb far less than wall-clock time. The compaction comparison uses the engine's internal switch
(``APGDAttack._compact_finished``): without compaction finished images are still forwarded and
back-propagated (their results frozen), which is what a loop without per-image bookkeeping pays.

Usage: ``python benchmarks/bench_attacks.py [--device cpu|cuda] [--batch 16] [--size 32] [--width 32]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlattack.attacks import GMLA, MLAU, Attack
from mlattack.graph import LabelGraph
from mlattack.models import build_model


def tiny_resnet(num_labels: int, width: int, size: int) -> nn.Module:
    """A ResNet-ish multi-label CNN (4 stages of basic blocks, global pooling, linear head) reading
    ``size`` x ``size`` images centred at 0.5, logits ``[B, C]``."""
    return build_model(
        "small-cnn",
        num_labels=num_labels,
        backbone={
            "name": "tiny-resnet",
            "widths": [width, width * 2, width * 4, width * 8],
            "input_size": size,
        },
        mean=(0.5, 0.5, 0.5),
        std=(1.0, 1.0, 1.0),
    )


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Seconds ``function`` takes: CPU time of this process on a single-threaded CPU run (robust to
    other processes sharing the cores), wall-clock time otherwise."""
    single_cpu = device.type == "cpu" and torch.get_num_threads() == 1
    clock = time.process_time if single_cpu else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start


def calibrate_batch_norm(model: nn.Module, size: int, device: torch.device) -> None:
    """Set the batch-norm statistics from random images, so the random network's logits depend on
    its input (with the default statistics they barely do)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(32, 3, size, size, device=device))
    model.eval()


def bare_forward_backward(model: nn.Module, images: Tensor, desired: Tensor) -> None:
    x = images.detach().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(model(x), desired, reduction="sum")
    torch.autograd.grad(loss, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared machine)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = tiny_resnet(args.labels, args.width, args.size).to(device)
    calibrate_batch_norm(model, args.size, device)
    model.requires_grad_(False)  # the attacks freeze the parameters too: same graph for all
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad():
        clean = model(images) > 0
    # Turn off each image's most confident present label.
    if not clean.any(dim=1).all():
        raise SystemExit("every image needs a present label; change the seed")
    with torch.no_grad():
        scores = model(images).masked_fill(~clean, -float("inf"))
    targets = F.one_hot(scores.argmax(dim=1), args.labels).bool()
    desired = (clean ^ targets).float()
    # A flat graph: Ψ = Ω, so GMLA and MLA-U move the same labels.
    graph = LabelGraph([f"label{i}" for i in range(args.labels)])

    def attack_time(attack: Attack, eps: float | Tensor) -> float:
        return timed(lambda: attack(images, targets, eps=eps), device)

    steps = args.steps
    options = {"steps": steps, "early_stop": False}
    mlau = MLAU(model, **options)
    gmla = GMLA(model, graph, **options)
    # Warm-up (allocator, kernels, lazy imports).
    bare_forward_backward(model, images, desired)
    attack_time(mlau, 0.01)
    attack_time(gmla, 0.01)

    def repeat(times: int) -> None:
        for _ in range(times):
            bare_forward_backward(model, images, desired)

    bare, per_mlau, per_gmla = [], [], []
    for _ in range(args.repeats):
        # As many bare passes as the attack makes evaluations: intervals of similar length see
        # similar interference (the minimum of short intervals would flatter the reference).
        bare.append(timed(lambda: repeat(steps + 1), device) / (steps + 1))
        per_mlau.append(attack_time(mlau, 0.01) / (steps + 1))
        per_gmla.append(attack_time(gmla, 0.01) / (steps + 1))
    bare_s, mlau_s, gmla_s = (min(v) for v in (bare, per_mlau, per_gmla))

    # Half of the batch gets a budget that flips its target within a couple of steps, the other
    # half a budget too small to flip anything, so those run all the steps.
    half = args.batch // 2
    eps = torch.full((args.batch,), 1e-4, device=device)
    eps[:half] = 0.5
    early_steps = 50
    compacting = MLAU(model, steps=early_steps)
    not_compacting = MLAU(model, steps=early_steps)
    not_compacting._compact_finished = False
    result = compacting(images, targets, eps=eps)
    early = result.iterations[:half]
    with_compaction, without_compaction = [], []
    for _ in range(args.repeats):
        with_compaction.append(attack_time(compacting, eps))
        without_compaction.append(attack_time(not_compacting, eps))
    with_s, without_s = min(with_compaction), min(without_compaction)

    print(
        f"device {device}, batch {args.batch}, {args.size}x{args.size}, {args.labels} labels, "
        f"TinyResNet, threads {torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"bare forward+backward          {bare_s * 1e3:8.1f} ms")
    print(f"MLA-U per iteration            {mlau_s * 1e3:8.1f} ms")
    print(f"GMLA  per iteration            {gmla_s * 1e3:8.1f} ms")
    print(f"MLA-U / bare fwd+bwd           {mlau_s / bare_s:8.2f}   (target <= 1.10)")
    print(f"GMLA / MLA-U                   {gmla_s / mlau_s:8.2f}   (target <= 1.80)")
    print(
        f"early half: success {int(result.success[:half].sum())}/{half} after "
        f"{early.float().mean():.1f} steps on average; others ran {early_steps} steps"
    )
    print(f"half-early batch, compaction   {with_s * 1e3:8.1f} ms")
    print(f"half-early batch, no compaction{without_s * 1e3:8.1f} ms")
    print(f"speed-up from compaction       {without_s / with_s:8.2f}   (target >= 1.50)")


if __name__ == "__main__":
    main()
