"""`mlattack demo`: GMLA against MLA-U and MLA-C on real photos, with no download and no GPU.

Part one reads the packaged photos (scikit-image / scikit-learn samples) with the offline
ImageNet-WordNet model (EfficientNet-Lite0 read as a multi-label model over a WordNet label graph),
takes the most specific labels each photo is predicted to show as targets, attacks them with the three
attacks, prints a small Table 1 and writes the HTML report. A second part (skipped with
``--photos-only``) trains, or reuses, a small CNN on the synthetic hierarchical scenes and runs a mini
Table 1 there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mlattack.experiments.aggregate import aggregate
from mlattack.experiments.config import ExperimentConfig
from mlattack.experiments.report import build_report
from mlattack.experiments.runner import run_experiment

if TYPE_CHECKING:
    from mlattack.models.imagenet import ImageNetHierarchyModel

# GMLA twice: the paper's adaptive rule (eq. 10 or 11 by tau) and the projection alone (eq. 10).
DEMO_ATTACKS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("mla-u", "mla-u", {}),
    ("mla-c", "mla-c", {}),
    ("gmla", "gmla", {}),
    ("gmla-proj", "gmla", {"mode": "projection"}),
)
PHOTO_LABEL_SET = "imagenet-auto"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="GMLA vs MLA-U / MLA-C on real photos and synthetic scenes (no download, CPU, ~1-2 min)",
        description="Attack the packaged real photos through the offline ImageNet-WordNet model "
        "with MLA-U, MLA-C and GMLA, print a Table-1-style summary and write an HTML report.",
    )
    parser.add_argument("--out", type=Path, default=Path("mlattack-demo"), help="output folder")
    parser.add_argument(
        "--eps", type=float, default=4 / 255, help="L-inf budget on [0,1] pixels, photos"
    )
    parser.add_argument(
        "--synthetic-eps", type=float, default=0.03, help="L-inf budget, synthetic scenes"
    )
    parser.add_argument("--steps", type=int, default=50, help="attack iterations")
    parser.add_argument("--crops", type=int, default=2, help="crops the photo model looks at")
    parser.add_argument(
        "--photos-only",
        action="store_true",
        help="skip part 2 (train or reuse a small CNN on synthetic scenes and attack it)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a reduced run (few photos, few steps) for smoke tests"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    for option in ("eps", "synthetic_eps"):
        if getattr(args, option) <= 0:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} must be > 0, got {getattr(args, option)}")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    page = _photos_part(args)
    print(f"\nreport: {page.resolve()}")
    if not args.photos_only:
        page = _synthetic_part(args)
        print(f"\nreport: {page.resolve()}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def _attack_specs(steps: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "label": label, "options": {"steps": steps, **options}}
        for label, name, options in DEMO_ATTACKS
    ]


def _photos_part(args: argparse.Namespace) -> Path:
    from mlattack.experiments.builders import SamplePhotos
    from mlattack.models.imagenet import ImageNetHierarchyModel

    crops = 1 if args.quick else args.crops
    steps = min(args.steps, 3) if args.quick else args.steps
    model = ImageNetHierarchyModel(PHOTO_LABEL_SET, crops=crops).eval()
    names = ["chelsea", "coffee"] if args.quick else None
    photos = SamplePhotos(model.label_names, size=224, names=names)
    targets = _most_specific_present_labels(model, photos)
    print(
        f"Part 1: {len(photos)} real photos through EfficientNet-Lite0 read over a "
        f"{len(model.label_names)}-label WordNet graph; targets (the most specific labels "
        f"predicted): {', '.join(targets)}"
    )
    config = ExperimentConfig.from_dict(
        {
            "name": "demo-photos",
            "model": {
                "name": "imagenet-hierarchy",
                "options": {"label_set": PHOTO_LABEL_SET, "crops": crops},
                "label": "efficientnet-lite0",
            },
            "dataset": {"name": "sample-photos", "options": {"size": 224, "names": names}},
            "graph": "model",
            "attacks": _attack_specs(steps),
            "eps": [args.eps],
            "target_sets": {"sizes": [1], "mode": "combinations", "labels": targets},
            "images": {"per_target_set": len(photos), "require_consistent": True},
            "batch_size": len(photos),
            "examples": 2,
            "example_target_sets": 4,
        },
        source="mlattack demo",
    )
    return _run_and_report(config, args.out / "photos", args, model=model, dataset=photos)


def _most_specific_present_labels(model: ImageNetHierarchyModel, photos: Any) -> list[str]:
    """Labels predicted present with no child predicted present, on photos predicted consistently."""
    graph = model.graph
    images = torch.stack([photos[i][0] for i in range(len(photos))])
    with torch.no_grad():
        present = (model(images) > 0).numpy()
    chosen: set[str] = set()
    for row in present[graph.is_consistent(present)]:
        for label in row.nonzero()[0]:
            if not row[graph.children(int(label))].any():
                chosen.add(model.label_names[label])
    if not chosen:
        raise ValueError("the photo model predicts no consistent label on the sample photos")
    return sorted(chosen)


def _run_and_report(
    config: ExperimentConfig, run_dir: Path, args: argparse.Namespace, **built: Any
) -> Path:
    # A demo always starts afresh: its options may differ from the last run's.
    run_experiment(config, run_dir, progress=not args.no_progress, force=True, **built)
    page = build_report(run_dir)
    _print_table(run_dir)
    return page


def _print_table(run_dir: Path) -> None:
    """Table 1 in the terminal: per attack, mean over target sets (FR over attacked images)."""
    rows = aggregate([run_dir]).summary
    header = f"{'attack':<10} {'eps':>7} {'|Ω|':>3} {'images':>6} {'FR_N':>6} {'FR_S':>6} {'NT_R':>6} {'SSIM':>6}"
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['attack']:<10} {row['eps']:>7.4f} {row['size']:>3} {row['n_images']:>6} "
            f"{_fmt(row['fr_naive_mean'])} {_fmt(row['fr_semantic_mean'])} "
            f"{_fmt(row['nt_rate_mean'])} {_fmt(row['ssim_mean'])}"
        )
    print("FR_N/FR_S: share of attacked images; NT_R and SSIM: over images where Ω flipped.")


def _fmt(value: float | None) -> str:
    return f"{'—':>6}" if value is None or value != value else f"{value:>6.3f}"


def _synthetic_part(args: argparse.Namespace) -> Path:
    from mlattack.cli import main as mlattack_main

    checkpoint = args.out / "synthetic-small-cnn.pt"
    n_train, epochs = (600, 1) if args.quick else (6000, 4)
    if checkpoint.is_file():
        print(f"\nPart 2: reusing the synthetic-scenes model {checkpoint}")
    else:
        print(f"\nPart 2: training a small CNN on {n_train} synthetic scenes ({epochs} epochs)")
        options = '{"backbone": {"name": "small-cnn", "widths": [16, 32, 64, 64]}}'
        code = mlattack_main(
            ["train", "--model", "small-cnn", "--dataset", "synthetic", "--n-train", str(n_train),
             "--n-val", "500", "--image-size", "32", "--input-size", "32", "--model-options",
             options, "--epochs", str(epochs), "--lr", "4e-3", "--batch-size", "64", "--seed", "0",
             "--out", str(checkpoint)] + (["--no-progress"] if args.no_progress else [])
        )  # fmt: skip
        if code != 0:
            raise ValueError(f"training the synthetic-scenes model failed (exit code {code})")
    steps = min(args.steps, 3) if args.quick else args.steps
    config = ExperimentConfig.from_dict(
        {
            "name": "demo-synthetic",
            "model": {"checkpoint": str(checkpoint.resolve()), "label": "small-cnn"},
            "dataset": {
                "name": "synthetic",
                "options": {
                    "n": 100 if args.quick else 400,
                    "split": "test",
                    "seed": 1,
                    "size": 32,
                },
            },
            "graph": "model",
            "attacks": _attack_specs(steps),
            "eps": [args.synthetic_eps],
            "target_sets": {"sizes": [1], "mode": "random", "draws": 2 if args.quick else 6},
            "images": {"per_target_set": 4 if args.quick else 16, "require_consistent": True},
            "batch_size": 16,
            "examples": 2,
        },
        source="mlattack demo",
    )
    return _run_and_report(config, args.out / "synthetic", args)
