"""OpenImages at the paper's scale: a 9,605-output model through ``mlattack run`` and ``report``.

The model is synthetic (a small CNN with 9,605 outputs named by real OpenImages MIDs); the label
graph is the real 600-class hierarchy, the target sets follow the paper's rule (half leaves of the
hierarchy, half labels outside it) and the dataset is a folder of JPEGs with an OpenImages labels
CSV. Outputs meet the hierarchy and the CSV by MID: the two MIDs named "Human leg" stay apart.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlattack.data.openimages import OpenImagesDataset
from mlattack.graph import LabelGraph
from mlattack.graph_sources.openimages import load_openimages_graph, read_class_descriptions
from mlattack.models import ASLModel, save
from mlattack.models.classlist import names_for_mids

NUM_OUTPUTS = 9_605
IMAGE_SIZE = 16
N_IMAGES = 24
HIERARCHY_HUMAN_LEG = "/m/035r7c"  # the "Human leg" of the 600-class hierarchy (a leaf)
OTHER_HUMAN_LEG = "/m/09w5r"  # oidv6 names this MID "Human leg" too; it is outside the hierarchy
SIZES = (1, 2, 3)


def _model_mids(folder: Path) -> list[str]:
    """9,605 MIDs: every hierarchy class plus the first others of oidv6, in MID order."""
    boxable = read_class_descriptions(folder / "class-descriptions-boxable.csv")
    others = sorted(
        set(read_class_descriptions(folder / "oidv6-class-descriptions.csv")) - set(boxable)
    )
    chosen = set(boxable) | {OTHER_HUMAN_LEG}
    chosen |= set([m for m in others if m != OTHER_HUMAN_LEG][: NUM_OUTPUTS - len(chosen)])
    return sorted(chosen)


def _write_images(folder: Path) -> list[str]:
    folder.mkdir()
    generator = np.random.default_rng(0)
    ids = [f"img{i:03d}" for i in range(N_IMAGES)]
    for image_id in ids:
        coarse = generator.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        image.save(folder / f"{image_id}.jpg", quality=95)
    return ids


def _active_mids(folder: Path, mids: list[str]) -> tuple[list[str], list[str]]:
    """A few hierarchy leaves (the hierarchy's "Human leg" among them) and a few outside MIDs."""
    graph = load_openimages_graph(
        folder / "bbox_labels_600_hierarchy.json", folder / "class-descriptions-boxable.csv"
    )
    node_mid = graph.metadata["mids"]
    leaves = sorted(node_mid[graph.names[i]] for i in graph.leaves)
    chosen_leaves = [HIERARCHY_HUMAN_LEG, *[m for m in leaves if m != HIERARCHY_HUMAN_LEG][:3]]
    inside = set(node_mid.values())
    outside = [m for m in mids if m not in inside and m != OTHER_HUMAN_LEG][:3]
    return chosen_leaves, [OTHER_HUMAN_LEG, *outside]


def _build_model(
    mids: list[str], names: tuple[str, ...], active: list[int], images: torch.Tensor
) -> ASLModel:
    """Only the ``active`` outputs can fire, each on about three quarters of ``images``."""
    model = ASLModel.build(
        backbone={"name": "small-cnn", "widths": [8, 16], "input_size": IMAGE_SIZE},
        num_labels=NUM_OUTPUTS,
        label_names=names,
        label_mids=mids,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-30.0)
        weight = torch.randn(len(active), model.classifier.in_features, generator=generator)
        model.classifier.weight[active] = weight
        features = model.backbone(model.preprocess(images)).mean(dim=(2, 3))
        logits = features @ weight.T
        model.classifier.bias[active] = 0.3 - torch.quantile(logits, 0.25, dim=0)
    return model


# Most of the 9,605 outputs are never a ground-truth label of the few synthetic images.
pytestmark = [
    pytest.mark.slow,  # a run over a 9,600-label model (about 30 s)
    pytest.mark.filterwarnings("ignore:.*model labels are not dataset labels:UserWarning"),
]


@pytest.fixture(scope="module")
def openimages_run(
    openimages_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    write_openimages_labels: Callable[[Path, list[tuple[str, str, float]]], None],
    run_experiment: Callable[[dict[str, Any], Path], Path],
) -> Path:
    """A finished run (and its report) of the synthetic 9,605-output model."""
    work = tmp_path_factory.mktemp("openimages-scale")
    descriptions = read_class_descriptions(openimages_dir / "oidv6-class-descriptions.csv")
    mids = _model_mids(openimages_dir)
    names = names_for_mids(mids, descriptions)
    leaves, outside = _active_mids(openimages_dir, mids)
    active = [mids.index(m) for m in leaves + outside]

    ids = _write_images(work / "images")
    labels_csv = work / "labels.csv"
    write_openimages_labels(
        labels_csv, [(i, leaves[0], 0.0) for i in ids]
    )  # every image listed, no positive
    mid_to_name = dict(zip(mids, names, strict=True))
    loaded = OpenImagesDataset(labels_csv, work / "images", mid_to_name=mid_to_name, size=16)
    images = torch.stack([loaded[i][0] for i in range(len(loaded))])
    model = _build_model(mids, names, active, images)
    with torch.no_grad():
        predicted = model(images)[:, active] > 0
    # Ground truth = the clean prediction, so the eligible images are those the model gets right.
    write_openimages_labels(
        labels_csv,
        [
            (image_id, mids[a], 1.0)
            for row, image_id in enumerate(ids)
            for column, a in enumerate(active)
            if predicted[row, column]
        ],
    )
    save(model, work / "asl-9605.pt")

    config = {
        "name": "openimages-9605",
        "model": {"checkpoint": "asl-9605.pt", "label": "ASL-9605"},
        "dataset": {
            "name": "openimages",
            "options": {
                "labels_csv": str(labels_csv),
                "images_dir": str(work / "images"),
                # replaced by the model's own MIDs: oidv6 names two MIDs "Human leg"
                "class_descriptions": str(openimages_dir / "oidv6-class-descriptions.csv"),
                "size": IMAGE_SIZE,
            },
        },
        "graph": f"openimages:{openimages_dir}",
        "attacks": [
            {"name": "mla-u", "options": {"steps": 4}},
            {"name": "gmla", "options": {"steps": 4}},
        ],
        "eps": [0.1],
        "target_sets": {"sizes": list(SIZES), "mode": "openimages", "draws": 3},
        "images": {"per_target_set": 6},
        "batch_size": 8,
        "examples": 1,
        "seed": 0,
    }
    with pytest.warns(UserWarning, match="model labels are not in openimages"):
        return run_experiment(config, work)


def _store(run_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(run_dir / "results-rank0.sqlite")


def _meta(run_dir: Path) -> dict[str, object]:
    with _store(run_dir) as db:
        return {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")}


def test_outputs_meet_the_hierarchy_by_mid(openimages_run: Path, openimages_dir: Path) -> None:
    meta = _meta(openimages_run)
    names = meta["label_names"]
    assert isinstance(names, list) and len(names) == NUM_OUTPUTS
    graph = LabelGraph.from_json(meta["graph"])
    outside = set(meta["outside_graph"])
    hierarchy_size = len(read_class_descriptions(openimages_dir / "class-descriptions-boxable.csv"))
    assert len(names) - len(outside) == hierarchy_size  # every hierarchy class found by its MID
    human_legs = [n for n in names if n.startswith("Human leg")]
    assert sorted(human_legs) == sorted(
        [f"Human leg ({HIERARCHY_HUMAN_LEG})", f"Human leg ({OTHER_HUMAN_LEG})"]
    )
    assert f"Human leg ({OTHER_HUMAN_LEG})" in outside
    assert graph.index(f"Human leg ({HIERARCHY_HUMAN_LEG})") in set(graph.leaves.tolist())
    assert len(graph.edges) > 500  # the hierarchy's structure came through the renaming


def test_target_sets_are_half_leaves_half_outside(openimages_run: Path) -> None:
    meta = _meta(openimages_run)
    names = meta["label_names"]
    graph = LabelGraph.from_json(meta["graph"])
    leaves = {graph.names[i] for i in graph.leaves} - set(meta["outside_graph"])
    outside = set(meta["outside_graph"])
    with _store(openimages_run) as db:
        sets = db.execute("SELECT size, labels, n_selected FROM target_sets").fetchall()
        rows = db.execute("SELECT attack, linf, targets FROM results").fetchall()
    assert sorted({size for size, _, _ in sets}) == list(SIZES)
    for size, labels, _ in sets:
        chosen = [names[i] for i in json.loads(labels)]
        assert sum(n in leaves for n in chosen) == math.ceil(size / 2)
        assert sum(n in outside for n in chosen) == size - math.ceil(size / 2)
    assert len(rows) == 2 * sum(n for _, _, n in sets) > 0
    assert all(linf <= 0.1 + 1e-6 for _, linf, _ in rows)


def test_report_has_table_2_and_fig_6_over_the_sizes(openimages_run: Path) -> None:
    report = openimages_run / "report"
    with (report / "table2.csv").open(encoding="utf-8") as handle:
        table2 = list(csv.DictReader(handle))
    assert {row["attack"] for row in table2} == {"mla-u", "gmla"}
    assert all(f"nt_rate_k{k}" in table2[0] for k in SIZES)
    with (report / "table1.csv").open(encoding="utf-8") as handle:
        table1 = list(csv.DictReader(handle))
    assert {int(row["size"]) for row in table1} <= set(SIZES) and len(table1) >= 2
    assert (report / "fig6_sizes.png").stat().st_size > 0
    payload = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert payload["figures"]["Fig. 6 — metrics vs |Ω|"] == "fig6_sizes.png"
