"""The paper's aggregates from one or more run directories.

Per target set Ω (over its attacked images I, successes A and semantic successes A_G):
``FR_N = |A|/|I|`` (an image whose logits at the adversarial point are not all finite is never
in A; ``n_nonfinite`` counts them), ``FR_S = |A_G|/|I|``, ``NT_R`` = mean NT flip fraction over A, ``SSIM`` = mean
over A. Then mean ± std (population std, ddof=0) across the target sets of each
(model, attack, ε, |Ω|) that have at least one attacked image (for NT_R and SSIM: at least one
success). Target sets with no eligible image are counted and listed, never averaged in.

The heavy lifting is SQL ``GROUP BY`` in each store; stores of one run (ranks) are summed per target
set, so a target set whose batches landed on different ranks is aggregated correctly.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlattack.experiments.config import attack_display_name
from mlattack.experiments.layout import find_stores
from mlattack.experiments.store import ADDED_COLUMNS, ResultStore, StoreError, decode_labels

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

METRICS = ("fr_naive", "fr_semantic", "nt_rate", "ssim")
METRIC_TITLES = {"fr_naive": "FR_N", "fr_semantic": "FR_S", "nt_rate": "NT_R", "ssim": "SSIM"}

_PER_SET_SQL = """
SELECT attack, eps, ts_id, COUNT(*), SUM(success), SUM(semantic_success),
       SUM(CASE WHEN success THEN nt_flip_fraction END),
       SUM(CASE WHEN success AND nt_flip_fraction IS NOT NULL THEN 1 ELSE 0 END),
       SUM(CASE WHEN success THEN ssim END),
       SUM(CASE WHEN success AND ssim IS NOT NULL THEN 1 ELSE 0 END),
       SUM(linf), SUM(l2), SUM(iterations), SUM(seconds), SUM({nonfinite_logits}),
       SUM({forward_passes}), SUM({backward_passes}), COUNT({backward_passes})
FROM results WHERE attacked GROUP BY attack, eps, ts_id
"""
_SUM_FIELDS = (
    "n_images", "n_success", "n_semantic", "nt_sum", "nt_count", "ssim_sum", "ssim_count",
    "linf_sum", "l2_sum", "iterations_sum", "seconds_sum", "n_nonfinite",
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
    graph: LabelGraph | None = None

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
    unit_owner: dict[str, Path] = {}
    for path in stores:
        with ResultStore.open_readonly(path) as store:
            this = store.meta()
            _check_meta(path, this)
            for unit_id in store.done_units():
                if unit_id in unit_owner:
                    raise StoreError(
                        f"{unit_owner[unit_id]} and {path} both hold unit {unit_id!r}: the same "
                        "work written twice (a copied store, or ranks of two runs that overlapped); "
                        "refusing to count it twice. Move one store away, or rerun with '--force'"
                    )
                unit_owner[unit_id] = path
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
    return Run(run_dir, stores, meta, target_sets, _graph_in(stores[0], meta))


def _graph_in(path: Path, meta: dict[str, Any]) -> LabelGraph | None:
    """The label graph a store's meta holds (None when it holds none), checked against its labels."""
    from mlattack.graph import LabelGraph

    document = meta.get("graph")
    if document is None:
        return None
    try:
        graph = LabelGraph.from_json(document)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(f"{path}: damaged metadata: 'graph': {exc}") from None
    if tuple(graph.names) != tuple(meta["label_names"]):
        raise StoreError(f"{path}: damaged metadata: 'graph' names other labels than 'label_names'")
    return graph


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
        dataset = config.get("dataset", {})
        if not (isinstance(dataset, dict) and isinstance(dataset.get("name", ""), str)):
            problems.append("'config.dataset' is not a mapping with a name")
        if not isinstance(config.get("name", ""), str):
            problems.append("'config.name' is not a name")
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
    dropped = meta.get("dropped_unreadable", 0)
    if not (isinstance(dropped, int) and not isinstance(dropped, bool) and dropped >= 0):
        problems.append("'dropped_unreadable' is not a count")
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
                check_rows(store, set(run.target_sets))
                result.n_rows += store.query("SELECT COUNT(*) FROM results")[0][0]
                # A column the store predates reads as its default (the pass counts: NULL,
                # "not counted").
                per_set_sql = _PER_SET_SQL.format(
                    **{
                        column: store.column_or_default("results", column)
                        for column in ADDED_COLUMNS["results"]
                    }
                )
                for attack, eps, ts_id, *values in store.iter_query(per_set_sql):
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


def _flag(column: str) -> str:
    return f"{column} NOT IN (0, 1) OR typeof({column}) != 'integer'"


def _fraction(column: str, low: float = 0.0) -> str:
    return f"{column} IS NOT NULL AND NOT ({column} BETWEEN {low} AND 1)"


# Per table: the conditions a row of an intact store never meets, and the unique key of a row.
_DAMAGED_WHEN: dict[str, tuple[tuple[str, str], ...]] = {
    "results": (
        ("attacked", _flag("attacked")),
        ("success", _flag("success")),
        ("semantic_success", _flag("semantic_success")),
        ("nonfinite_logits", _flag("nonfinite_logits")),
        ("success", "success > attacked OR semantic_success > success"),
        ("nt_flip_fraction", _fraction("nt_flip_fraction")),
        ("ssim", _fraction("ssim", -1.0)),
        ("eps", "typeof(eps) NOT IN ('real', 'integer') OR NOT (eps > 0)"),
        ("linf", "typeof(linf) NOT IN ('real', 'integer') OR linf < 0"),
        ("l2", "typeof(l2) NOT IN ('real', 'integer') OR l2 < 0"),
        ("iterations", "typeof(iterations) != 'integer' OR iterations < 0"),
        ("seconds", "typeof(seconds) NOT IN ('real', 'integer') OR seconds < 0"),
    ),
    "transfer": (
        ("fooled", _flag("fooled")),
        ("eligible", _flag("eligible")),
        ("success", _flag("success")),
        ("semantic_success", _flag("semantic_success")),
        ("success", "success > eligible OR semantic_success > success"),
    ),
    "gradcorr": (
        ("cos_mla_c", "cos_mla_c IS NOT NULL AND NOT (cos_mla_c BETWEEN -1.000001 AND 1.000001)"),
        ("cos_gmla", "cos_gmla IS NOT NULL AND NOT (cos_gmla BETWEEN -1.000001 AND 1.000001)"),
    ),
}
_KEYS = {
    "results": ("ts_id", "image_id", "attack", "eps"),
    "transfer": ("source", "target", "ts_id", "image_id"),
    "gradcorr": ("ts_id", "image_id"),
    "examples": ("ts_id", "image_id", "attack", "eps"),
}


def check_rows(store: ResultStore, ts_ids: set[int]) -> None:
    """Refuse (``StoreError`` naming the store) rows an intact store never holds: flags other than
    0/1, fractions outside their range, a row twice under its unique key, an unknown target set."""
    for table, conditions in _DAMAGED_WHEN.items():
        for column, condition in conditions:
            if not store.has_column(table, column):
                continue  # a column added after this store was written: nothing stored to check
            row = store.query(
                f"SELECT {', '.join(_KEYS[table])}, {column} FROM {table} WHERE {condition} LIMIT 1"
            )
            if row:
                *key, value = row[0]
                raise StoreError(
                    f"{store.path} is damaged: {table} row {tuple(key)} has {column} = {value!r}, "
                    "out of its range; refusing to report it"
                )
    for table, unique in _KEYS.items():
        columns = ", ".join(unique)
        row = store.query(
            f"SELECT {columns}, COUNT(*) FROM {table} GROUP BY {columns} HAVING COUNT(*) > 1 LIMIT 1"
        )
        if row:
            raise StoreError(
                f"{store.path} is damaged: {table} holds the row {tuple(row[0][:-1])} "
                f"{row[0][-1]} times; refusing to count it more than once"
            )
    for table in ("results", "transfer", "gradcorr", "examples"):
        for (ts_id,) in store.iter_query(f"SELECT DISTINCT ts_id FROM {table}"):
            if ts_id not in ts_ids:
                raise StoreError(
                    f"{store.path} is damaged: {table} rows name target set {ts_id!r}, which no "
                    "store of the run defines"
                )


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
        "n_nonfinite": int(s["n_nonfinite"]),
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
            "n_nonfinite": sum(r["n_nonfinite"] for r in rows),
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


def dropped_images(run: Run) -> int:
    """Unreadable images the run's dataset dropped before the scan (``validate: true``)."""
    return int(run.meta.get("dropped_unreadable", 0))


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


#: The arrays of an example file, and whether each is one bool-like row per label (else an image).
EXAMPLE_ARRAYS = {"clean": False, "delta": False, "clean_pred": True, "adv_pred": True,
                  "targets": True}  # fmt: skip
OPTIONAL_EXAMPLE_ARRAYS = {"flip_set": True}  # absent in files written before it was saved


def read_example(run: Run, example: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of one saved example, checked; a damaged file is a ``StoreError`` naming it."""
    path = _example_file(run, example["path"])
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = set(stored.files)
            missing = sorted(set(EXAMPLE_ARRAYS) - names)
            if missing:
                raise ValueError(f"arrays {missing} are missing")
            wanted = [*EXAMPLE_ARRAYS, *(n for n in OPTIONAL_EXAMPLE_ARRAYS if n in names)]
            arrays = {name: np.asarray(stored[name]) for name in wanted}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{path}: damaged example file: {exc}") from None
    width = len(run.label_names)
    for name, array in arrays.items():
        if {**EXAMPLE_ARRAYS, **OPTIONAL_EXAMPLE_ARRAYS}[name]:
            if array.shape != (width,) or array.dtype.kind not in "biu":
                raise StoreError(
                    f"{path}: damaged example file: '{name}' has shape {array.shape} "
                    f"({array.dtype}), expected ({width},) labels"
                )
        elif array.ndim != 3 or array.shape[0] != 3 or array.dtype.kind != "f":
            raise StoreError(
                f"{path}: damaged example file: '{name}' has shape {array.shape} "
                f"({array.dtype}), expected a float [3, H, W] image"
            )
    if arrays["delta"].shape != arrays["clean"].shape:
        raise StoreError(
            f"{path}: damaged example file: 'delta' has shape {arrays['delta'].shape}, "
            f"'clean' {arrays['clean'].shape}"
        )
    if not np.isfinite(arrays["delta"]).all() or not np.isfinite(arrays["clean"]).all():
        raise StoreError(f"{path}: damaged example file: non-finite pixels")
    return arrays


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
