"""The run folder's layout: every name a run, its ranks and its report write there, in one place.

::

    RUN_DIR/
      results-rank{r}.sqlite       one results store per rank (store.py)
      .lock-rank{r}                rank r's writer lock (held by the process writing that store)
      .lock-world{W}               held, shared, by every rank of a run of W ranks
      config.json                  the canonical config (written once a store exists)
      examples/                    saved example perturbations (NPZ + PNG) for Figs. 9-10
      report/                      the default report folder (report.py)
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.json"
EXAMPLES_DIR = "examples"
REPORT_DIR = "report"
STORE_GLOB = "results-rank*.sqlite"
LOCK_PREFIX = ".lock-"  # every lock file starts so
WORLD_LOCK_PREFIX = ".lock-world"  # + the world size


def rank_store_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"results-rank{rank}.sqlite"


def find_stores(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob(STORE_GLOB))


def lock_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"{LOCK_PREFIX}rank{rank}"


def world_lock_path(run_dir: Path, world: int) -> Path:
    return Path(run_dir) / f"{WORLD_LOCK_PREFIX}{world}"


def lock_files(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob(LOCK_PREFIX + "*"))


def config_partial_path(run_dir: Path, rank: int) -> Path:
    """Where rank ``rank`` writes ``config.json`` before renaming it into place."""
    return Path(run_dir) / f"{CONFIG_FILE}.partial-rank{rank}"
