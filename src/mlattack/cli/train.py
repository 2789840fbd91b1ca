"""``mlattack train``: train a model family on a dataset (+ label graph) and save a checkpoint.

Example (the synthetic scenes, a few minutes on a laptop CPU)::

    mlattack train --model small-cnn --dataset synthetic --n-train 6000 --epochs 3 --out scenes.pt

The checkpoint (``mlattack.models.save``) holds the weights and the metadata ``mlattack.models.load``
rebuilds the model from (label names, graph, input size, preprocessing, model config), plus the
training report under ``extra["training"]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

DATASET_NAMES = ("synthetic", "voc", "nus-wide", "openimages", "folder")
DEFAULT_SPLITS = {  # (train, validation) splits of the datasets that have named splits
    "synthetic": ("train", "test"),
    "voc": ("trainval", "test"),
    "nus-wide": ("train", "test"),
}


def _json_object(text: str) -> dict[str, Any]:
    from mlattack.experiments.config import bounded_int

    try:
        value = json.loads(text, parse_int=bounded_int)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"input_size\": 48}'")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a multi-label model and save a checkpoint",
        description="Train a model family on a dataset with BCE or ASL; log the validation mAP per "
        "epoch, print the correlation report (synthetic scenes), save a checkpoint with metadata.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="small-cnn | ml-gcn | asl | ml-decoder")
    model.add_argument("--backbone", help="backbone name (default: the family's, small-cnn)")
    model.add_argument("--input-size", type=int, help="the model's input size (it resizes inside)")
    model.add_argument(
        "--model-options", type=_json_object, default={}, metavar="JSON",
        help="more build_model keywords, e.g. '{\"backbone\": {\"name\": \"small-cnn\", \"widths\": [16, 32, 64, 64]}}'",
    )  # fmt: skip
    model.add_argument(
        "--label-embeddings", help="ml-gcn: a .npy/.pt/.json file of label embeddings"
    )

    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    data.add_argument("--graph", help="builtin:NAME or a LabelGraph JSON file (file datasets)")
    data.add_argument("--root", help="dataset folder (voc, nus-wide, folder)")
    data.add_argument("--year", default="2007", help="voc: 2007 or 2012")
    data.add_argument("--train-split", help="voc: trainval, nus-wide: train (defaults)")
    data.add_argument("--val-split", help="held-out split (voc/nus-wide/synthetic: test)")
    data.add_argument("--labels-csv", help="openimages / folder: the labels CSV")
    data.add_argument("--val-labels-csv", help="openimages / folder: a held-out labels CSV")
    data.add_argument(
        "--val-fraction", type=float, default=0.2, help="held-out share when there is no split"
    )
    data.add_argument("--images-dir", help="openimages / nus-wide: the image folder")
    data.add_argument("--class-descriptions", help="openimages: MID,name CSV")
    data.add_argument(
        "--image-size", type=int, help="dataset image size (default: 64 synthetic, else 224)"
    )
    data.add_argument("--n-train", type=int, default=6000, help="synthetic: training images")
    data.add_argument("--n-val", type=int, default=1000, help="synthetic: held-out images")
    data.add_argument(
        "--validate-images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode every image first and drop unreadable ones (default; an unreadable image is "
        "never replaced by another, so without it one ends training with an error naming it)",
    )
    data.add_argument("--dataset-options", type=_json_object, default={}, metavar="JSON",
                      help="more build_dataset keywords for both splits")  # fmt: skip

    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=5)
    fit.add_argument(
        "--lr", type=float, default=3e-3, help="peak learning rate (AdamW, warm-up + cosine)"
    )
    fit.add_argument("--batch-size", type=int, default=64)
    fit.add_argument("--loss", choices=("bce", "asl"), default="bce")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--device", default="cpu", help="cpu (default), auto (CUDA when present), cuda, cuda:N, mps"
    )
    fit.add_argument("--threads", type=int, help="torch CPU threads")
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint path to write")
    parser.set_defaults(func=run_train)


def build_datasets(args: argparse.Namespace) -> tuple[Dataset[Any], Dataset[Any], dict[str, Any]]:
    """``(train, validation, description)`` from the parsed dataset options."""
    from mlattack.data import build_dataset, resolve_graph, split_dataset

    name = args.dataset
    options: dict[str, Any] = dict(args.dataset_options)
    if name == "synthetic":
        if args.graph:
            raise ValueError("--graph: the synthetic scenes come with their own taxonomy")
        options.setdefault("size", args.image_size or 64)
        options.setdefault("seed", args.seed)
        train_split, val_split = args.train_split or "train", args.val_split or "test"
        train = build_dataset(name, n=args.n_train, split=train_split, **options)
        val = build_dataset(name, n=args.n_val, split=val_split, **options)
        return train, val, {"name": name, "n_train": args.n_train, "n_val": args.n_val, **options}

    options.setdefault("size", args.image_size or 224)
    options["graph"] = resolve_graph(args.graph)
    options["validate"] = args.validate_images
    description = {
        "name": name,
        "graph": args.graph,
        **{k: v for k, v in options.items() if k != "graph"},
    }
    if name in ("voc", "nus-wide"):
        if not args.root:
            raise ValueError(f"--root: the {name} folder is required")
        options["root"] = args.root
        if name == "voc":
            options["year"] = args.year
        elif args.images_dir:
            options["images_dir"] = args.images_dir
        default_train, default_val = DEFAULT_SPLITS[name]
        train_split, val_split = args.train_split or default_train, args.val_split or default_val
        description.update(root=args.root, train_split=train_split, val_split=val_split)
        return (
            build_dataset(name, split=train_split, **options),
            build_dataset(name, split=val_split, **options),
            description,
        )
    if name == "openimages":
        if not args.labels_csv or not args.images_dir:
            raise ValueError("--labels-csv and --images-dir are required for openimages")
        options.update(images_dir=args.images_dir, class_descriptions=args.class_descriptions)
        key = "labels_csv"
        options[key] = args.labels_csv
    else:  # folder
        if not args.root:
            raise ValueError("--root: the image folder is required")
        options["root"] = args.root
        key = "labels_csv"
        options[key] = args.labels_csv
    description.update({key: options[key]})
    train = build_dataset(name, **options)
    if args.val_labels_csv:
        # the held-out set must use the training set's label columns
        val_options = {**options, key: args.val_labels_csv, "label_names": list(train.label_names)}  # type: ignore[attr-defined]
        description["val_labels_csv"] = args.val_labels_csv
        return train, build_dataset(name, **val_options), description
    description["val_fraction"] = args.val_fraction
    train_part, val_part = split_dataset(train, args.val_fraction, seed=args.seed)
    return train_part, val_part, description


def build_training_model(args: argparse.Namespace, train: Dataset[Any]) -> torch.nn.Module:
    from mlattack import models

    options: dict[str, Any] = dict(args.model_options)
    if args.backbone:
        options["backbone"] = args.backbone
    if args.input_size:
        options["input_size"] = args.input_size
    if args.model == "ml-gcn":
        # the co-occurrence adjacency comes from the training labels
        if "adjacency" not in options:
            options.setdefault("train_labels", train.labels.bool())  # type: ignore[attr-defined]
        if args.label_embeddings:
            options["label_embeddings"] = args.label_embeddings
    label_names = tuple(train.label_names)  # type: ignore[attr-defined]
    return models.build_model(
        args.model,
        num_labels=len(label_names),
        label_names=label_names,
        graph=getattr(train, "graph", None),
        **options,
    )


def run_train(args: argparse.Namespace) -> int:
    from mlattack import models
    from mlattack.experiments.runner import resolve_device
    from mlattack.experiments.train import train_model

    device = resolve_device(args.device, what="--device")  # before any data is read
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    train, val, description = build_datasets(args)
    model = build_training_model(args, train)
    print(
        f"training {args.model} on {args.dataset}: {len(train)} images, {len(val)} held out, "  # type: ignore[arg-type]
        f"{len(getattr(model, 'label_names', ()))} labels, {args.epochs} epochs, loss {args.loss}",
        flush=True,
    )
    report = train_model(
        model,
        train,
        val,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        loss=args.loss,
        seed=args.seed,
        device=device,
        progress=not args.no_progress,
        # with a progress bar the trainer writes through tqdm (None); else plain lines
        log=None if not args.no_progress else lambda line: print(line, flush=True),
    )
    model.cpu()
    models.save(model, args.out, extra={"training": report.to_dict(), "dataset": description})
    print(f"held-out mAP {report.final_map:.4f} after {report.seconds:.1f} s")
    for line in report.correlation_lines():
        print(line)
    if report.num_skipped:
        print(f"skipped {report.num_skipped} unreadable images")
    print(f"saved {args.out}")
    return 0
