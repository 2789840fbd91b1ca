"""Fixtures of the experiments tests: deterministic torch, one thread for the tiny models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    torch.manual_seed(0)
    if request.module.__name__.startswith("test_train"):  # engineer DATA's tests: left as they are
        yield
        return
    request.getfixturevalue("one_thread")
    yield
