"""The results store: one SQLite file per rank, append-only, resumable.

Each unit of work (one attack call over one batch of images, or one gradient-correlation or transfer
batch) is written in a single transaction together with its marker in ``units``; a unit is either
fully present or absent, so a run killed at any point resumes by skipping the units already marked.
UNIQUE keys on every record table make a duplicate a loud error rather than a silent double count.
A store is created under a temporary name and renamed into place once its schema and metadata are
committed, so an interruption leaves either no store or a complete one. One process at a time
writes a rank's store: :func:`lock_run_dir` holds an ``fcntl.flock`` on a lock file beside it.

Label sets (predictions, targets, flip sets) are stored as JSON lists of label indices: compact for
the few labels on per image, and readable with any SQLite client.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
STORE_GLOB = "results-rank*.sqlite"
PARTIAL_SUFFIX = ".partial"  # a store being created; never matched by STORE_GLOB
# Testing hook: "POINT" or "POINT:N" kills this process with SIGKILL the N-th time (default 1st) it
# reaches the named fault point (see docs/experiments.md). Used by tests/experiments/test_crash.py.
FAULT_ENV = "MLATTACK_KILL_AT"
REQUIRED_TABLES = ("meta", "units", "target_sets", "results", "gradcorr", "transfer", "examples")

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
    "forward_passes",
    "backward_passes",
)
#: Columns added after schema 1 was released: stores written before them get them (NULL) when
#: opened for writing, and readers treat them as unknown where absent.
ADDED_RESULT_COLUMNS = {"forward_passes": "INTEGER", "backward_passes": "INTEGER"}
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
    forward_passes INTEGER, backward_passes INTEGER,
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


def _with_added(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A result row of the columns before :data:`ADDED_RESULT_COLUMNS`: those stored as NULL
    (unknown); any other length is left for SQLite to refuse."""
    if len(row) == len(RESULT_COLUMNS) - len(ADDED_RESULT_COLUMNS):
        return (*row, *(None for _ in ADDED_RESULT_COLUMNS))
    return row


class StoreError(ValueError):
    """A store that cannot be used: another config, a newer schema, a damaged file."""


class RunDirInUseError(ValueError):
    """Another process holds the lock of a run folder (exit 2 on the command line)."""


_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL) here when :data:`FAULT_ENV` names this point; else nothing.

    Lets the crash test interrupt a run at an exact stage; costs one environment lookup.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def lock_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f".lock-rank{rank}"


@contextmanager
def lock_run_dir(run_dir: Path, rank: int = 0) -> Iterator[None]:
    """Hold the writer lock of ``run_dir`` (rank ``rank``) for the ``with`` block.

    Raises :class:`RunDirInUseError` naming the holder's PID when another process holds it. The
    lock is released by the kernel when the holder dies, so a killed run never blocks a resume.
    """
    path = lock_path(run_dir, rank)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(handle, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunDirInUseError(
                f"{run_dir}: folder in use by PID {holder} (another 'mlattack run' writes rank "
                f"{rank} there); wait for it to finish or give another '--out'"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(handle)  # closing releases the lock


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
        A new store is built as ``path + ".partial"`` and renamed into place when complete.
        """
        path = Path(path)
        if not path.exists():
            _create_atomically(path, meta)
        db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        store = cls(path, db)
        try:
            store._check_schema()
            theirs = store.meta().get("config_hash")
            if theirs != meta["config_hash"]:
                raise StoreError(
                    f"{path} holds results of a different config (hash {theirs}, this config "
                    f"{meta['config_hash']}); refusing to mix them. Start fresh with "
                    f"'--force' (deletes the old results), another '--out' directory, or "
                    f"delete {path.parent} yourself."
                )
            store._add_missing_result_columns()
            # WAL + NORMAL survives a killed process (only a power cut may lose the last commit).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
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
            tables = {
                row[0]
                for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            row = (
                self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if "meta" in tables
                else None
            )
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a damaged file fails anywhere
            raise StoreError(f"{self.path} is not an mlattack results store: {exc}") from exc
        if row is None:
            raise StoreError(f"{self.path} has no schema version; not an mlattack results store")
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise StoreError(f"{self.path}: bad schema version {row[0]!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written with results schema {version}, newer than this mlattack "
                f"(schema {SCHEMA_VERSION}); upgrade mlattack to read it"
            )
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise StoreError(f"{self.path} is damaged: tables {missing} are missing")

    # -- reading -----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        rows = self.query("SELECT key, value FROM meta")
        meta: dict[str, Any] = {}
        for key, value in rows:
            try:
                meta[key] = int(value) if key == "schema_version" else json.loads(value)
            except (TypeError, ValueError, RecursionError):
                raise StoreError(f"{self.path}: meta value {key!r} is damaged") from None
        return meta

    def done_units(self) -> set[str]:
        return {row[0] for row in self.iter_query("SELECT unit_id FROM units")}

    def result_columns(self) -> set[str]:
        """The columns of the ``results`` table (older stores lack :data:`ADDED_RESULT_COLUMNS`)."""
        return {str(row[1]) for row in self.query("PRAGMA table_info(results)")}

    def _add_missing_result_columns(self) -> None:
        missing = [name for name in ADDED_RESULT_COLUMNS if name not in self.result_columns()]
        for name in missing:
            self._db.execute(f"ALTER TABLE results ADD COLUMN {name} {ADDED_RESULT_COLUMNS[name]}")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.iter_query(sql, params))

    def iter_query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows of a read; a damaged file (or a table without its columns) is a StoreError."""
        try:
            yield from self._db.execute(sql, params)
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # a damaged file fails anywhere
            raise StoreError(f"{self.path} is damaged: {exc}") from exc

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
            self._insert("results", RESULT_COLUMNS, (_with_added(row) for row in results))
            self._insert("gradcorr", GRADCORR_COLUMNS, gradcorr)
            self._insert("transfer", TRANSFER_COLUMNS, transfer)
            self._insert("examples", EXAMPLE_COLUMNS, examples)
            fault_point("unit-transaction")

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


def _create_atomically(path: Path, meta: dict[str, Any]) -> None:
    """Write a complete new store (schema + ``meta``) beside ``path``, then rename it to ``path``."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    for leftover in (
        partial,
        *(partial.with_name(partial.name + s) for s in ("-wal", "-shm", "-journal")),
    ):
        leftover.unlink(missing_ok=True)  # an earlier creation that was interrupted
    db = sqlite3.connect(partial, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        fault_point("store-create")
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION))]
            + [(key, json.dumps(value)) for key, value in meta.items()],
        )
        db.execute("COMMIT")
        fault_point("store-create-committed")
    finally:
        db.close()  # rollback journal mode: closing leaves one self-contained file
    os.replace(partial, path)
