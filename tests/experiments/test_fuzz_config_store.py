"""Fuzzing configs, checkpoint files and results stores (hypothesis, the "deterministic" profile).

Every input is either accepted, with the invariants below checked, or refused with the documented
exception whose message names the bad part:

- configs (``ExperimentConfig.from_dict`` / ``from_yaml``): ``ValueError`` naming the key (at least
  its top-level section) or, for YAML text, the file;
- checkpoints (``mlattack.models.load``): ``ValueError`` naming the file;
- stores (``aggregate`` / ``load_examples``): ``StoreError`` (a ``ValueError``) naming the store file
  or the run folder.

Nothing else may escape, nothing may hang (bounded inputs, no alias expansion). ``COUNTS`` tallies
accepted and refused inputs per surface; the module prints it at the end (``pytest -s``).
"""

from __future__ import annotations

import copy
import math
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from exp_fixtures import TinyDataset, TinyModel, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from mlattack.experiments import ExperimentConfig, StoreError, run_experiment
from mlattack.experiments.aggregate import aggregate, load_examples, open_run
from mlattack.experiments.config import DEVICE_PATTERN, MAX_SEED, NAME_PATTERN
from mlattack.models import build_model, load, save

COUNTS: Counter[str] = Counter()

BASE = tiny_config(
    attacks=[
        {"name": "mla-u", "options": {"steps": 5}},
        {"name": "gmla", "label": "g", "options": {"steps": 5, "preset": "official"}},
    ],
    dataset={"name": "synthetic", "options": {"n": 8, "size": 16, "seed": 1, "split": "test"}},
    target_sets={"sizes": [1, 2], "mode": "random", "draws": 3, "leaf_fraction": 0.5},
    images={"per_target_set": 5, "max_images": 20, "require_consistent": False},
    transfer={
        "attack": {"name": "mla-u"},
        "eps": 0.1,
        "models": [{"name": "tiny", "label": "a"}, {"name": "tiny", "label": "b"}],
    },
    threshold=0.5,
    device="auto",
    gradient_correlation=False,
)
ODD_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            "1",
            "",
            "../../x",
            1.5,
            -1,
            0,
            2**63,
            10**30,
            math.nan,
            math.inf,
            [],
            {},
            [True],
            [1],
            ["a"],
            {"a": 1},
            {"name": None},
            "official",
            "cuda",
            "gpu",
        ]
    ),  # fmt: skip
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> Iterator[None]:
    yield
    print("\nfuzz counts:", dict(sorted(COUNTS.items())))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position inside a nested dict/list config (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def _check_accepted(config: ExperimentConfig) -> None:
    assert all(0.0 < e <= 1.0 for e in config.eps) and len(set(config.eps)) == len(config.eps)
    assert isinstance(config.seed, int) and not isinstance(config.seed, bool)
    assert 0 <= config.seed <= MAX_SEED
    assert NAME_PATTERN.fullmatch(config.name) and DEVICE_PATTERN.fullmatch(config.device)
    assert 0.0 < config.threshold < 1.0
    assert all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in config.target_sets.sizes
    )
    if config.transfer is not None:
        assert 0.0 < config.transfer.eps <= 1.0
    for attack in config.attacks:
        assert attack.options.get("preset") in (None, "official")
    seed = config.dataset.options.get("seed", 0)
    assert isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED
    again = ExperimentConfig.model_validate_json(config.canonical_json())
    assert again == config and again.config_hash() == config.config_hash()


def _names_the_key(message: str, path: tuple[Any, ...]) -> bool:
    """The message names the mutated key, or the section (a prefix of its path) holding it."""
    dotted = [".".join(str(p) for p in path[:k]) for k in range(len(path), 0, -1)]
    return any(f"'{d}" in message or f" {d}" in message for d in dotted)


@pytest.mark.slow
@settings(max_examples=200)  # cheap inputs: more of them
@given(data=st.data())
def test_configs_with_wrong_types_unknown_or_missing_keys(data: st.DataObject) -> None:
    config = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(_paths(config)), label="path")
    action = data.draw(st.sampled_from(["retype", "unknown", "delete"]), label="action")
    parent = _parent(config, path)
    key = path[-1]
    if action == "retype":
        parent[key] = data.draw(ODD_VALUES, label="value")
    elif action == "unknown" and isinstance(parent[key], dict):
        parent[key]["zz_unknown"] = 1
        path = (*path, "zz_unknown")
    elif isinstance(parent, dict):
        del parent[key]
    else:
        parent.pop(key)
    try:
        accepted = ExperimentConfig.from_dict(config)
    except ValueError as exc:
        COUNTS["config refused"] += 1
        assert _names_the_key(str(exc), path), (path, str(exc))
        return
    COUNTS["config accepted"] += 1
    _check_accepted(accepted)


@pytest.mark.slow
@settings(max_examples=150)
@given(data=st.data())
def test_yaml_truncations_aliases_and_duplicates(data: st.DataObject) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False)
    lines = text.splitlines(keepends=True)
    action = data.draw(
        st.sampled_from(["truncate", "alias", "duplicate", "insert"]), label="action"
    )
    if action == "truncate":
        text = text[: data.draw(st.integers(0, len(text)), label="cut")]
    elif action == "alias":
        at = data.draw(st.integers(0, len(lines) - 1), label="line")
        text = "x: &bomb [1, 2]\n" + "".join(lines[:at]) + "y: *bomb\n" + "".join(lines[at:])
    elif action == "duplicate":
        top = [line for line in lines if line[:1].isalpha()]
        text = text + data.draw(st.sampled_from(top), label="line")
    else:
        at = data.draw(st.integers(0, len(text)), label="at")
        text = (
            text[:at]
            + data.draw(st.sampled_from(list(":-[]{}&*!|>'\"#\t\n%@`")), label="char")
            + text[at:]
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            accepted = ExperimentConfig.from_yaml(path)
        except ValueError as exc:
            COUNTS["yaml refused"] += 1
            assert str(exc).startswith(str(path)), str(exc)
            return
    COUNTS["yaml accepted"] += 1
    assert action in ("truncate", "insert")  # an alias or a duplicate key is never accepted
    _check_accepted(accepted)


@lru_cache(maxsize=1)
def _checkpoint_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        names = ("a", "b", "c")
        model = build_model("small-cnn", num_labels=3, label_names=names)
        return save(model, Path(folder) / "m.pt").read_bytes()


@pytest.mark.slow
@given(data=st.data())
def test_damaged_checkpoints(data: st.DataObject) -> None:
    content = bytearray(_checkpoint_bytes())
    action = data.draw(st.sampled_from(["truncate", "flip", "garbage"]), label="action")
    if action == "truncate":
        content = content[: data.draw(st.integers(0, len(content) - 1), label="cut")]
    elif action == "flip":
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(0, len(content) - 1))
            content[at] ^= data.draw(st.integers(1, 255))
    else:
        content = bytearray(data.draw(st.binary(max_size=200), label="bytes"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.pt"
        path.write_bytes(bytes(content))
        try:
            model = load(path)
        except ValueError as exc:
            COUNTS["checkpoint refused"] += 1
            assert "fuzzed.pt" in str(exc), str(exc)
            return
    COUNTS["checkpoint accepted"] += 1
    assert tuple(model.label_names) == ("a", "b", "c")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)


@lru_cache(maxsize=1)
def _stored_run() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-store-"))
    config = ExperimentConfig.from_dict(
        tiny_config(
            attacks=[{"name": "mla-u", "options": {"steps": 2}}],
            eps=[0.1],
            target_sets={"sizes": [1], "mode": "combinations"},
            images={"per_target_set": 2},
            examples=1,
            example_target_sets=1,
        )  # fmt: skip
    )
    return run_experiment(
        config, folder / "run", model=TinyModel(), dataset=TinyDataset(), progress=False
    )


SQL_MUTATIONS = st.sampled_from(
    [
        "DROP TABLE {table}",
        "DELETE FROM meta WHERE key = '{meta}'",
        "UPDATE meta SET value = {value} WHERE key = '{meta}'",
        "UPDATE target_sets SET labels = {value}",
        "UPDATE results SET {column} = {value}",
        "UPDATE examples SET path = {value}",
    ]
)
SQL_VALUES = st.sampled_from(
    ["NULL", "'{'", "'[]'", "'3'", "'\"x\"'", "'[999]'", "'[-1]'", "'{}'", "'../../x'", "-1", "X'00ff'",
     "'/etc/passwd'", "'[[1,\"a\"]]'", "'{\"eps\": [true], \"attacks\": []}'"]
)  # fmt: skip


@pytest.mark.slow
@given(data=st.data())
def test_damaged_stores(data: st.DataObject) -> None:
    source = _stored_run()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        shutil.copytree(source, run_dir)
        store = run_dir / "results-rank0.sqlite"
        if data.draw(st.booleans(), label="bytes"):
            content = bytearray(store.read_bytes())
            for name in ("results-rank0.sqlite-wal", "results-rank0.sqlite-shm"):
                (run_dir / name).unlink(missing_ok=True)
            if data.draw(st.booleans(), label="truncate"):
                content = content[: data.draw(st.integers(0, len(content) - 1), label="cut")]
            else:
                for _ in range(data.draw(st.integers(1, 16), label="flips")):
                    at = data.draw(st.integers(0, len(content) - 1))
                    content[at] ^= data.draw(st.integers(1, 255))
            store.write_bytes(bytes(content))
        else:
            sql = data.draw(SQL_MUTATIONS, label="sql").format(
                table=data.draw(st.sampled_from(["results", "meta", "target_sets", "units", "examples"])),
                meta=data.draw(st.sampled_from(META_KEYS)),
                column=data.draw(st.sampled_from(RESULT_COLUMNS)),
                value=data.draw(SQL_VALUES, label="value"),
            )  # fmt: skip
            db = sqlite3.connect(store)
            try:
                db.execute(sql)
                db.commit()
            except sqlite3.IntegrityError:  # a NOT NULL column: the mutation itself is refused
                pass
            finally:
                db.close()
        try:
            result = aggregate([run_dir])
            examples = load_examples(open_run(run_dir))
        except (StoreError, FileNotFoundError) as exc:
            COUNTS["store refused"] += 1
            assert "results-rank0.sqlite" in str(exc) or str(run_dir) in str(exc), str(exc)
            return
    COUNTS["store accepted"] += 1
    assert result.n_rows >= 0 and isinstance(examples, list)
    _check_aggregates(result)


def _check_aggregates(result: Any) -> None:
    """What an accepted store's aggregates always satisfy: counts and rates in their ranges."""
    for row in result.per_set:
        assert 0 <= row["n_nonfinite"] <= row["n_images"] and row["n_images"] >= 1
        assert 0 <= row["n_semantic"] <= row["n_success"] <= row["n_images"]
        for metric in ("fr_naive", "fr_semantic", "nt_rate"):
            assert math.isnan(row[metric]) or 0.0 <= row[metric] <= 1.0, (metric, row)


META_KEYS = ["label_names", "config", "schema_version", "model", "skipped_images", "graph",
             "dropped_unreadable"]  # fmt: skip
RESULT_COLUMNS = ["success", "semantic_success", "attacked", "nonfinite_logits", "eps", "ts_id",
                  "nt_flip_fraction", "ssim", "attack", "linf", "iterations"]  # fmt: skip
JSON_PATCHES = st.sampled_from(
    [("config", "$.dataset", "'voc'"), ("config", "$.dataset.name", "3"),
     ("config", "$.name", "json('[1]')"), ("config", "$.attacks[0].options", "'x'"),
     ("config", "$.transfer", "json('{\"attack\": 3}')"), ("graph", "$.edges", "3"),
     ("graph", "$.names", "json('[\"a\"]')"), ("graph", "$.metadata", "'x'"),
     ("config", "$.eps", "json('[0.1, 0.1]')")]
)  # fmt: skip
NPZ_DAMAGES = st.sampled_from(
    ["truncate", "empty", "no-delta", "no-targets", "wide-targets", "2d-targets", "delta-shape",
     "object-array", "nan-delta", "float-targets"]
)  # fmt: skip


def _damage_npz(path: Path, damage: str, data: st.DataObject) -> None:
    import numpy as np

    if damage in ("truncate", "empty"):
        content = path.read_bytes()
        cut = 0 if damage == "empty" else data.draw(st.integers(1, len(content) - 1), label="cut")
        path.write_bytes(content[:cut])
        return
    arrays = dict(np.load(path))
    width = len(arrays["targets"])
    if damage.startswith("no-"):
        del arrays[damage[3:]]
    elif damage == "wide-targets":
        arrays["targets"] = np.zeros(width + 2, dtype=bool)
    elif damage == "2d-targets":
        arrays["targets"] = np.zeros((2, width), dtype=bool)
    elif damage == "delta-shape":
        arrays["delta"] = arrays["delta"][:, :3]
    elif damage == "object-array":
        arrays["adv_pred"] = np.array([{"x": 1}], dtype=object)
    elif damage == "nan-delta":
        arrays["delta"] = np.full_like(arrays["delta"], np.nan)
    else:
        arrays["targets"] = arrays["targets"].astype(np.float64) + 0.5
    np.savez(path, **arrays)


@settings(max_examples=12)  # each builds a whole report (figures included): about 1 s
@given(data=st.data())
def test_damaged_report_inputs(data: st.DataObject) -> None:
    """``build_report`` on damaged metadata, rows and example files: a report whose numbers are in
    range, or one ``StoreError`` naming the store or the file."""
    from mlattack.experiments import build_report

    source = _stored_run()
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("report"))
        store = run_dir / "results-rank0.sqlite"
        surface = data.draw(st.sampled_from(["meta", "rows", "npz"]), label="surface")
        named = str(store)
        if surface == "npz":
            path = sorted((run_dir / "examples").glob("*.npz"))[0]
            _damage_npz(path, data.draw(NPZ_DAMAGES, label="damage"), data)
            named = str(path)
        else:
            if surface == "meta":
                key, where, value = data.draw(JSON_PATCHES, label="patch")
                sql = f"UPDATE meta SET value = json_set(value, '{where}', {value}) WHERE key = '{key}'"
            else:
                column = data.draw(st.sampled_from(RESULT_COLUMNS), label="column")
                value = data.draw(st.sampled_from(["2", "-1", "5.5", "'x'", "NULL", "1e300"]))
                sql = f"UPDATE results SET {column} = {value} WHERE rowid % 2 = 0"
            db = sqlite3.connect(store)
            try:
                db.execute(sql)
                db.commit()
            except sqlite3.IntegrityError:
                pass
            finally:
                db.close()
        try:
            page = build_report(run_dir)
        except StoreError as exc:
            COUNTS["report refused"] += 1
            assert named in str(exc) or str(run_dir) in str(exc), str(exc)
            return
        COUNTS["report accepted"] += 1
        assert page.is_file()
        _check_aggregates(aggregate([run_dir]))


@pytest.mark.slow
@given(data=st.data())
def test_checkpoints_with_damaged_metadata(data: st.DataObject) -> None:
    import io
    import json

    payload = torch.load(io.BytesIO(_checkpoint_bytes()), weights_only=True)
    metadata = json.loads(payload["metadata_json"])
    target = data.draw(st.sampled_from(["metadata", "payload"]), label="where")
    tree = metadata if target == "metadata" else payload
    path = data.draw(
        st.sampled_from([p for p in _paths(tree) if p[0] != "state_dict"]), label="path"
    )
    parent = _parent(tree, path)
    if data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(ODD_VALUES, label="value")
    if target == "metadata":
        payload["metadata_json"] = json.dumps(metadata)
    with tempfile.TemporaryDirectory() as folder:
        path_on_disk = Path(folder) / "fuzzed.pt"
        torch.save(payload, path_on_disk)
        try:
            model = load(path_on_disk)
        except ValueError as exc:
            COUNTS["checkpoint metadata refused"] += 1
            assert "fuzzed.pt" in str(exc), str(exc)
            return
    COUNTS["checkpoint metadata accepted"] += 1
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, len(model.label_names))
