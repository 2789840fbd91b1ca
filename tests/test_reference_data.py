"""The reference data copied into the repository is present and unchanged (tests/reference_data)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

REFERENCE_DATA = Path(__file__).resolve().parent / "reference_data"

# SHA-256 of the files as copied from ../shared/data (PROVENANCE.md says from where).
EXPECTED = {
    "official_reference/README.md": "0a97efb4fd8eb75047bec65f3987a2f42ac238600f1e3807b0b867ce0262c6da",
    "official_reference/apgd_cases.json": "889e90cbd5ad96eb4c2559bc4db31bab0750b4a1c1c713daff4d45cd7f62a352",
    "official_reference/apgd_cases.npz": "163094f8d8c13f1fa5706004ed73aecd9751f5e34beddee8b8930cbe59bd6f13",
    "official_reference/metrics_cases.json": "6fc4210980d25ac24259d15739badc0c9bceb46bfacc18b632dbb1c02304d301",
    "official_reference/metrics_cases.npz": "2c0284c9bfab08174644204b50028fc6b225ae3687509b792114a81b4c24f7e9",
    "official_reference/target_sets.npz": "33163b6caf7db2c5f9da413a82416954db95016c67817b9bff0c3c452b356ed1",
    "official_reference/tiny_model.npz": "990c8e7c325016bc5021c20d6f8a9cb07c60193b0e9840f60a3f3ab493e10e68",
    "openimages/bbox_labels_600_hierarchy.json": "dbfb4df453228c95d4154772b615ec65a787abd5d451b8d20c4ba08a4041f3a6",
    "openimages/class-descriptions-boxable.csv": "9eca3348fda2fca964d72e86a1d16d6bdceaa54bcd070c9e40d0fc93b05de9e6",
    "openimages/oidv6-class-descriptions.csv": "d48da4c56ce7b4ef1c68165a17ed80a09b29e3f39156909ad5cbec9bb0c40318",
}


def test_every_reference_file_is_present_unchanged_and_listed() -> None:
    found = {
        str(path.relative_to(REFERENCE_DATA)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in REFERENCE_DATA.rglob("*")
        if path.is_file() and path.name != "PROVENANCE.md"
    }
    assert found == EXPECTED


def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(
    shared_data_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-folder"):
        shared_data_dir("no-such-folder")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no-such-folder"):
        shared_data_dir("no-such-folder")


def test_present_shared_data_is_returned(
    shared_data_dir: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "folder").mkdir()
    monkeypatch.setenv("CI", "true")
    assert shared_data_dir("folder", root=tmp_path) == tmp_path / "folder"
