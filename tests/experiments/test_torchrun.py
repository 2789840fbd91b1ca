"""Ranks joined by torch.distributed (gloo on 127.0.0.1): sharded clean scan, agreement checks,
cost-based dealing, and the report's refusal to merge ranks of different clean scans."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from exp_fixtures import run_tiny, stored_rows

from mlattack.experiments import ExperimentConfig, StoreError
from mlattack.experiments.aggregate import aggregate
from mlattack.experiments.distributed import Ranks, check_ranks_agree
from mlattack.experiments.planning import deal_units, unit_cost, work_list
from mlattack.experiments.targets import TargetSet

SMALL = {
    "target_sets": {"sizes": [1, 2], "mode": "combinations", "max_sets": 5},
    "eps": [0.1],
    "examples": 1,
    "images": {"per_target_set": 4},
    "gradient_correlation": True,
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _rank_main(rank: int, world: int, port: int, out: str, overrides: list[dict[str, Any]]) -> None:
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )  # fmt: skip
    torch.set_num_threads(1)
    run_tiny(out, **overrides[rank])


def _run_joined(out: Path, overrides: list[dict[str, Any]]) -> None:
    """Run the tiny experiment as ``len(overrides)`` joined ranks (forked processes)."""
    mp.start_processes(
        _rank_main,
        args=(len(overrides), _free_port(), str(out), overrides),
        nprocs=len(overrides),
        start_method="fork",
    )


def _table(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute(f"SELECT * FROM {table}").fetchall())


def _meta_value(path: Path, key: str) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


@pytest.mark.slow
def test_two_joined_ranks_equal_one_rank_row_for_row(tmp_path: Path) -> None:
    single = run_tiny(tmp_path / "single", **SMALL)
    _run_joined(tmp_path / "joined", [SMALL, SMALL])
    joined = tmp_path / "joined"
    stores = sorted(joined.glob("results-rank*.sqlite"))
    assert [p.name for p in stores] == ["results-rank0.sqlite", "results-rank1.sqlite"]
    # Together the ranks did exactly the single run's units and wrote its rows...
    for table in ("units", "results", "gradcorr", "examples"):
        assert stored_rows(joined, table) == stored_rows(single, table), table
    assert stored_rows(joined, "results")  # (not a comparison of two empty tables)
    single_sets = _table(single / "results-rank0.sqlite", "target_sets")
    for path in stores:  # ...each did a share, and each planned the same target sets
        assert _table(path, "units") and _table(path, "target_sets") == single_sets
    hashes = {_meta_value(p, "clean_scan_hash") for p in [*stores, single / "results-rank0.sqlite"]}
    assert len(hashes) == 1
    assert aggregate([joined]).summary == aggregate([single]).summary

    # A rank whose clean scan differs is never merged into the report.
    with sqlite3.connect(stores[1]) as db:
        db.execute("UPDATE meta SET value = '\"0000000000000000\"' WHERE key = 'clean_scan_hash'")
    with pytest.raises(StoreError, match="another clean scan.*hash 0000000000000000"):
        aggregate([joined])


def test_joined_ranks_with_different_configs_refuse_to_run(tmp_path: Path) -> None:
    other = {**SMALL, "eps": [0.2]}
    expected = ExperimentConfig.from_dict({**_tiny(), **other}).config_hash()
    with pytest.raises(mp.ProcessRaisedException, match=f"disagree on the config.*{expected}"):
        _run_joined(tmp_path / "run", [SMALL, other])
    assert not list((tmp_path / "run").glob("results-rank*.sqlite"))


def _tiny() -> dict[str, Any]:
    from exp_fixtures import tiny_config

    return tiny_config()


def test_check_ranks_agree_names_the_ranks_and_values() -> None:
    check_ranks_agree(["abc", "abc", "abc"], "the clean scan (hash)")
    with pytest.raises(ValueError, match="clean scan.*rank 0 has 'abc', rank 2 has 'abd'"):
        check_ranks_agree(["abc", "abc", "abd"], "the clean scan (hash)")


def test_shares_cover_every_item_once() -> None:
    for n_items in (0, 1, 5, 10):
        shares = [Ranks(rank, 3, joined=True).share(n_items) for rank in range(3)]
        assert [i for share in shares for i in share] == list(range(n_items))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_units_are_dealt_by_cost_not_round_robin() -> None:
    config = ExperimentConfig.from_dict(
        {
            **_tiny(),
            "attacks": [
                {"name": "mla-u", "options": {"steps": 10}},
                {"name": "gmla", "options": {"steps": 10}},
                {"name": "mla-lp", "options": {"steps": 10}},
            ],
            "eps": [0.1],
            "batch_size": 2,
        }
    )
    target_sets = [TargetSet(i, (i % 6,), tuple(range(2 * i, 2 * i + 3)), 3) for i in range(6)]
    units = work_list(config, target_sets, {})
    costs = [unit_cost(unit, config) for unit in units]
    gmla = next(
        c for u, c in zip(units, costs, strict=True) if u.attack and u.attack.name == "gmla"
    )
    mla_u = next(
        c for u, c in zip(units, costs, strict=True) if u.attack and u.attack.name == "mla-u"
    )
    assert gmla > mla_u  # same steps and batch: the attack's own cost decides
    smaller = [c for u, c in zip(units, costs, strict=True) if len(u.image_ids) == 1]
    assert max(smaller) < max(costs)  # a batch of 1 costs less than one of 2
    shares = deal_units(costs, 2)
    assert sorted(i for share in shares for i in share) == list(range(len(units)))
    loads = [sum(costs[i] for i in share) for share in shares]
    round_robin = [sum(costs[i::2]) for i in range(2)]
    # Longest-processing-time dealing is within the costliest unit of a perfect split.
    assert max(loads) - min(loads) <= max(costs)
    assert max(loads) <= max(round_robin)
