"""Tiny dataset folders written by the tests: fake VOC, NUS-WIDE, OpenImages and image folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlattack.data.voc import VOC_CLASSES

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (20, 40, 230),
    "grey": (128, 128, 128),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _present_labels(dataset: Any, row: int) -> set[str]:
    return {n for n, v in zip(dataset.label_names, dataset.labels[row].tolist(), strict=True) if v}


@pytest.fixture
def labels_on() -> Callable[[Any, int], set[str]]:
    """``labels_on(dataset, row)``: the names of the labels on in the dataset's row."""
    return _present_labels


def write_image(path: Path, colour: str = "red", size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size, size + 4, 3), dtype=np.uint8)
    array[:] = COLOURS[colour]
    Image.fromarray(array).save(path, format="JPEG" if path.suffix == ".jpg" else None)
    return path


def write_corrupt(path: Path) -> Path:
    """A file named like a JPEG whose content is a truncated JPEG (header, no data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    good = path.with_name("_full.jpg")
    write_image(good, "grey")
    path.write_bytes(good.read_bytes()[:40])
    good.unlink()
    return path


def _voc_xml(objects: list[tuple[str, int]]) -> str:
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult></object>"
        for name, difficult in objects
    )
    return f"<annotation><folder>VOC2007</folder>{body}</annotation>"


VOC_OBJECTS = {
    "000001": [("dog", 0), ("person", 0)],
    "000002": [("car", 0), ("bicycle", 1)],
    "000003": [("cat", 0)],
    "000004": [("sheep", 0)],  # its JPEG is corrupt
}


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """``VOCdevkit/VOC2007`` with four test images (the last one corrupt), XMLs and class lists."""
    base = tmp_path / "VOCdevkit" / "VOC2007"
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (base / "Annotations").mkdir()
    colours = ["red", "green", "blue"]
    for i, (image_id, objects) in enumerate(VOC_OBJECTS.items()):
        (base / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(objects))
        if image_id == "000004":
            write_corrupt(base / "JPEGImages" / f"{image_id}.jpg")
        else:
            write_image(base / "JPEGImages" / f"{image_id}.jpg", colours[i])
    (main / "test.txt").write_text("".join(f"{i}\n" for i in VOC_OBJECTS))
    for name in VOC_CLASSES:
        lines = []
        for image_id, objects in VOC_OBJECTS.items():
            flags = [d for n, d in objects if n == name]
            value = "-1" if not flags else ("1" if 0 in flags else "0")
            lines.append(f"{image_id} {value}\n")
        (main / f"{name}_test.txt").write_text("".join(lines))
    return tmp_path / "VOCdevkit"


NUS_CONCEPTS = ("animal", "dog", "sky")
NUS_IMAGES = {  # list entry -> labels
    r"C:\ImageData\Flickr\actor\0001_11.jpg": {"animal", "dog"},
    r"C:\ImageData\Flickr\actor\0002_12.jpg": {"sky"},
    r"C:\ImageData\Flickr\beach\0003_13.jpg": set(),
}


@pytest.fixture
def nus_root(tmp_path: Path) -> Path:
    root = tmp_path / "nus"
    (root / "ImageList").mkdir(parents=True)
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    (root / "Concepts81.txt").write_text("".join(f"{c}\n" for c in NUS_CONCEPTS))
    entries = list(NUS_IMAGES)
    (root / "ImageList" / "TestImagelist.txt").write_text(
        "\r\n".join(e.split("Flickr\\")[1] for e in entries)
    )
    for concept in NUS_CONCEPTS:
        values = ["1" if concept in NUS_IMAGES[e] else "0" for e in entries]
        (labels_dir / f"Labels_{concept}_Test.txt").write_text("\n".join(values) + "\n")
    for entry, colour in zip(entries, ["red", "green", "blue"], strict=True):
        folder, name = entry.split("\\")[-2:]
        write_image(root / "Flickr" / folder / name, colour)
    return root


OPENIMAGES_ROWS = [
    ("img_a", "verification", "/m/dog", "1"),
    ("img_a", "verification", "/m/cat", "0"),
    ("img_b", "verification", "/m/cat", "1"),
    ("img_b", "verification", "/m/unknown", "1"),
    ("img_c", "verification", "/m/car", "1"),
]
OPENIMAGES_NAMES = {"/m/dog": "Dog", "/m/cat": "Cat", "/m/car": "Car", "/m/animal": "Animal"}


@pytest.fixture
def openimages_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(labels CSV, images folder, class descriptions CSV)."""
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "ImageID,Source,LabelName,Confidence\n"
        + "".join(",".join(row) + "\n" for row in OPENIMAGES_ROWS)
    )
    descriptions = tmp_path / "class-descriptions.csv"
    descriptions.write_text("".join(f"{mid},{name}\n" for mid, name in OPENIMAGES_NAMES.items()))
    images = tmp_path / "images"
    for image_id, colour in zip(["img_a", "img_b", "img_c"], ["red", "green", "blue"], strict=True):
        write_image(images / f"{image_id}.jpg", colour)
    return labels, images, descriptions


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    write_image(root / "cats" / "1.jpg", "red")
    write_image(root / "cars" / "2.png", "blue")
    write_image(root / "3.jpg", "green")
    write_corrupt(root / "broken.jpg")
    (root / "labels.csv").write_text(
        "filename,labels\ncats/1.jpg,cat;animal\ncars/2.png,car\n\n3.jpg,\nbroken.jpg,cat\n"
    )
    return root
