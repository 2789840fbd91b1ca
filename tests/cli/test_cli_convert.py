"""`mlattack convert`: a released ASL OpenImages-layout file with 9,605 outputs becomes an mlattack
checkpoint that `mlattack run` and `report` take to Table 2 and Fig. 6.

The file is the tiny official ASL OpenImages model (../shared/data/official-models, bottleneck head)
with its head widened to 9,605 outputs: its 40 trained rows go to 20 leaves of the real hierarchy
and 20 MIDs outside it, the new rows never fire. The dataset is a folder of JPEGs with an
OpenImages labels CSV whose positives are the model's clean predictions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlattack.cli import main
from mlattack.data.openimages import OpenImagesDataset
from mlattack.graph_sources.openimages import load_openimages_graph, read_class_descriptions
from mlattack.models import ASLModel, load, load_asl_checkpoint, read_metadata

NUM_OUTPUTS = 9_605
IMAGE_SIZE = 32  # the smallest side TResNet takes (a multiple of 32): a fast run
N_IMAGES = 8

pytestmark = pytest.mark.filterwarnings("ignore:.*model labels are not dataset labels:UserWarning")


@pytest.fixture(scope="module")
def tiny_openimages(shared_data_dir: Callable[..., Path]) -> Path:
    return shared_data_dir("official-models") / "tiny" / "asl_tiny_openimages.pth"


def _model_mids(folder: Path) -> tuple[list[str], list[int]]:
    """9,605 MIDs (every hierarchy class, then others of oidv6) and the 40 active outputs: 20
    hierarchy leaves and 20 MIDs outside the hierarchy."""
    boxable = read_class_descriptions(folder / "class-descriptions-boxable.csv")
    others = sorted(
        set(read_class_descriptions(folder / "oidv6-class-descriptions.csv")) - set(boxable)
    )
    mids = sorted(set(boxable) | set(others[: NUM_OUTPUTS - len(boxable)]))
    graph = load_openimages_graph(
        folder / "bbox_labels_600_hierarchy.json", folder / "class-descriptions-boxable.csv"
    )
    node_mid = graph.metadata["mids"]
    leaves = sorted(node_mid[graph.names[i]] for i in graph.leaves)[:20]
    inside = set(node_mid.values())
    outside = [mid for mid in mids if mid not in inside][:20]
    return mids, [mids.index(mid) for mid in leaves + outside]


def _widened_release(source: Path, target: Path, mids: list[str], active: list[int]) -> Path:
    """The tiny file in the released OpenImages layout with 9,605 outputs (display names only,
    as the release: the MIDs come from a separate list)."""
    data: dict[str, Any] = torch.load(source, weights_only=True)
    state = data["model"]
    weight, bias = state["head.fc.FC.weight"], state["head.fc.FC.bias"]
    wide_weight = torch.zeros(NUM_OUTPUTS, weight.shape[1])
    wide_bias = torch.full((NUM_OUTPUTS,), -30.0)  # the new outputs never fire
    wide_weight[active], wide_bias[active] = weight, bias
    state["head.fc.FC.weight"], state["head.fc.FC.bias"] = wide_weight, wide_bias
    names = {i: f"name {i % 9000}" for i in range(NUM_OUTPUTS)}  # repeated, like the release's
    torch.save({"model": state, "num_classes": NUM_OUTPUTS, "idx_to_class": names}, target)
    return target


@pytest.fixture(scope="module")
def converted_run(
    tiny_openimages: Path,
    openimages_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    write_openimages_labels: Callable[[Path, list[tuple[str, str, float]]], None],
    run_experiment: Callable[[dict[str, Any], Path], Path],
) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("convert-openimages")
    mids, active = _model_mids(openimages_dir)
    release = _widened_release(tiny_openimages, work / "Open_ImagesV6_tiny.pth", mids, active)
    mid_list = work / "mids.txt"
    mid_list.write_text("\n".join(mids) + "\n", encoding="utf-8")
    converted = work / "openimages-asl.pt"
    descriptions = openimages_dir / "oidv6-class-descriptions.csv"
    assert main([
        "convert", "--family", "asl", str(release), "-o", str(converted),
        "--input-size", str(IMAGE_SIZE), "--mids", str(mid_list),
        "--class-descriptions", str(descriptions),
    ]) == 0  # fmt: skip

    images_dir = work / "images"
    images_dir.mkdir()
    generator = np.random.default_rng(0)
    ids = [f"img{i:02d}" for i in range(N_IMAGES)]
    for image_id in ids:
        coarse = generator.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR).save(
            images_dir / f"{image_id}.jpg", quality=95
        )
    labels_csv = work / "labels.csv"
    write_openimages_labels(labels_csv, [(i, mids[active[0]], 0.0) for i in ids])
    model = load(converted)
    dataset = OpenImagesDataset(
        labels_csv,
        images_dir,
        mid_to_name=dict(zip(mids, model.label_names, strict=True)),
        size=IMAGE_SIZE,
    )
    with torch.no_grad():
        predicted = model(torch.stack([dataset[i][0] for i in range(len(dataset))])) > 0
    assert not predicted[:, [i for i in range(NUM_OUTPUTS) if i not in set(active)]].any()
    write_openimages_labels(
        labels_csv,
        [(ids[row], mids[a], 1.0) for row in range(N_IMAGES) for a in active if predicted[row, a]],
    )
    config = {
        "name": "openimages-converted",
        "model": {"checkpoint": converted.name, "label": "ASL"},
        "dataset": {
            "name": "openimages",
            "options": {
                "labels_csv": str(labels_csv),
                "images_dir": str(images_dir),
                "class_descriptions": str(descriptions),
                "size": IMAGE_SIZE,
            },
        },
        "graph": f"openimages:{openimages_dir}",
        "attacks": [
            {"name": "mla-u", "options": {"steps": 2}},
            {"name": "gmla", "options": {"steps": 2}},
        ],
        "eps": [0.05],
        "target_sets": {"sizes": [1, 2], "mode": "openimages", "draws": 2},
        "images": {"per_target_set": 3},
        "batch_size": 8,
        "seed": 0,
    }
    with pytest.warns(UserWarning, match="model labels are not in openimages"):
        run_dir = run_experiment(config, work)
    return {"release": release, "converted": converted, "run": run_dir, "mids": mid_list}


@pytest.mark.slow  # the module's run: convert, then run and report a small experiment
def test_converted_checkpoint_carries_mids_input_size_and_normalisation(
    converted_run: dict[str, Path], openimages_dir: Path
) -> None:
    metadata = read_metadata(converted_run["converted"])
    assert metadata["input_size"] == IMAGE_SIZE
    assert metadata["preprocessing"]["mean"] == [0.0, 0.0, 0.0]
    assert metadata["preprocessing"]["std"] == [1.0, 1.0, 1.0]
    mids = converted_run["mids"].read_text("utf-8").split()
    assert metadata["model"]["label_mids"] == mids
    assert metadata["model"]["bottleneck_features"] == 512
    assert metadata["extra"]["converted_from"]["family"] == "asl"
    names = read_class_descriptions(openimages_dir / "oidv6-class-descriptions.csv")
    assert metadata["label_names"][0].startswith(names[mids[0]])
    # the converted model computes what the released file does
    converted = load(converted_run["converted"])
    released = load_asl_checkpoint(
        converted_run["release"], input_size=IMAGE_SIZE, mids=converted_run["mids"]
    )
    assert isinstance(converted, ASLModel)
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(converted(images), released(images), rtol=0, atol=0)


@pytest.mark.slow
def test_run_on_the_converted_checkpoint_reports_table_2_and_fig_6(
    converted_run: dict[str, Path],
) -> None:
    report = converted_run["run"] / "report"
    with (report / "table2.csv").open(encoding="utf-8") as handle:
        table2 = list(csv.DictReader(handle))
    assert {row["attack"] for row in table2} == {"mla-u", "gmla"}
    assert all(f"nt_rate_k{k}" in table2[0] for k in (1, 2))
    assert (report / "fig6_sizes.png").stat().st_size > 0
    payload = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert payload["figures"]["Fig. 6 — metrics vs |Ω|"] == "fig6_sizes.png"


def test_convert_refuses_options_of_another_family(
    tiny_openimages: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.pt"
    code = main(
        [
            "convert",
            "--family",
            "asl",
            str(tiny_openimages),
            "-o",
            str(out),
            "--word-vectors",
            "x.pkl",
        ]
    )
    assert code == 2 and "--word-vectors is for ML-GCN files" in capsys.readouterr().err
    code = main(
        [
            "convert",
            "--family",
            "ml-decoder",
            str(tiny_openimages),
            "-o",
            str(out),
            "--input-size",
            "128",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "asl_tiny_openimages.pth: key 'head.fc.FC.weight'" in err and "ASL" in err
    assert not out.exists()
