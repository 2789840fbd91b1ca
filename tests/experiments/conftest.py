"""Fixtures of the experiments tests: deterministic torch, tiny model and data."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
