"""The results store: one SQLite file per rank, append-only, resumable.

Each unit of work (one attack call over one batch of images, or one gradient-correlation or transfer
batch) is written in a single transaction together with its marker in ``units``; a unit is either
fully present or absent, so a run killed at any point resumes by skipping the units already marked.
UNIQUE keys on every record table make a duplicate a loud error rather than a silent double count.

Label sets (predictions, targets, flip sets) are stored as JSON lists of label indices: compact for
the few labels on per image, and readable with any SQLite client.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
STORE_GLOB = "results-rank*.sqlite"

RESULT_COLUMNS = (
    "ts_id",
    "image_id",
    "attack",
    "eps",
    "attacked",
    "success",
    "semantic_success",
    "nt_flip_fraction",
    "linf",
    "l2",
    "ssim",
    "iterations",
    "seconds",
    "gradient_failed",
    "clean_pred",
    "adv_pred",
    "targets",
    "flip_set",
)
GRADCORR_COLUMNS = ("ts_id", "image_id", "cos_mla_c", "cos_gmla")
TRANSFER_COLUMNS = (
    "source",
    "target",
    "attack",
    "eps",
    "ts_id",
    "image_id",
    "fooled",
    "eligible",
    "success",
    "semantic_success",
)
EXAMPLE_COLUMNS = ("ts_id", "image_id", "attack", "eps", "path")
TARGET_SET_COLUMNS = ("ts_id", "size", "labels", "n_eligible", "n_selected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (unit_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS target_sets (
    ts_id INTEGER PRIMARY KEY, size INTEGER NOT NULL, labels TEXT NOT NULL,
    n_eligible INTEGER NOT NULL, n_selected INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    ts_id INTEGER NOT NULL, image_id INTEGER NOT NULL, attack TEXT NOT NULL, eps REAL NOT NULL,
    attacked INTEGER NOT NULL, success INTEGER NOT NULL, semantic_success INTEGER NOT NULL,
    nt_flip_fraction REAL, linf REAL NOT NULL, l2 REAL NOT NULL, ssim REAL,
    iterations INTEGER NOT NULL, seconds REAL NOT NULL, gradient_failed INTEGER NOT NULL,
    clean_pred TEXT NOT NULL, adv_pred TEXT NOT NULL, targets TEXT NOT NULL, flip_set TEXT NOT NULL,
    UNIQUE (ts_id, image_id, attack, eps));
CREATE TABLE IF NOT EXISTS gradcorr (
    ts_id INTEGER NOT NULL, image_id INTEGER NOT NULL, cos_mla_c REAL, cos_gmla REAL,
    UNIQUE (ts_id, image_id));
CREATE TABLE IF NOT EXISTS transfer (
    source TEXT NOT NULL, target TEXT NOT NULL, attack TEXT NOT NULL, eps REAL NOT NULL,
    ts_id INTEGER NOT NULL, image_id INTEGER NOT NULL, fooled INTEGER NOT NULL,
    eligible INTEGER NOT NULL, success INTEGER NOT NULL, semantic_success INTEGER NOT NULL,
    UNIQUE (source, target, ts_id, image_id));
CREATE TABLE IF NOT EXISTS examples (
    ts_id INTEGER NOT NULL, image_id INTEGER NOT NULL, attack TEXT NOT NULL, eps REAL NOT NULL,
    path TEXT NOT NULL, UNIQUE (ts_id, image_id, attack, eps));
"""


class StoreError(ValueError):
    """A store that cannot be used: another config, a newer schema, a damaged file."""


def encode_labels(mask: np.ndarray) -> str:
    """A bool label mask ``[C]`` as the JSON list of its on indices."""
    return json.dumps(np.flatnonzero(mask).tolist(), separators=(",", ":"))


def label_mask(indices: Sequence[int], num_labels: int) -> np.ndarray:
    """The bool mask ``[num_labels]`` that is on at ``indices``."""
    mask = np.zeros(num_labels, dtype=bool)
    mask[list(indices)] = True
    return mask


def decode_labels(text: str, num_labels: int) -> np.ndarray:
    """The inverse of :func:`encode_labels`."""
    return label_mask(json.loads(text), num_labels)


def rank_store_path(run_dir: Path, rank: int) -> Path:
    return run_dir / f"results-rank{rank}.sqlite"


def find_stores(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(STORE_GLOB))


class ResultStore:
    """One rank's SQLite file. Use :meth:`create_or_open` (writer) or :meth:`open_readonly`."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: Path, meta: dict[str, Any]) -> ResultStore:
        """Open ``path`` for writing, creating it with ``meta`` (must hold ``config_hash``).

        An existing file must carry the same ``config_hash`` and a schema version this code knows.
        """
        path = Path(path)
        existed = path.exists()
        db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        store = cls(path, db)
        try:
            if existed:
                store._check_schema()
                theirs = store.meta().get("config_hash")
                if theirs != meta["config_hash"]:
                    raise StoreError(
                        f"{path} holds results of a different config (hash {theirs}, this config "
                        f"{meta['config_hash']}); refusing to mix them. Start fresh with "
                        f"'--force' (deletes the old results), another '--out' directory, or "
                        f"delete {path.parent} yourself."
                    )
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a killed process (only a power cut may lose the last commit).
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            if not existed or not store.meta():
                with store.transaction():
                    db.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [("schema_version", str(SCHEMA_VERSION))]
                        + [(key, json.dumps(value)) for key, value in meta.items()],
                    )
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> ResultStore:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results store not found: {path}")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60.0)
        store = cls(path, db)
        try:
            store._check_schema()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_schema(self) -> None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not an mlattack results store: {exc}") from exc
        if row is None:
            raise StoreError(f"{self.path} has no schema version; not an mlattack results store")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written with results schema {version}, newer than this mlattack "
                f"(schema {SCHEMA_VERSION}); upgrade mlattack to read it"
            )

    # -- reading -----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {
            key: (int(value) if key == "schema_version" else json.loads(value))
            for key, value in rows
        }

    def done_units(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT unit_id FROM units")}

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def iter_query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        yield from self._db.execute(sql, params)

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record_target_sets(self, rows: Iterable[tuple[Any, ...]]) -> None:
        with self.transaction():
            self._insert("target_sets", TARGET_SET_COLUMNS, rows, replace=True)

    def write_unit(
        self,
        unit_id: str,
        *,
        results: Iterable[tuple[Any, ...]] = (),
        gradcorr: Iterable[tuple[Any, ...]] = (),
        transfer: Iterable[tuple[Any, ...]] = (),
        examples: Iterable[tuple[Any, ...]] = (),
    ) -> None:
        """Write a unit's records and its done-marker atomically."""
        with self.transaction():
            self._db.execute("INSERT INTO units (unit_id) VALUES (?)", (unit_id,))
            self._insert("results", RESULT_COLUMNS, results)
            self._insert("gradcorr", GRADCORR_COLUMNS, gradcorr)
            self._insert("transfer", TRANSFER_COLUMNS, transfer)
            self._insert("examples", EXAMPLE_COLUMNS, examples)

    def _insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[tuple[Any, ...]],
        *,
        replace: bool = False,
    ) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        marks = ", ".join("?" for _ in columns)
        self._db.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
