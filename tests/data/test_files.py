"""Files a user names (issue 17): FIFOs and other non-regular files, symlinks leaving a dataset
root, encodings and oversized CSV fields, label names too long or not valid Unicode.

A FIFO with no writer blocks ``open()`` for ever; each test that offers one runs under a short
timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mlattack._files import csv_rows, open_regular, read_text
from mlattack._validation import MAX_LABEL_NAME_LENGTH
from mlattack.data import (
    ImageFolderDataset,
    NUSWideDataset,
    OpenImagesDataset,
    UnreadableImageError,
    VOCDataset,
    load_image,
    make_label_space,
    read_class_descriptions,
    resolve_graph,
)
from mlattack.graph import LabelGraph
from mlattack.graph_sources.openimages import load_openimages_graph

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")


def make_fifo(path: Path) -> Path:
    """A FIFO at ``path`` (replacing any file there) that no process writes to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)
    return path


def link(path: Path, target: Path) -> Path:
    """A symlink at ``path`` (replacing any file there) to ``target``."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the dataset roots, holding an image and a text file."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    Image.new("RGB", (20, 20), (128, 128, 128)).save(folder / "secret.jpg")
    (folder / "secret.txt").write_text("000001\n")
    return folder


# ------------------------------------------------------------------ non-regular files


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_wherever_a_file_is_read(
    tmp_path: Path,
    folder_root: Path,
    voc_root: Path,
    nus_root: Path,
    openimages_files: tuple[Path, Path, Path],
) -> None:
    fifo = make_fifo(tmp_path / "pipe")
    not_regular = r"cannot be read: it is a FIFO \(named pipe\), not a regular file"
    for reader in (open_regular, read_text, lambda p, w: list(csv_rows(p, w))):
        with pytest.raises(ValueError, match=rf"what '.*pipe' {not_regular}"):
            reader(fifo, "what")
    make_fifo(folder_root / "labels.csv")
    with pytest.raises(ValueError, match=rf"labels CSV .*labels.csv' {not_regular}"):
        ImageFolderDataset(folder_root)
    with pytest.raises(ValueError, match=not_regular):
        ImageFolderDataset(folder_root, fifo)
    make_fifo(voc_root / "VOC2007" / "ImageSets" / "Main" / "test.txt")
    with pytest.raises(ValueError, match=rf"VOC image list .*test.txt' {not_regular}"):
        VOCDataset(voc_root)
    make_fifo(nus_root / "Concepts81.txt")
    with pytest.raises(ValueError, match=rf"NUS-WIDE concept list .* {not_regular}"):
        NUSWideDataset(nus_root)
    labels, images, descriptions = openimages_files
    with pytest.raises(ValueError, match=rf"OpenImages labels CSV .* {not_regular}"):
        OpenImagesDataset(fifo, images)
    with pytest.raises(ValueError, match=not_regular):
        OpenImagesDataset(labels, images, class_descriptions=fifo)
    with pytest.raises(ValueError, match=rf"label graph file .*pipe' {not_regular}"):
        LabelGraph.load(fifo)
    with pytest.raises(ValueError, match=not_regular):
        resolve_graph(str(fifo))
    with pytest.raises(ValueError, match=rf"OpenImages hierarchy file .* {not_regular}"):
        load_openimages_graph(fifo)
    with pytest.raises(ValueError, match=not_regular):
        read_class_descriptions(fifo)


@pytest.mark.timeout(20)
@pytest.mark.filterwarnings("ignore:dropping an unreadable image.*broken.jpg")
def test_a_fifo_among_the_images_is_an_unreadable_image(folder_root: Path) -> None:
    make_fifo(folder_root / "3.jpg")
    with pytest.raises(UnreadableImageError, match=r"3.jpg' cannot be read: it is a FIFO"):
        load_image(folder_root / "3.jpg", 16)
    lazy = ImageFolderDataset(folder_root, size=16)
    with pytest.raises(UnreadableImageError, match=r"3.jpg.*FIFO.*image 2"):
        lazy[2]
    assert lazy.skipped == {2}
    with pytest.warns(RuntimeWarning, match=r"dropping an unreadable image: .*3.jpg.*FIFO"):
        validated = ImageFolderDataset(folder_root, size=16, validate=True)
    assert len(validated) == 2 and validated.num_skipped == 2  # the FIFO and broken.jpg


# ------------------------------------------------------------------ symlinks


def test_symlinks_out_of_a_folder_root_are_refused(folder_root: Path, outside: Path) -> None:
    link(folder_root / "cats" / "1.jpg", outside / "secret.jpg")
    dataset = ImageFolderDataset(folder_root, size=16)
    with pytest.raises(ValueError, match=r"image .*cats/1.jpg' leads outside the dataset root"):
        dataset[0]
    with pytest.raises(ValueError, match="leads outside the dataset root"):
        ImageFolderDataset(folder_root, size=16, validate=True)
    # the default labels.csv is inside the root; one given by path may lie anywhere
    (outside / "labels.csv").write_text("3.jpg,cat\n")
    link(folder_root / "labels.csv", outside / "labels.csv")
    with pytest.raises(ValueError, match=r"labels CSV .*labels.csv' leads outside"):
        ImageFolderDataset(folder_root)
    assert ImageFolderDataset(folder_root, outside / "labels.csv").label_names == ("cat",)


def test_symlinks_inside_the_root_and_a_linked_root_are_followed(
    folder_root: Path, tmp_path: Path
) -> None:
    link(folder_root / "cats" / "1.jpg", folder_root / "3.jpg")  # stays inside
    linked_root = link(tmp_path / "linked", folder_root)
    dataset = ImageFolderDataset(linked_root, size=16)
    image, _ = dataset[0]
    assert float(image[1].mean()) > 0.6  # the green 3.jpg


def test_symlinks_out_of_a_voc_root_are_refused(voc_root: Path, outside: Path) -> None:
    base = voc_root / "VOC2007"
    link(base / "JPEGImages" / "000001.jpg", outside / "secret.jpg")
    with pytest.raises(ValueError, match=r"000001.jpg' leads outside the dataset root"):
        VOCDataset(voc_root, size=16)[0]
    annotation = base / "Annotations" / "000002.xml"
    (outside / "000002.xml").write_text(annotation.read_text())
    link(annotation, outside / "000002.xml")
    with pytest.raises(ValueError, match=r"VOC annotation .*000002.xml' leads outside"):
        VOCDataset(voc_root)
    link(base / "ImageSets" / "Main" / "test.txt", outside / "secret.txt")
    with pytest.raises(ValueError, match=r"VOC image list .*test.txt' leads outside"):
        VOCDataset(voc_root)


@pytest.mark.filterwarnings("ignore:.*MIDs outside the label space")
def test_symlinks_out_of_an_openimages_folder_are_refused(
    openimages_files: tuple[Path, Path, Path], outside: Path
) -> None:
    labels, images, descriptions = openimages_files
    link(images / "img_b.jpg", outside / "secret.jpg")
    dataset = OpenImagesDataset(labels, images, class_descriptions=descriptions, size=16)
    dataset[0]
    with pytest.raises(ValueError, match=r"img_b.jpg' leads outside the dataset root"):
        dataset[1]


def test_symlinks_out_of_a_nus_wide_root_are_refused(nus_root: Path, outside: Path) -> None:
    link(nus_root / "Flickr" / "actor" / "0002_12.jpg", outside / "secret.jpg")
    with pytest.raises(ValueError, match=r"0002_12.jpg' leads outside the dataset root"):
        NUSWideDataset(nus_root, size=16)[1]
    concept_file = nus_root / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Test.txt"
    (outside / "sky.txt").write_text(concept_file.read_text())
    link(concept_file, outside / "sky.txt")
    with pytest.raises(ValueError, match=r"NUS-WIDE label .*Labels_sky_Test.txt' leads outside"):
        NUSWideDataset(nus_root)


# ------------------------------------------------------------------ encodings and CSV limits


def test_a_labels_csv_with_a_byte_order_mark_is_read(folder_root: Path) -> None:
    text = (folder_root / "labels.csv").read_text()
    (folder_root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    dataset = ImageFolderDataset(folder_root, size=16)
    assert dataset.label_names == ("animal", "car", "cat") and len(dataset) == 4


def test_a_labels_csv_with_old_mac_line_endings_is_read(folder_root: Path) -> None:
    text = (folder_root / "labels.csv").read_text()
    (folder_root / "labels.csv").write_bytes(text.replace("\n", "\r").encode())
    assert ImageFolderDataset(folder_root, size=16).labels.tolist() == [
        [1, 0, 1],
        [0, 1, 0],
        [0, 0, 0],
        [0, 0, 1],
    ]


def test_a_latin1_labels_csv_is_refused_naming_the_line(folder_root: Path) -> None:
    (folder_root / "labels.csv").write_bytes("filename,labels\n3.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(
        ValueError, match=r"labels.csv', line 2: not UTF-8 text \(byte 0xe9 at column 10\)"
    ):
        ImageFolderDataset(folder_root)
    (folder_root / "list.txt").write_bytes(b"ok\nnot \xff here\n")
    with pytest.raises(ValueError, match=r"list.txt', line 2: not UTF-8.*0xff at column 5"):
        read_text(folder_root / "list.txt", "list")


def test_a_csv_field_over_the_reader_limit_is_refused_naming_the_line(
    folder_root: Path, openimages_files: tuple[Path, Path, Path]
) -> None:
    huge = "x" * 131_073
    (folder_root / "labels.csv").write_text(f'filename,labels\n3.jpg,cat\n"{huge}",cat\n')
    with pytest.raises(ValueError, match=r"labels.csv', line 3: a field holds more than 131,072"):
        ImageFolderDataset(folder_root)
    labels, images, _ = openimages_files
    labels.write_text(f"ImageID,LabelName,Confidence\nimg_a,{huge},1\n")
    with pytest.raises(ValueError, match=r"labels.csv', line 2: a field holds more than 131,072"):
        OpenImagesDataset(labels, images)


# ------------------------------------------------------------------ label names


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "build",
    [
        lambda name: LabelGraph(["a", name]),
        lambda name: make_label_space(["a", name]),
        lambda name: make_label_space(["a"], label_names=["a", name]),
    ],
)
def test_label_names_have_a_documented_length_cap(build: Callable[[str], Any]) -> None:
    build("n" * MAX_LABEL_NAME_LENGTH)
    with pytest.raises(ValueError, match=r"is 200,000 characters long.*at most 512 characters"):
        build("n" * 200_000)


def test_a_label_name_too_long_in_a_dataset_csv_is_refused(folder_root: Path) -> None:
    (folder_root / "labels.csv").write_text(f"3.jpg,{'n' * 1000}\n")
    with pytest.raises(ValueError, match=r"labels.csv:1: label is 1,000 characters long"):
        ImageFolderDataset(folder_root)


@pytest.mark.parametrize(
    "build",
    [
        lambda name: LabelGraph(["a", name]),
        lambda name: make_label_space(["a"], label_names=["a", name]),
    ],
)
def test_a_lone_surrogate_in_a_label_name_is_refused(build: Callable[[str], Any]) -> None:
    with pytest.raises(ValueError, match=r"holds a lone surrogate \('\\ud800' at position 3\)"):
        build("dog\ud800")


def test_a_control_character_in_a_csv_label_is_refused_naming_the_line(folder_root: Path) -> None:
    (folder_root / "labels.csv").write_text("filename,labels\n3.jpg,c\0t\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: label 'c\\x00t' holds a control char"):
        ImageFolderDataset(folder_root)
