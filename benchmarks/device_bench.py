"""The device benchmark: MLA-U and GMLA at OpenImages scale on the machine at hand, in one run.

Measured side by side, on a ResNet-50-sized and a TResNet-L-sized model at 448 px with 9,605
outputs (timm's ``resnet50`` / ``tresnet_l`` when timm is installed, otherwise the bottleneck ResNets
defined here, sized like them):

- seconds per attack step and image-steps per second, for MLA-U and GMLA, in fp32 and with AMP
  (bf16 where the device has it, else fp16) when the attacks take an ``amp`` option;
- GMLA / MLA-U per step, and the AMP speed-up (fp32 s/step ÷ AMP s/step);
- peak memory (CUDA: the allocator's peak per measurement; CPU: the process's peak RSS);
- the largest batch that fits (CUDA: doubling, then bisection, one GMLA step per try);
- the label scale: s/step at 9,605 labels ÷ at 20 labels on the same backbone (target <= 1.2).

A step is one iteration of the attack loop; s/step is a whole attack call (all ``--steps`` steps,
early stop off, clean forward included) divided by ``--steps``, the best of ``--repeats`` calls.
On one CPU thread the clock is the process's CPU time, else wall-clock time (CUDA synchronised).

It finishes in a few minutes on one GPU (``--budget-s`` bounds the optional parts). ``--quick``
runs the same code small (64 px, narrow nets, 2 steps): under a minute on a CPU, for CI.

Usage: ``python benchmarks/device_bench.py [--device auto|cpu|cuda] [--quick] [--batch 16]``
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench_attacks import timed
from mlattack.attacks import Attack, build_attack
from mlattack.graph import LabelGraph
from mlattack.models import ASLModel
from mlattack.models.backbones import Backbone, build_backbone, residual_shortcut

OPENIMAGES_OUTPUTS = 9_605
FEW_OUTPUTS = 20
HIERARCHY_SIZE = 600  # labels in a tree, like OpenImages' 600 boxable classes; the rest isolated
EPS = 0.05
LABEL_SCALE_TARGET = 1.2


# -- models ---------------------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = residual_shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class BottleneckResNet(Backbone):
    """A torchvision-free bottleneck ResNet: ``blocks=(3, 4, 6, 3), width=64`` is ResNet-50's shape
    (stride-2 stem and max pooling, four stages, 4x expansion)."""

    def __init__(self, blocks: Sequence[int], width: int, input_size: int) -> None:
        super().__init__()
        self.blocks, self.width = tuple(blocks), width
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        in_channels = width
        for stage, count in enumerate(self.blocks):
            stage_width = width * 2**stage
            for index in range(count):
                stride = 2 if index == 0 and stage > 0 else 1
                layers.append(_Bottleneck(in_channels, stage_width, stride))
                in_channels = 4 * stage_width
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels
        self.default_input_size = input_size

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.features(x)
        return out

    def spec(self) -> dict[str, Any]:
        return {"name": "bottleneck-resnet", "blocks": list(self.blocks), "width": self.width}


@dataclass(frozen=True)
class ModelShape:
    title: str
    timm_name: str
    blocks: tuple[int, ...]  # the local stand-in's shape
    width: int


# TResNet-L stand-in: TResNet-L's stage depths (4, 5, 18, 3) at a 1.2x width give its 2,432 output
# features and about its backbone's parameters (52.5 M here; 76 M with the 9,605-way head).
SHAPES = (
    ModelShape("ResNet-50-sized", "resnet50", (3, 4, 6, 3), 64),
    ModelShape("TResNet-L-sized", "tresnet_l", (4, 5, 18, 3), 76),
)
QUICK_SHAPES = (
    ModelShape("ResNet-50-sized (quick)", "", (1, 1, 1, 1), 8),
    ModelShape("TResNet-L-sized (quick)", "", (1, 1, 2, 1), 10),
)


def make_backbone(shape: ModelShape, size: int) -> tuple[Backbone, str]:
    """timm's network when timm is installed (and a name is given), else the stand-in."""
    if shape.timm_name and importlib.util.find_spec("timm") is not None:
        return build_backbone(f"timm:{shape.timm_name}"), f"timm {shape.timm_name}"
    return BottleneckResNet(
        shape.blocks, shape.width, size
    ), f"local {list(shape.blocks)}x{shape.width}"


def make_model(backbone: Backbone, num_labels: int, size: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = ASLModel(backbone, num_labels=num_labels, input_size=size)
    return model.to(device).eval()


def synthetic_hierarchy(num_labels: int, seed: int = 0) -> LabelGraph:
    """A random forest over the first ``min(600, C)`` labels (OpenImages-like), the rest isolated."""
    rng = np.random.default_rng(seed)
    in_tree = min(HIERARCHY_SIZE, num_labels)
    names = [f"label_{i}" for i in range(num_labels)]
    edges = [
        (names[int(rng.integers(0, child))], names[child])
        for child in range(1, in_tree)
        if rng.random() < 0.8
    ]
    return LabelGraph(names, edges)


def attack_inputs(
    model: ASLModel, graph: LabelGraph, batch: int, size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Random images and, per image, a target set Ω of two leaves, the two it scores highest.

    The random head's bias is raised where needed so that every image predicts its Ω (an attack
    skips an image whose clean prediction lacks Ω, which would leave less work to time).
    """
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(batch, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        logits = model(images)
        leaves = torch.zeros(logits.shape[1], dtype=torch.bool, device=device)
        leaves[torch.as_tensor(graph.leaves, device=device)] = True
        targets = torch.zeros_like(logits, dtype=torch.bool)
        targets.scatter_(1, logits.masked_fill(~leaves, float("-inf")).topk(2, dim=1).indices, True)
        lowest = logits.masked_fill(~targets, float("inf")).amin(dim=0)
        model.classifier.bias += (1.0 - lowest).clamp_min(0.0).nan_to_num(posinf=0.0)
    return images, targets


# -- measurements ---------------------------------------------------------------------------------
def amp_choice(device: torch.device) -> str | None:
    """The AMP option to compare with fp32, or ``None`` when the attacks have no ``amp`` option."""
    if "amp" not in inspect.signature(Attack.__init__).parameters:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


@dataclass
class StepFigures:
    seconds_per_step: float
    peak_memory_bytes: int


def measure_attack(
    name: str,
    model: nn.Module,
    graph: LabelGraph,
    images: Tensor,
    targets: Tensor,
    *,
    steps: int,
    repeats: int,
    amp: str | None,
    warm_up: bool = True,
) -> StepFigures:
    """Best-of-``repeats`` seconds per step of one attack call, and its peak memory."""
    device = images.device
    options: dict[str, Any] = {"eps": EPS, "steps": steps, "early_stop": False}
    if amp is not None:
        options["amp"] = amp
    attack = build_attack(name, model, graph=graph, **options)
    if warm_up:
        attack(images, targets)  # kernels, allocator, cuDNN autotuning for this very shape
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = min(timed(lambda: attack(images, targets), device) for _ in range(repeats))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return StepFigures(seconds / steps, peak)


def largest_batch(
    model: nn.Module,
    graph: LabelGraph,
    size: int,
    device: torch.device,
    *,
    amp: str | None,
    start: int,
    limit: int,
    deadline: float,
) -> str:
    """The largest GMLA batch that fits on the CUDA device (doubling, then bisection)."""
    if device.type != "cuda":
        return "n/a (no device memory limit on CPU)"

    def fits(batch: int) -> bool:
        try:
            images, targets = attack_inputs(model, graph, batch, size, device)
            measure_attack("gmla", model, graph, images, targets, steps=1, repeats=1, amp=amp)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        except RuntimeError as error:  # cuBLAS / cuDNN report a failed allocation their own way
            if "ALLOC" in str(error) or "out of memory" in str(error):
                return False
            raise
        finally:
            torch.cuda.empty_cache()

    good, bad = 0, None
    batch = start
    while batch <= limit and time.monotonic() < deadline:
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    if bad is None:
        return f">= {good}" + (" (search capped)" if batch > limit else " (time budget)")
    while bad - good > max(1, good // 8) and time.monotonic() < deadline:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return f"{good} (fails at {bad})"


# -- the run --------------------------------------------------------------------------------------
def _format_bytes(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def _parameters(model: nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda[:N]")
    parser.add_argument("--quick", action="store_true", help="small and fast (CI, CPU)")
    parser.add_argument("--size", type=int, default=None, help="image side (448; quick: 64)")
    parser.add_argument("--batch", type=int, default=None, help="batch (16 on CUDA, 2 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="steps per call (10; quick: 2)")
    parser.add_argument("--repeats", type=int, default=None, help="calls per figure (2; quick: 1)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="time for optional parts")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (quick: 1)")
    parser.add_argument(
        "--label-scale-only", action="store_true", help="only the 9,605 vs 20 labels comparison"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    deadline = started + args.budget_s
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    if args.threads is not None or args.quick:
        torch.set_num_threads(args.threads or 1)
    size = args.size or (64 if args.quick else 448)
    batch = args.batch or (16 if device.type == "cuda" else 2)
    steps = args.steps or (2 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 2)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    amp = amp_choice(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"{torch.get_num_threads()} CPU threads), {size} px, batch {batch}, {steps} steps/call, "
        f"best of {repeats}, eps {EPS}, torch {torch.__version__}"
    )
    if amp is None:
        print("AMP: the attacks take no 'amp' option in this installation; fp32 only")
    precisions: list[str | None] = [None] if amp is None else [None, amp]
    header = f"{'model':26} {'backbone':22} {'params':>8} {'attack':6} {'prec':5} {'s/step':>9} {'img-step/s':>10} {'peak mem':>10}"
    rows: list[str] = []
    ratio_lines: list[str] = []
    batch_lines: list[str] = []
    scale_lines: list[str] = []
    if args.label_scale_only:
        backbone, source = make_backbone(shapes[0], size)
        model = make_model(backbone, OPENIMAGES_OUTPUTS, size, device)
        graph = synthetic_hierarchy(OPENIMAGES_OUTPUTS)
        lines = label_scale(shapes[0], source, model, graph, size, batch, steps, repeats, device)
        print("\n".join(lines))
        return
    for index, shape in enumerate(shapes):
        backbone, source = make_backbone(shape, size)
        graph = synthetic_hierarchy(OPENIMAGES_OUTPUTS)
        model = make_model(backbone, OPENIMAGES_OUTPUTS, size, device)
        images, targets = attack_inputs(model, graph, batch, size, device)
        per_step: dict[tuple[str, str | None], float] = {}
        for precision in precisions:
            for attack in ("mla-u", "gmla"):
                figures = measure_attack(
                    attack,
                    model,
                    graph,
                    images,
                    targets,
                    steps=steps,
                    repeats=repeats,
                    amp=precision,
                )
                per_step[(attack, precision)] = figures.seconds_per_step
                rows.append(
                    f"{shape.title:26} {source:22} {_parameters(model):>8} {attack:6} "
                    f"{precision or 'fp32':5} {figures.seconds_per_step:9.4f} "
                    f"{batch / figures.seconds_per_step:10.1f} {_format_bytes(figures.peak_memory_bytes):>10}"
                )
        for precision in precisions:
            ratio = per_step[("gmla", precision)] / per_step[("mla-u", precision)]
            ratio_lines.append(
                f"  {shape.title}, {precision or 'fp32'}: GMLA/MLA-U per step {ratio:.2f}"
            )
        if amp is not None:
            speedups = ", ".join(
                f"{a} {per_step[(a, None)] / per_step[(a, amp)]:.2f}x" for a in ("mla-u", "gmla")
            )
            ratio_lines.append(f"  {shape.title}: AMP ({amp}) speed-up {speedups}")
        for precision in precisions:
            found = largest_batch(
                model,
                graph,
                size,
                device,
                amp=precision,
                start=batch,
                limit=4096,
                deadline=deadline,
            )
            batch_lines.append(f"  {shape.title}, {precision or 'fp32'}: {found}")
        if index == 0:
            scale_lines = label_scale(
                shape, source, model, graph, size, batch, steps, repeats, device
            )
        del model, images, targets
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print(header)
    print("\n".join(rows))
    print("per step:")
    print("\n".join(ratio_lines))
    print("largest batch that fits (GMLA):")
    print("\n".join(batch_lines))
    print("\n".join(scale_lines))
    print(f"total {time.monotonic() - started:.1f} s")


def label_scale(
    shape: ModelShape,
    source: str,
    big: nn.Module,
    big_graph: LabelGraph,
    size: int,
    batch: int,
    steps: int,
    repeats: int,
    device: torch.device,
) -> list[str]:
    """s/step at 9,605 labels ÷ at 20 labels, same backbone weights, interleaved measurements."""
    assert isinstance(big, ASLModel)
    small = make_model(big.backbone, FEW_OUTPUTS, size, device)  # shares the backbone module
    small_graph = synthetic_hierarchy(FEW_OUTPUTS)
    inputs = {
        "big": (big, big_graph, *attack_inputs(big, big_graph, batch, size, device)),
        "small": (small, small_graph, *attack_inputs(small, small_graph, batch, size, device)),
    }
    lines = [
        f"label scale ({shape.title}, {source}, fp32): s/step at {OPENIMAGES_OUTPUTS:,} vs {FEW_OUTPUTS} labels"
    ]
    worst = 0.0
    for attack in ("mla-u", "gmla"):
        best = {"big": float("inf"), "small": float("inf")}
        for repeat in range(max(repeats, 2) + 1):  # the first round warms up
            for key, (model, graph, images, targets) in inputs.items():
                figures = measure_attack(
                    attack,
                    model,
                    graph,
                    images,
                    targets,
                    steps=steps,
                    repeats=1,
                    amp=None,
                    warm_up=False,
                )
                if repeat == 0:
                    continue
                best[key] = min(best[key], figures.seconds_per_step)
        ratio = best["big"] / best["small"]
        worst = max(worst, ratio)
        lines.append(
            f"  {attack}: {best['big']:.4f} s vs {best['small']:.4f} s -> ratio {ratio:.2f}"
        )
    verdict = "PASS" if worst <= LABEL_SCALE_TARGET else "FAIL"
    if shape in QUICK_SHAPES:
        verdict += " (--quick: the narrow backbone costs little beside the head; run without it)"
    lines.append(
        f"  attack steps at {OPENIMAGES_OUTPUTS:,} labels cost <= {LABEL_SCALE_TARGET}x those at "
        f"{FEW_OUTPUTS} labels on the same backbone: worst ratio {worst:.2f} -> {verdict}"
    )
    return lines


if __name__ == "__main__":
    main()
