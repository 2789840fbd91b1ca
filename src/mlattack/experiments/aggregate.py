"""The paper's aggregates from one or more run directories.

Per target set Ω (over its attacked images I, successes A and semantic successes A_G):
``FR_N = |A|/|I|``, ``FR_S = |A_G|/|I|``, ``NT_R`` = mean NT flip fraction over A, ``SSIM`` = mean
over A. Then mean ± std (population std, ddof=0) across the target sets of each
(model, attack, ε, |Ω|) that have at least one attacked image (for NT_R and SSIM: at least one
success). Target sets with no eligible image are counted and listed, never averaged in.

The heavy lifting is SQL ``GROUP BY`` in each store; stores of one run (ranks) are summed per target
set, so a target set whose batches landed on different ranks is aggregated correctly.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlattack.experiments.config import attack_display_name
from mlattack.experiments.store import ResultStore, StoreError, decode_labels, find_stores

METRICS = ("fr_naive", "fr_semantic", "nt_rate", "ssim")
METRIC_TITLES = {"fr_naive": "FR_N", "fr_semantic": "FR_S", "nt_rate": "NT_R", "ssim": "SSIM"}

_PER_SET_SQL = """
SELECT attack, eps, ts_id, COUNT(*), SUM(success), SUM(semantic_success),
       SUM(CASE WHEN success THEN nt_flip_fraction END),
       SUM(CASE WHEN success AND nt_flip_fraction IS NOT NULL THEN 1 ELSE 0 END),
       SUM(CASE WHEN success THEN ssim END),
       SUM(CASE WHEN success AND ssim IS NOT NULL THEN 1 ELSE 0 END),
       SUM(linf), SUM(l2), SUM(iterations), SUM(seconds),
       {passes}
FROM results WHERE attacked GROUP BY attack, eps, ts_id
"""
#: The pass counts, or (for a store written before they were stored) nothing counted.
_PASSES_SQL = "SUM(forward_passes), SUM(backward_passes), COUNT(backward_passes)"
_NO_PASSES_SQL = "NULL, NULL, 0"
_SUM_FIELDS = (
    "n_images", "n_success", "n_semantic", "nt_sum", "nt_count", "ssim_sum", "ssim_count",
    "linf_sum", "l2_sum", "iterations_sum", "seconds_sum",
    "forward_sum", "backward_sum", "passes_count",
)  # fmt: skip


@dataclass
class Run:
    """One run directory: its stores' metadata and target sets."""

    run_dir: Path
    stores: list[Path]
    meta: dict[str, Any]
    target_sets: dict[
        int, dict[str, Any]
    ]  # ts_id -> {size, labels (names), n_eligible, n_selected}

    @property
    def model(self) -> str:
        return str(self.meta.get("model", self.run_dir.name))

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def eps_list(self) -> list[float]:
        return [float(e) for e in self.meta["config"]["eps"]]

    @property
    def attack_kinds(self) -> dict[str, str]:
        """Display name -> registry name of each configured attack."""
        return {attack_display_name(a): a["name"] for a in self.meta["config"]["attacks"]}


@dataclass
class Aggregates:
    runs: list[Run]
    per_set: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    empty_sets: list[dict[str, Any]] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    gradcorr: list[dict[str, Any]] = field(default_factory=list)
    n_rows: int = 0


def open_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    stores = find_stores(run_dir)
    if not stores:
        raise FileNotFoundError(
            f"no results store (results-rank*.sqlite) in {run_dir}; run 'mlattack run' first"
        )
    meta: dict[str, Any] = {}
    target_sets: dict[int, dict[str, Any]] = {}
    for path in stores:
        with ResultStore.open_readonly(path) as store:
            this = store.meta()
            _check_meta(path, this)
            if meta and this.get("config_hash") != meta.get("config_hash"):
                raise StoreError(
                    f"{path} belongs to another config than {stores[0]}; one run per directory"
                )
            if meta and this.get("clean_scan_hash") != meta.get("clean_scan_hash"):
                raise StoreError(
                    f"{path} was written from another clean scan (hash "
                    f"{this.get('clean_scan_hash')}) than {stores[0]} (hash "
                    f"{meta.get('clean_scan_hash')}); refusing to merge ranks that attacked "
                    "different images"
                )
            meta = meta or this
            names = this["label_names"]
            for ts_id, size, labels, n_eligible, n_selected in store.query(
                "SELECT ts_id, size, labels, n_eligible, n_selected FROM target_sets"
            ):
                try:
                    indices = json.loads(labels)
                    if not all(type(i) is int and 0 <= i < len(names) for i in indices):
                        raise ValueError("label index out of range")
                    target_sets[int(ts_id)] = {
                        "size": int(size),
                        "labels": [names[i] for i in indices],
                        "n_eligible": int(n_eligible),
                        "n_selected": int(n_selected),
                    }
                except (TypeError, ValueError, IndexError, RecursionError):
                    raise StoreError(f"{path}: target set {ts_id!r} is damaged") from None
    return Run(run_dir, stores, meta, target_sets)


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """The meta keys a report reads, with their types; a damaged store is named, not a KeyError."""

    def is_list_of(value: Any, kind: type | tuple[type, ...]) -> bool:
        return isinstance(value, list) and all(isinstance(v, kind) for v in value)

    config = meta.get("config")
    problems = []
    if not is_list_of(meta.get("label_names"), str):
        problems.append("'label_names' is not a list of names")
    if not isinstance(config, dict):
        problems.append("'config' is not a mapping")
    else:
        eps = config.get("eps")
        if not (is_list_of(eps, (int, float)) and not is_list_of(eps, bool)):
            problems.append("'config.eps' is not a list of numbers")
        attacks = config.get("attacks")
        if not (
            isinstance(attacks, list)
            and is_list_of(attacks, dict)
            and all(isinstance(a.get("name"), str) for a in attacks)
        ):
            problems.append("'config.attacks' is not a list of attacks")
    skipped = meta.get("skipped_images", [])
    if not (
        is_list_of(skipped, list)
        and all(
            len(e) == 2
            and isinstance(e[0], int)
            and not isinstance(e[0], bool)
            and isinstance(e[1], str)
            for e in skipped
        )
    ):
        problems.append("'skipped_images' is not a list of [image id, reason]")
    if problems:
        raise StoreError(f"{path}: damaged metadata: {'; '.join(problems)}")


def aggregate(run_dirs: list[Path]) -> Aggregates:
    runs = [open_run(Path(d)) for d in run_dirs]
    models = [r.model for r in runs]
    if len(set(models)) != len(models):
        raise ValueError(
            f"runs name the same model twice ({models}); set 'model.label' in their configs"
        )
    result = Aggregates(runs)
    for run in runs:
        sums: dict[tuple[str, float, int], np.ndarray] = defaultdict(
            lambda: np.zeros(len(_SUM_FIELDS))
        )
        for path in run.stores:
            with ResultStore.open_readonly(path) as store:
                result.n_rows += store.query("SELECT COUNT(*) FROM results")[0][0]
                counted = "backward_passes" in store.result_columns()
                sql = _PER_SET_SQL.format(passes=_PASSES_SQL if counted else _NO_PASSES_SQL)
                for attack, eps, ts_id, *values in store.iter_query(sql):
                    sums[(attack, float(eps), int(ts_id))] += np.array(
                        [v or 0.0 for v in values], dtype=float
                    )
                result.transfer.extend(_transfer_rows(store, run.model))
                result.gradcorr.extend(_gradcorr_rows(store, run))
        for (attack, eps, ts_id), totals in sorted(sums.items()):
            result.per_set.append(
                _per_set_row(run, attack, eps, ts_id, dict(zip(_SUM_FIELDS, totals, strict=True)))
            )
        result.empty_sets.extend(
            {"model": run.model, "ts_id": ts_id, **info}
            for ts_id, info in sorted(run.target_sets.items())
            if info["n_selected"] == 0
        )
    result.summary = _summarise(result.per_set, runs)
    return result


def _per_set_row(
    run: Run, attack: str, eps: float, ts_id: int, s: dict[str, float]
) -> dict[str, Any]:
    info = run.target_sets.get(ts_id, {"size": 0, "labels": []})
    n = s["n_images"]
    return {
        "model": run.model,
        "attack": attack,
        "eps": eps,
        "size": info["size"],
        "ts_id": ts_id,
        "labels": " + ".join(info["labels"]),
        "n_images": int(n),
        "n_success": int(s["n_success"]),
        "n_semantic": int(s["n_semantic"]),
        "fr_naive": s["n_success"] / n,
        "fr_semantic": s["n_semantic"] / n,
        "nt_rate": s["nt_sum"] / s["nt_count"] if s["nt_count"] else math.nan,
        "ssim": s["ssim_sum"] / s["ssim_count"] if s["ssim_count"] else math.nan,
        "mean_linf": s["linf_sum"] / n,
        "mean_l2": s["l2_sum"] / n,
        "mean_iterations": s["iterations_sum"] / n,
        "seconds_per_image": s["seconds_sum"] / n,
        # Passes through the model per attacked image (NaN for rows stored without them).
        "forward_passes": _mean_passes(s["forward_sum"], s["passes_count"], n),
        "backward_passes": _mean_passes(s["backward_sum"], s["passes_count"], n),
    }


def _mean_passes(total: float, counted: float, n: float) -> float:
    """The mean over the images, known only when every image's count was stored."""
    return total / n if counted == n else math.nan


def _summarise(per_set: list[dict[str, Any]], runs: list[Run]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, float, int], list[dict[str, Any]]] = defaultdict(list)
    for row in per_set:
        groups[(row["model"], row["attack"], row["eps"], row["size"])].append(row)
    empty: dict[tuple[str, int], int] = defaultdict(int)
    for run in runs:
        for info in run.target_sets.values():
            if info["n_selected"] == 0:
                empty[(run.model, info["size"])] += 1
    summary = []
    # Attacks in the order the configs list them (baselines first, as in the paper's tables).
    order = {name: i for run in runs for i, name in enumerate(run.attack_kinds)}
    keys = sorted(
        groups, key=lambda key: (key[0], order.get(key[1], len(order)), key[1], key[2], key[3])
    )
    for model, attack, eps, size in keys:
        rows = groups[(model, attack, eps, size)]
        entry: dict[str, Any] = {
            "model": model,
            "attack": attack,
            "eps": eps,
            "size": size,
            "n_sets": len(rows),
            "n_empty_sets": empty[(model, size)],
            "n_images": sum(r["n_images"] for r in rows),
        }
        images = entry["n_images"]
        for passes in ("forward_passes", "backward_passes"):
            # Per attacked image of the cell (every image counts once, whatever its set).
            weighted = sum(r[passes] * r["n_images"] for r in rows)
            entry[f"{passes}_per_image"] = weighted / images if images else math.nan
        for metric in METRICS:
            raw = np.array([r[metric] for r in rows], dtype=float)
            values = raw[~np.isnan(raw)]
            entry[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            entry[f"{metric}_std"] = float(values.std()) if len(values) else math.nan
            entry[f"{metric}_n_sets"] = len(values)
        summary.append(entry)
    return summary


def _transfer_rows(store: ResultStore, model: str) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT source, target, attack, eps, ts_id, SUM(fooled), SUM(fooled AND success), "
        "SUM(fooled AND semantic_success) FROM transfer GROUP BY source, target, attack, eps, ts_id"
    )
    keys = ("source", "target", "attack", "eps", "ts_id", "n_fooled", "n_transferred", "n_semantic")
    return [{"run_model": model, **dict(zip(keys, row, strict=True))} for row in rows]


def _gradcorr_rows(store: ResultStore, run: Run) -> list[dict[str, Any]]:
    rows = store.query("SELECT ts_id, cos_mla_c, cos_gmla FROM gradcorr")
    return [
        {
            "model": run.model,
            "size": run.target_sets.get(ts, {"size": 0})["size"],
            "mla-c": a,
            "gmla": b,
        }
        for ts, a, b in rows
    ]


def transfer_matrix(
    rows: list[dict[str, Any]], *, semantic: bool = False
) -> tuple[list[str], list[str], np.ndarray]:
    """Mean over target sets of (transferred / source-fooled) for every (source, target) pair.

    Target sets where the source attack fooled no image are left out of the mean.
    """
    per_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    totals: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        key = (row["source"], row["target"], row["ts_id"])
        totals[key][0] += int(row["n_fooled"] or 0)
        totals[key][1] += int((row["n_semantic"] if semantic else row["n_transferred"]) or 0)
    for (source, target, _), (fooled, moved) in totals.items():
        if fooled:
            per_pair[(source, target)].append(moved / fooled)
    sources = sorted({s for s, _ in per_pair} | {r["source"] for r in rows})
    targets = sorted({t for _, t in per_pair} | {r["target"] for r in rows})
    matrix = np.full((len(sources), len(targets)), np.nan)
    for (source, target), values in per_pair.items():
        matrix[sources.index(source), targets.index(target)] = float(np.mean(values))
    return sources, targets, matrix


def skipped_images(run: Run) -> list[tuple[int, str]]:
    """``(image id, reason)`` of the images the run's clean scan could not read."""
    return [(int(image_id), str(why)) for image_id, why in run.meta.get("skipped_images", [])]


def load_examples(run: Run) -> list[dict[str, Any]]:
    """The saved example perturbations of a run, with their stored SSIM."""
    examples: list[dict[str, Any]] = []
    for path in run.stores:
        with ResultStore.open_readonly(path) as store:
            rows = store.query(
                "SELECT e.ts_id, e.image_id, e.attack, e.eps, e.path, r.ssim, r.success, r.semantic_success "
                "FROM examples e LEFT JOIN results r ON r.ts_id = e.ts_id AND r.image_id = e.image_id "
                "AND r.attack = e.attack AND r.eps = e.eps ORDER BY e.ts_id, e.image_id, e.eps, e.attack"
            )
        keys = ("ts_id", "image_id", "attack", "eps", "path", "ssim", "success", "semantic_success")
        examples.extend(dict(zip(keys, row, strict=True)) for row in rows)
    return [e for e in examples if _example_file(run, e["path"]).is_file()]


def _example_file(run: Run, stored: Any) -> Path:
    """The file a store's example row names: always inside the run folder, else ``StoreError``."""
    root = run.run_dir.resolve()
    if not isinstance(stored, str) or not stored:
        raise StoreError(f"{run.run_dir}: an example row names no path ({stored!r})")
    path = (root / stored).resolve()
    if Path(stored).is_absolute() or not path.is_relative_to(root):
        raise StoreError(
            f"{run.run_dir}: the store names the example file {stored!r}, outside the run folder; "
            "refusing to read it"
        )
    return path


def decode(run: Run, text: str) -> np.ndarray:
    return decode_labels(text, len(run.label_names))
