"""The results store: one SQLite file per rank, append-only, resumable.

Each unit of work (one attack call over one batch of images, or one gradient-correlation or transfer
batch) is written in a single transaction together with its marker in ``units``; a unit is either
fully present or absent, so a run killed at any point resumes by skipping the units already marked.
UNIQUE keys on every record table make a duplicate a loud error rather than a silent double count.
A store is created under a temporary name and renamed into place once its schema and metadata are
committed, so an interruption leaves either no store or a complete one. One process at a time
writes a rank's store, and ranks of one world size at a time write a run folder: :func:`lock_run_dir`
holds ``fcntl.flock`` locks on lock files beside the stores.

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
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlattack.experiments.layout import WORLD_LOCK_PREFIX, lock_path, world_lock_path

SCHEMA_VERSION = 1
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
    "nonfinite_logits",
    "forward_passes",
    "backward_passes",
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
    nonfinite_logits INTEGER NOT NULL DEFAULT 0, forward_passes INTEGER, backward_passes INTEGER,
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
# Columns added to a table after schema 1 was released: a store written before them gets them
# (with their default; NULL, "unknown", for the pass counts) when opened for writing, and readers
# use the default where one lacks them.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "results": {
        "nonfinite_logits": "INTEGER NOT NULL DEFAULT 0",
        "forward_passes": "INTEGER",
        "backward_passes": "INTEGER",
    },
}


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


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link or anything but a regular file at ``path``.

    A link planted in a run folder must not make a run write (or lock) the file it points to.
    """
    try:
        handle = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, f"{path} is a symbolic link; refusing to follow it (delete it)"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise OSError(errno.EINVAL, f"{path} is not a regular file; refusing to use it (delete it)")
    return handle


@contextmanager
def _flocked(path: Path, *, shared: bool) -> Iterator[int | None]:
    """Hold ``flock`` on ``path`` (created if absent) for the ``with`` block; ``None`` if busy."""
    handle = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield None
            return
        yield handle
    finally:
        os.close(handle)  # closing releases the lock


def lock_held_elsewhere(path: Path) -> bool:
    """Whether another open file holds an ``flock`` on the lock file ``path`` (absent: no)."""
    try:
        handle = open_no_follow(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return True
    finally:
        os.close(handle)
    return False


@contextmanager
def lock_run_dir(run_dir: Path, rank: int = 0, world: int = 1) -> Iterator[None]:
    """Hold the locks of ``run_dir`` for rank ``rank`` of ``world`` ranks for the ``with`` block.

    Two locks: the folder's *world* lock, shared by the ranks of one world size and refused while
    a process of another world size holds its own (so that ranks dealt the work in two different
    ways never run at once on one folder), and the rank's exclusive writer lock. Raises
    :class:`RunDirInUseError` (naming the holder's PID where one rank holds it) when the folder is
    busy. The kernel releases the locks when the holder dies, so a killed run never blocks a
    resume. Lock files are never followed through a symbolic link.
    """
    run_dir = Path(run_dir)
    with _flocked(world_lock_path(run_dir, world), shared=True) as world_handle:
        if world_handle is None:  # held exclusively: a run of another size checks it right now
            raise RunDirInUseError(_busy_with_other_world(run_dir, "another number of"))
        for other in sorted(run_dir.glob(WORLD_LOCK_PREFIX + "*")):
            if other.name != world_lock_path(run_dir, world).name and lock_held_elsewhere(other):
                raise RunDirInUseError(
                    _busy_with_other_world(run_dir, int(other.name[len(WORLD_LOCK_PREFIX) :]))
                )
        path = lock_path(run_dir, rank)
        with _flocked(path, shared=False) as handle:
            if handle is None:
                holder = path.read_bytes()[:32].decode("ascii", "replace").strip() or "unknown"
                raise RunDirInUseError(
                    f"{run_dir}: folder in use by PID {holder} (another 'mlattack run' writes "
                    f"rank {rank} there); wait for it to finish or give another '--out'"
                )
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
            yield


def _busy_with_other_world(run_dir: Path, other: int | str) -> str:
    size = f"{other} rank(s) (WORLD_SIZE={other})" if isinstance(other, int) else f"{other} ranks"
    return (
        f"{run_dir}: folder in use by a run of {size}; ranks dealt the work another way must not "
        "run at once on one folder: wait for it to finish or give another '--out'"
    )


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
        if path.is_symlink():
            raise StoreError(f"{path} is a symbolic link; refusing to write through it (delete it)")
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
            # WAL + NORMAL survives a killed process (only a power cut may lose the last commit).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            store._add_missing_columns()
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

    def _add_missing_columns(self) -> None:
        for table, added in ADDED_COLUMNS.items():
            for column, declaration in added.items():
                if not self.has_column(table, column):
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    # -- reading -----------------------------------------------------------------------------
    def has_column(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self.iter_query(f"PRAGMA table_info({table})"))

    def column_or_default(self, table: str, column: str) -> str:
        """``column`` for SQL, or its default value where this store predates the column."""
        if self.has_column(table, column):
            return column
        declaration = ADDED_COLUMNS[table][column]
        return declaration.rsplit("DEFAULT ", 1)[1] if "DEFAULT " in declaration else "NULL"

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
            self._insert("results", RESULT_COLUMNS, results)
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
