"""evaluate(preset="official") against the authors' metric script (``cvpr24/compute_asr.py``),
run on the synthetic predictions of ``../shared/data/official-reference/metrics_cases.npz``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from mlattack.attacks.base import AttackResult
from mlattack.graph import LabelGraph
from mlattack.metrics import Metrics, evaluate, summarize


@pytest.fixture(scope="module")
def cases(pytestconfig: pytest.Config) -> dict[str, Any]:
    # ../shared/data beside the project root, as SHARED_DATA in tests/conftest.py
    reference = pytestconfig.rootpath.parent / "shared" / "data" / "official-reference"
    path = reference / "metrics_cases.npz"
    if not path.exists():
        pytest.skip(f"official reference data not found under {reference}")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["json"] = json.loads((reference / "metrics_cases.json").read_text())
    return arrays


@pytest.fixture(scope="module")
def graph(cases: dict[str, Any]) -> LabelGraph:
    return LabelGraph([str(name) for name in cases["label_names"]], cases["edges"].tolist())


def _result(clean: np.ndarray, adv: np.ndarray, targets: np.ndarray, size: int = 4) -> AttackResult:
    """An AttackResult holding only predictions (the images are blank: SSIM plays no part)."""
    batch = clean.shape[0]
    clean_t, adv_t = torch.from_numpy(clean), torch.from_numpy(adv)
    images = torch.zeros(batch, 3, size, size)
    return AttackResult(
        adv=images.clone(),
        images=images,
        clean_pred=clean_t,
        adv_pred=adv_t,
        targets=torch.from_numpy(np.broadcast_to(targets, clean.shape).copy()),
        flip_set=torch.from_numpy(np.broadcast_to(targets, clean.shape).copy()),
        success=torch.zeros(batch, dtype=torch.bool),
        iterations=torch.zeros(batch, dtype=torch.int64),
        eps=torch.full((batch,), 0.01),
        attacked=torch.ones(batch, dtype=torch.bool),
        gradient_failed=torch.zeros(batch, dtype=torch.bool),
        clean_logits=torch.where(clean_t, 1.0, -1.0),
        adv_logits=torch.where(adv_t, 1.0, -1.0),
        name="reference",
    )


def _per_set(cases: dict[str, Any], graph: LabelGraph, **options: Any) -> list[Metrics]:
    with pytest.warns(UserWarning, match="SSIM window"):
        return [
            evaluate(
                _result(cases["clean"][k], cases["adv"][k], cases["targets"][k]), graph, **options
            )
            for k in range(len(cases["fr_n"]))
        ]


def test_official_preset_reproduces_every_set(cases: dict[str, Any], graph: LabelGraph) -> None:
    per_set = _per_set(cases, graph, preset="official")
    for k, metrics in enumerate(per_set):
        np.testing.assert_array_equal(metrics.success, cases["success"][k], err_msg=f"set {k}")
        np.testing.assert_array_equal(
            metrics.semantic_success, cases["success"][k] & cases["local_ok"][k], err_msg=f"set {k}"
        )
        np.testing.assert_allclose(
            metrics.nt_flip_fraction, cases["ntr_image"][k], rtol=0, atol=1e-9, err_msg=f"set {k}"
        )
    assert np.abs([m.fr_naive for m in per_set] - cases["fr_n"]).max() <= 1e-9
    assert np.abs([m.fr_semantic for m in per_set] - cases["fr_s"]).max() <= 1e-9
    assert np.abs([m.nt_rate for m in per_set] - cases["nt_r"]).max() <= 1e-9
    assert all(m.nt_denominator == "attacked" and m.official_closure for m in per_set)

    summary = summarize(per_set)
    official = cases["json"]["summary"]
    for ours, theirs in (("fr_naive", "fr_n"), ("fr_semantic", "fr_s"), ("nt_rate", "nt_r")):
        assert summary[f"{ours}_mean"] == pytest.approx(official[theirs]["mean"], abs=1e-9)
        assert summary[f"{ours}_std"] == pytest.approx(official[theirs]["std"], abs=1e-9)
    assert summary["n_sets"] == len(per_set)


def test_each_official_choice_matters(cases: dict[str, Any], graph: LabelGraph) -> None:
    """Leaving out either official option breaks the match: both are needed."""
    reference = cases["nt_r"]
    for options in ({"nt_denominator": "attacked"}, {"official_closure": True}, {}):
        values = np.array([m.nt_rate for m in _per_set(cases, graph, **options)])
        assert not np.allclose(np.nan_to_num(values, nan=-1.0), reference, rtol=0, atol=1e-9)
    # an option given with the preset is applied on top of it
    on_top = _per_set(cases, graph, preset="official", nt_denominator="successful")
    assert all(m.nt_denominator == "successful" and m.official_closure for m in on_top)


def test_default_stays_eq_13(cases: dict[str, Any], graph: LabelGraph) -> None:
    """Without a preset NT_R averages over the successful images only (eq. 13)."""
    for k, metrics in enumerate(_per_set(cases, graph)):
        success = cases["success"][k]
        assert np.isnan(metrics.nt_flip_fraction[~success]).all()
        assert metrics.n_nt == success.sum()
        assert metrics.nt_denominator == "successful" and not metrics.official_closure
