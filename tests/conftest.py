"""Shared test set-up: deterministic, quiet, headless."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def openimages_dir() -> Path:
    """The real OpenImages hierarchy files beside the checkout (``../shared/data/openimages``)."""
    path = SHARED_DATA / "openimages"
    if not (path / "bbox_labels_600_hierarchy.json").exists():
        pytest.skip(f"OpenImages hierarchy not found under {path}")
    return path
