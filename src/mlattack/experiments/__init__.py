"""Experiments: configs, the resumable runner, the results store, reports and figures.

``train`` (model training) lives here too but is imported on its own (``mlattack.experiments.train``).
"""

from __future__ import annotations

from mlattack.experiments.config import ExperimentConfig
from mlattack.experiments.report import build_report
from mlattack.experiments.runner import run_experiment
from mlattack.experiments.store import SCHEMA_VERSION, ResultStore, StoreError

__all__ = [
    "ExperimentConfig",
    "ResultStore",
    "SCHEMA_VERSION",
    "StoreError",
    "build_report",
    "run_experiment",
]
