"""The SQLite results store: schema checks, atomic units, no duplicates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mlattack.experiments import SCHEMA_VERSION, ResultStore, StoreError
from mlattack.experiments.store import decode_labels, encode_labels

META = {"config_hash": "abc", "label_names": ["a", "b"]}


def test_labels_round_trip() -> None:
    mask = np.array([False, True, False, True, True])
    assert encode_labels(mask) == "[1,3,4]"
    assert decode_labels(encode_labels(mask), 5).tolist() == mask.tolist()


def test_meta_and_wal(tmp_path: Path) -> None:
    with ResultStore.create_or_open(tmp_path / "results-rank0.sqlite", META) as store:
        meta = store.meta()
        assert meta["schema_version"] == SCHEMA_VERSION and meta["label_names"] == ["a", "b"]
        assert store.query("PRAGMA journal_mode")[0][0] == "wal"


def test_unit_written_once(tmp_path: Path) -> None:
    with ResultStore.create_or_open(tmp_path / "s.sqlite", META) as store:
        store.write_unit("u1", gradcorr=[(0, 1, 0.5, 0.1)])
        with pytest.raises(sqlite3.IntegrityError):
            store.write_unit("u1", gradcorr=[(0, 2, 0.5, 0.1)])
        with pytest.raises(
            sqlite3.IntegrityError
        ):  # same record under another unit: refused, rolled back
            store.write_unit("u2", gradcorr=[(0, 1, 0.5, 0.1)])
        assert store.done_units() == {"u1"}
        assert store.query("SELECT COUNT(*) FROM gradcorr")[0][0] == 1


def test_other_config_is_refused(tmp_path: Path) -> None:
    ResultStore.create_or_open(tmp_path / "s.sqlite", META).close()
    with pytest.raises(StoreError, match="different config.*--force"):
        ResultStore.create_or_open(tmp_path / "s.sqlite", {**META, "config_hash": "xyz"})


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ResultStore.create_or_open(path, META).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, newer"):
        ResultStore.open_readonly(path)
    with pytest.raises(StoreError, match="newer"):
        ResultStore.create_or_open(path, META)


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"not a database at all" * 10)
    with pytest.raises(StoreError, match="not an mlattack results store"):
        ResultStore.open_readonly(path)


def test_a_store_written_before_the_nonfinite_column_is_read_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "results-rank0.sqlite"
    ResultStore.create_or_open(path, META).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE results DROP COLUMN nonfinite_logits")  # as schema 1 first shipped
    db.commit()
    db.close()
    with ResultStore.open_readonly(path) as store:
        assert not store.has_column("results", "nonfinite_logits")
        assert store.column_or_default("results", "nonfinite_logits") == "0"
        assert store.query("SELECT SUM(0) FROM results") == [(None,)]
    with ResultStore.create_or_open(path, META) as store:  # a writer adds it, with its default
        assert store.column_or_default("results", "nonfinite_logits") == "nonfinite_logits"
