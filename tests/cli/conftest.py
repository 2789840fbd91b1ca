"""Fixtures the CLI tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``model.pt``: an untrained small CNN for the synthetic dataset (seed 0)."""
    from mlattack.data import build_dataset
    from mlattack.models import build_model, save

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    data = build_dataset("synthetic", n=2, size=16, split="train")
    model = build_model(
        "small-cnn",
        num_labels=len(data.label_names),
        label_names=data.label_names,
        graph=data.graph,
    )  # type: ignore[attr-defined]
    save(model, folder / "model.pt")
    return folder
