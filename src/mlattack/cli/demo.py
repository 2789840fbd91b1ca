"""`mlattack demo`: GMLA against MLA-U and MLA-C on real photos and dense synthetic scenes.

No download, no GPU. Part 1 attacks the packaged real photos (see ``mlattack/data/photos.json``)
through the offline ImageNet-WordNet model (EfficientNet-Lite0 read as a multi-label model over the
``objects`` label set), with their hand-written labels as ground truth: every concrete label that
a photo shows and the model predicts is a target set Ω (|Ω| = 1); the perturbations MLA-U finds on
EfficientNet-Lite0, Lite1 and Lite2 are tried on all three (Fig. 7), and the objectives' gradient
cosines are measured (Fig. 8). Part 2 (skipped with ``--photos-only``) attacks a small CNN trained
on the dense synthetic scenes (three-level taxonomy, 3x3 grid) with random leaf target sets of
|Ω| = 1, 2 and 3 at two ε (Figs. 5 and 6, Table 2). Each part prints a Table-1-style summary and
writes an HTML report that says where the other part's report is.

The default budget (steps, photo resolution, one crop, one ε and a cheap transfer attack on the
photos) keeps the whole demo within about three minutes on two CPU cores; ``--full`` runs
paper-sized settings. The synthetic-scenes model ships with the package (trained by
``scripts/train_demo_synthetic.py``); ``--retrain`` trains it afresh.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlattack.experiments.aggregate import aggregate
from mlattack.experiments.config import ExperimentConfig
from mlattack.experiments.figures import format_eps
from mlattack.experiments.report import build_report
from mlattack.experiments.runner import run_experiment

# The paper's comparison: the two baselines and GMLA with its defaults.
DEMO_ATTACKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mla-u", {}),
    ("mla-c", {}),
    ("gmla", {}),
)
PHOTO_LABEL_SET = "objects"
PHOTO_BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
SYNTHETIC_CHECKPOINT = "synthetic-dense-small-cnn.pt"
PACKAGED_CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / SYNTHETIC_CHECKPOINT
PARTS = ("photos", "synthetic")


@dataclass(frozen=True)
class Budget:
    """How much each part of the demo computes."""

    photo_size: int  # side the photos are resized to, and the network's input side
    crops: int
    photo_eps: tuple[float, ...]  # the first is the main ε
    transfer_attack: str  # the attack whose perturbations Fig. 7 carries between the models
    steps: int
    synthetic_eps: tuple[float, ...]
    synthetic_sizes: tuple[int, ...]
    synthetic_draws: int  # random target sets per |Ω|
    synthetic_images: int  # images per target set
    synthetic_train: int  # training scenes when the model has to be trained
    synthetic_epochs: int


# The photo setting where the attacks separate (benchmarks/gmla_heldout.py --photo-scan): at
# 2/255 and one crop every attack but MLA-C succeeded in one or two steps; two crops (the whole
# photo and its centre) at 0.5/255 leave MLA-U inconsistent on about one photo in six.
DEFAULT_BUDGET = Budget(
    photo_size=224,
    crops=2,
    photo_eps=(0.5 / 255,),
    transfer_attack="mla-u",
    steps=20,
    synthetic_eps=(0.01, 0.03),
    synthetic_sizes=(1, 2, 3),
    synthetic_draws=8,
    synthetic_images=8,
    synthetic_train=14000,
    synthetic_epochs=3,
)
# Paper-sized: 300 steps, five crops at the network's own resolution, four ε, |Ω| up to 5.
FULL_BUDGET = Budget(
    photo_size=224,
    crops=5,
    photo_eps=(0.5 / 255, 1 / 255, 2 / 255, 4 / 255),
    transfer_attack="gmla",
    steps=300,
    synthetic_eps=(0.01, 0.005, 0.03, 0.05),
    synthetic_sizes=(1, 2, 3, 4, 5),
    synthetic_draws=20,
    synthetic_images=50,
    synthetic_train=14000,
    synthetic_epochs=3,
)
# For smoke tests: two photos, three steps, a model trained for one epoch on few scenes.
QUICK_BUDGET = Budget(
    photo_size=96,
    crops=1,
    photo_eps=(4 / 255,),
    transfer_attack="mla-u",
    steps=3,
    synthetic_eps=(0.03, 0.05),
    synthetic_sizes=(1, 2),
    synthetic_draws=2,
    synthetic_images=4,
    synthetic_train=600,
    synthetic_epochs=1,
)
QUICK_PHOTOS = ("chelsea", "pekinese")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="GMLA vs MLA-U / MLA-C on real photos and synthetic scenes (no download, CPU, ~3 min)",
        description="Attack the packaged real photos through three offline ImageNet models read as "
        "multi-label models over a WordNet graph, and a small CNN on dense synthetic scenes, with "
        "MLA-U, MLA-C and GMLA; print Table-1-style summaries and write two HTML reports.",
    )
    parser.add_argument("--out", type=Path, default=Path("mlattack-demo"), help="output folder")
    parser.add_argument(
        "--eps",
        type=float,
        help="main L-inf budget on [0,1] pixels for the photos, in (0, 1] (default 0.5/255)",
    )
    parser.add_argument(
        "--synthetic-eps",
        type=float,
        help="main L-inf budget for the synthetic scenes, in (0, 1] (default 0.01)",
    )
    parser.add_argument("--steps", type=int, help="attack iterations (default 20; --full: 300)")
    parser.add_argument(
        "--photos-only", action="store_true", help="skip part 2 (the synthetic scenes)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--full",
        action="store_true",
        help="paper-sized run: 300 steps, 5 crops at 224 px, four ε, |Ω| up to 5 (hours on a CPU)",
    )
    size.add_argument(
        "--quick", action="store_true", help="a reduced run (two photos, 3 steps) for smoke tests"
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train the synthetic-scenes model again even if OUT holds one",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_demo)


def _budget(args: argparse.Namespace) -> Budget:
    """The chosen budget with the command line's ε and steps; a bad value raises ValueError."""
    budget = FULL_BUDGET if args.full else QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    for flag, value in (("--eps", args.eps), ("--synthetic-eps", args.synthetic_eps)):
        if value is not None and not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ValueError(f"{flag} must be in (0, 1], got {value}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")

    def with_main(values: tuple[float, ...], main: float | None) -> tuple[float, ...]:
        return values if main is None else (main, *(v for v in values[1:] if v != main))

    return Budget(
        **{
            **budget.__dict__,
            "photo_eps": with_main(budget.photo_eps, args.eps),
            "synthetic_eps": with_main(budget.synthetic_eps, args.synthetic_eps),
            "steps": budget.steps if args.steps is None else args.steps,
        }
    )


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write in it now, so that a bad ``--out`` fails before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".mlattack-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"--out {folder} is not a writable folder ({exc.strerror or exc})") from None


def _demo(args: argparse.Namespace) -> int:
    budget = _budget(args)
    _check_writable(args.out)
    started = time.perf_counter()
    pages = {part: args.out / part / "report" / "report.html" for part in PARTS}
    _photos_part(args, budget, pages)
    if not args.photos_only:
        _synthetic_part(args, budget, pages)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def _attack_specs(steps: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "options": {"steps": steps, **options}} for name, options in DEMO_ATTACKS
    ]


def _photo_model_spec(backbone: str, budget: Budget) -> dict[str, Any]:
    return {
        "name": "imagenet-hierarchy",
        "options": {
            "label_set": PHOTO_LABEL_SET,
            "backbone": backbone,
            "crops": budget.crops,
            "input_size": budget.photo_size,
        },
        "label": backbone,
    }


def _photos_part(args: argparse.Namespace, budget: Budget, pages: dict[str, Path]) -> None:
    from mlattack.data.photos import PhotoDataset
    from mlattack.models.imagenet import ImageNetHierarchyModel

    models = {
        backbone: ImageNetHierarchyModel(
            PHOTO_LABEL_SET,
            backbone=backbone,
            crops=budget.crops,
            input_size=budget.photo_size,
        ).eval()
        for backbone in PHOTO_BACKBONES
    }
    model = models[PHOTO_BACKBONES[0]]
    names = list(QUICK_PHOTOS) if args.quick else None
    photos = PhotoDataset(model.label_names, size=budget.photo_size, names=names)
    concrete = [model.label_names[int(i)] for i in model.graph.leaves]
    print(
        f"Part 1: {len(photos)} real photos with hand-written labels through EfficientNet-Lite0 "
        f"({budget.photo_size} px, {budget.crops} crop(s)) read over the {len(model.label_names)}-label "
        f"'{PHOTO_LABEL_SET}' WordNet graph; Ω = each concrete label a photo shows and the model "
        f"predicts; transfer between {', '.join(PHOTO_BACKBONES)}"
    )
    config = ExperimentConfig.from_dict(
        {
            "name": "demo-photos",
            "model": _photo_model_spec(PHOTO_BACKBONES[0], budget),
            "dataset": {"name": "sample-photos", "options": {"size": budget.photo_size}},
            "graph": "model",
            "attacks": _attack_specs(budget.steps),
            "eps": list(budget.photo_eps),
            "target_sets": {"sizes": [1], "mode": "combinations", "labels": concrete},
            "images": {"per_target_set": len(photos), "require_consistent": True},
            "batch_size": len(photos),
            "gradient_correlation": True,
            "examples": 2,
            "example_target_sets": 3,
            "transfer": {
                "models": [_photo_model_spec(b, budget) for b in PHOTO_BACKBONES],
                "attack": {"name": budget.transfer_attack, "options": {"steps": budget.steps}},
                "eps": budget.photo_eps[0],
            },
        },
        source="mlattack demo",
    )
    note = (
        f"Part 1 of `mlattack demo`: real photos, |Ω| = 1, ε = "
        f"{', '.join(map(format_eps, budget.photo_eps))} (Tables 1-2, Figs. 7, 8, 9, 10). "
        "Figs. 5 and 6 (metrics vs ε and vs |Ω|) and Table 2 across |Ω| are in part 2 "
        "(synthetic scenes)"
    )
    if args.photos_only:
        note += " (not run: --photos-only)."
    links = [("part 2 of the demo (synthetic scenes)", pages["synthetic"])]
    _run_and_report(
        config, args.out / "photos", args, note, links, model=model, dataset=photos,
        transfer_models=models,
    )  # fmt: skip


def _synthetic_part(args: argparse.Namespace, budget: Budget, pages: dict[str, Path]) -> None:
    checkpoint = args.out / SYNTHETIC_CHECKPOINT
    if args.retrain or not (checkpoint.is_file() or PACKAGED_CHECKPOINT.is_file()):
        train_synthetic(checkpoint, budget, progress=not args.no_progress)
    elif checkpoint.is_file():
        print(f"\nPart 2: reusing the synthetic-scenes model {checkpoint} (trained by --retrain)")
    else:
        checkpoint = PACKAGED_CHECKPOINT
        print(f"\nPart 2: the packaged small CNN trained on dense synthetic scenes ({checkpoint})")
    config = ExperimentConfig.from_dict(
        {
            "name": "demo-synthetic",
            "model": {"checkpoint": str(checkpoint.resolve()), "label": "small-cnn"},
            "dataset": {
                "name": "synthetic",
                "options": {"n": 400, "split": "test", "seed": 1, "size": 48, "dense": True},
            },
            "graph": "model",
            "attacks": _attack_specs(budget.steps),
            "eps": list(budget.synthetic_eps),
            "target_sets": {
                "sizes": list(budget.synthetic_sizes),
                "mode": "leaves",
                "draws": budget.synthetic_draws,
            },
            "images": {"per_target_set": budget.synthetic_images, "require_consistent": True},
            "batch_size": 32,
            "gradient_correlation": True,
            "examples": 2,
        },
        source="mlattack demo",
    )
    note = (
        "Part 2 of `mlattack demo`: dense synthetic scenes, |Ω| = "
        f"{', '.join(map(str, budget.synthetic_sizes))}, ε = "
        f"{', '.join(map(format_eps, budget.synthetic_eps))} (Tables 1-2, Figs. 5, 6, 8, 9, 10). "
        "Fig. 7 (transfer between three real models) is in part 1 (real photos)"
    )
    links = [("part 1 of the demo (real photos)", pages["photos"])]
    _run_and_report(config, args.out / "synthetic", args, note, links)


def train_synthetic(checkpoint: Path, budget: Budget = DEFAULT_BUDGET, *, progress: bool) -> None:
    """Train the demo's small CNN on dense synthetic scenes (what the packaged model is)."""
    from mlattack.cli import main as mlattack_main

    print(
        f"\nPart 2: training a small CNN on {budget.synthetic_train} dense synthetic scenes "
        f"({budget.synthetic_epochs} epochs)"
    )
    options = '{"backbone": {"name": "small-cnn", "widths": [16, 32, 64, 64]}}'
    code = mlattack_main(
        ["train", "--model", "small-cnn", "--dataset", "synthetic", "--dataset-options",
         '{"dense": true}', "--n-train", str(budget.synthetic_train), "--n-val", "1000",
         "--image-size", "48", "--input-size", "48", "--model-options", options, "--epochs",
         str(budget.synthetic_epochs), "--lr", "4e-3", "--batch-size", "64", "--seed", "0",
         "--out", str(checkpoint)] + ([] if progress else ["--no-progress"])
    )  # fmt: skip
    if code != 0:
        raise ValueError(f"training the synthetic-scenes model failed (exit code {code})")


def _run_and_report(
    config: ExperimentConfig,
    run_dir: Path,
    args: argparse.Namespace,
    note: str,
    links: list[tuple[str, Path]],
    **built: Any,
) -> None:
    # A demo always starts afresh: its options may differ from the last run's.
    run_experiment(config, run_dir, progress=not args.no_progress, force=True, **built)
    page = build_report(run_dir, note=note, links=links)
    _print_table(run_dir)
    print(f"report: {page.resolve()}")


def _print_table(run_dir: Path) -> None:
    """Table 1 in the terminal: per attack, ε and |Ω|, mean over target sets."""
    rows = aggregate([run_dir]).summary
    header = (
        f"{'attack':<8} {'eps':>7} {'|Ω|':>3} {'sets':>4} {'images':>6} "
        f"{'FR_N':>6} {'FR_S':>6} {'NT_R':>6} {'SSIM':>6}"
    )
    print("\n" + header)
    print("-" * len(header))
    for row in sorted(rows, key=lambda r: (r["size"], r["eps"], r["attack"])):
        print(
            f"{row['attack']:<8} {format_eps(row['eps']):>7} {row['size']:>3} {row['n_sets']:>4} "
            f"{row['n_images']:>6} {_fmt(row['fr_naive_mean'])} {_fmt(row['fr_semantic_mean'])} "
            f"{_fmt(row['nt_rate_mean'])} {_fmt(row['ssim_mean'])}"
        )
    print(
        "Mean over target sets. FR_N/FR_S: share of the attacked images; NT_R and SSIM: over "
        "the images where Ω flipped."
    )


def _fmt(value: float | None) -> str:
    return f"{'—':>6}" if value is None or value != value else f"{value:>6.3f}"


__all__ = ["DEFAULT_BUDGET", "FULL_BUDGET", "QUICK_BUDGET", "Budget", "register", "train_synthetic"]
