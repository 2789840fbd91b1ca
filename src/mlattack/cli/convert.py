"""`mlattack convert --family asl|ml-decoder|ml-gcn FILE -o OUT.pt`: a released checkpoint of ASL,
ML-Decoder or ML-GCN -> an mlattack checkpoint (weights + label names / MIDs, input size and
normalisation), which experiment configs name under ``model.checkpoint``."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

FAMILIES = ("asl", "ml-decoder", "ml-gcn")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a released ASL / ML-Decoder / ML-GCN checkpoint to an mlattack checkpoint",
        description="Load a released checkpoint exactly (torch alone, weights_only) and write an "
        "mlattack checkpoint that carries the label names (and MIDs for OpenImages), the input "
        "size and the normalisation. The architecture is read from the file's tensors.",
    )
    parser.add_argument("--family", required=True, choices=FAMILIES, help="the file's family")
    parser.add_argument("file", type=Path, help="the released checkpoint (.pth, .pth.tar, .ckpt)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the mlattack checkpoint")
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="the image side; required unless the file is one of the released layouts "
        "(ML-GCN: 448 only)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="the outputs' label names: a file with one name per line (output order), or 'voc' "
        "for ML-GCN's VOC order; default: the file's idx_to_class (ASL, ML-Decoder)",
    )
    parser.add_argument(
        "--mids",
        type=Path,
        default=None,
        help="OpenImages: the outputs' MIDs, one per line or CSV rows (output order)",
    )
    parser.add_argument(
        "--class-descriptions",
        type=Path,
        default=None,
        help="OpenImages: MID,display-name CSV naming the MIDs (oidv6-class-descriptions.csv)",
    )
    parser.add_argument(
        "--word-vectors",
        type=Path,
        default=None,
        help="ML-GCN: the repository's *_glove_word2vec.pkl (the label embeddings it was "
        "trained with; not in the checkpoint)",
    )
    parser.set_defaults(func=_convert)


def _label_names(labels: str | None) -> list[str] | None:
    if labels is None:
        return None
    if labels == "voc":
        from mlattack.models.released.mlgcn import MLGCN_VOC_CLASSES

        return list(MLGCN_VOC_CLASSES)
    path = Path(labels)
    if not path.is_file():
        raise FileNotFoundError(f"--labels: no such file: {path} (or give 'voc')")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [name for name in names if name]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(args: argparse.Namespace) -> int:
    from mlattack.models import (
        load_asl_checkpoint,
        load_mldecoder_checkpoint,
        load_mlgcn_checkpoint,
        save,
    )

    names = _label_names(args.labels)
    model: Any
    if args.family == "ml-gcn":
        if args.word_vectors is None:
            raise ValueError("--family ml-gcn needs --word-vectors (the *_glove_word2vec.pkl)")
        if args.mids is not None or args.class_descriptions is not None:
            raise ValueError("--mids and --class-descriptions are for ASL / ML-Decoder files")
        options: dict[str, Any] = {} if args.input_size is None else {"input_size": args.input_size}
        model = load_mlgcn_checkpoint(
            args.file, word_vectors=args.word_vectors, label_names=names, **options
        )
    else:
        if args.word_vectors is not None:
            raise ValueError("--word-vectors is for ML-GCN files")
        loader = load_asl_checkpoint if args.family == "asl" else load_mldecoder_checkpoint
        model = loader(
            args.file,
            input_size=args.input_size,
            label_names=names,
            mids=args.mids,
            class_descriptions=args.class_descriptions,
        )
    source = {
        "family": args.family,
        "file": args.file.name,
        "sha256": _sha256(args.file),
        "word_vectors": None if args.word_vectors is None else args.word_vectors.name,
    }
    path = save(model, args.out, extra={"converted_from": source})
    backbone = model.backbone.spec()
    print(
        f"wrote {path}: {args.family} on {backbone['name']} {backbone.get('layers')}, "
        f"{model.num_labels} outputs, {model.input_size} px, mean {list(model.mean)}, "
        f"std {list(model.std)}"
    )
    return 0
