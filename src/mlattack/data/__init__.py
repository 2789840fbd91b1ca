"""Datasets: PASCAL VOC, NUS-WIDE, OpenImages, image folders, synthetic hierarchical scenes, and
the real photos that ship inside installed packages (:class:`PhotoDataset`, :func:`sample_photos`).

Every dataset yields ``(image float [3, S, S] in [0, 1], labels float [C] of 0/1)`` and has
``label_names``, ``graph`` (a LabelGraph over ``label_names``, or None), ``labels`` (the label matrix)
and ``num_skipped`` (unreadable images skipped). Labels are closed upward through the graph: a label
is present when any of its descendants is.
"""

from __future__ import annotations

from mlattack.data.folder import ImageFolderDataset
from mlattack.data.images import ImageFileDataset, UnreadableImageError, load_image
from mlattack.data.labels import LabelSpace, make_label_space, resolve_graph
from mlattack.data.nuswide import NUSWideDataset
from mlattack.data.openimages import OpenImagesDataset, read_class_descriptions
from mlattack.data.photos import PhotoDataset, load_photo_manifest, sample_photos
from mlattack.data.registry import DATASETS, build_dataset
from mlattack.data.subset import LabelledSubset, split_dataset
from mlattack.data.synthetic import SyntheticScenes
from mlattack.data.voc import VOC_CLASSES, VOCDataset

__all__ = [
    "DATASETS",
    "VOC_CLASSES",
    "ImageFileDataset",
    "ImageFolderDataset",
    "LabelSpace",
    "LabelledSubset",
    "NUSWideDataset",
    "OpenImagesDataset",
    "PhotoDataset",
    "SyntheticScenes",
    "UnreadableImageError",
    "VOCDataset",
    "build_dataset",
    "load_image",
    "load_photo_manifest",
    "make_label_space",
    "read_class_descriptions",
    "resolve_graph",
    "sample_photos",
    "split_dataset",
]
