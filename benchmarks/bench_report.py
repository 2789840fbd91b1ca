"""Time ``mlattack report`` on a store of 10^5 synthetic result rows (target: <= 30 s).

    python3 benchmarks/bench_report.py [--rows 100000]

Fills a run directory with random but well-formed rows (3 attacks x 2 eps x 2 target-set sizes x
N target sets x images), then times ``build_report`` end to end (aggregation, CSV/JSON, figures, HTML).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mlattack.experiments import ExperimentConfig, ResultStore, build_report
from mlattack.graph import LabelGraph

ATTACKS = ("mla-u", "mla-c", "gmla")
EPS = (0.01, 0.02)
SIZES = (1, 2)
NUM_LABELS = 20
IMAGES_PER_SET = 100


def fill(run_dir: Path, rows: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    names = [f"label{i}" for i in range(NUM_LABELS)]
    graph = LabelGraph(names, [(names[i], names[i + 10]) for i in range(10)])
    config = ExperimentConfig.from_dict({
        "model": {"name": "bench"}, "dataset": {"name": "bench"},
        "attacks": [{"name": a} for a in ATTACKS], "eps": list(EPS),
        "target_sets": {"sizes": list(SIZES)}, "gradient_correlation": True,
    })  # fmt: skip
    meta = {"config_hash": config.config_hash(), "config": config.model_dump(mode="json"), "model": "bench",
            "label_names": names, "graph": graph.to_json()}  # fmt: skip
    per_set = len(ATTACKS) * len(EPS) * IMAGES_PER_SET
    n_sets = max(1, -(-rows // per_set))  # ceil: at least `rows` rows
    written = 0
    with ResultStore.create_or_open(run_dir / "results-rank0.sqlite", meta) as store:
        target_sets = [(t, SIZES[t % 2], json.dumps(sorted(rng.choice(NUM_LABELS, SIZES[t % 2], replace=False).tolist())),
                        IMAGES_PER_SET, IMAGES_PER_SET) for t in range(n_sets)]  # fmt: skip
        store.record_target_sets(target_sets)
        for ts_id, _, labels, _, _ in target_sets:
            batch = []
            for attack in ATTACKS:
                for eps in EPS:
                    for image in range(IMAGES_PER_SET):
                        success = bool(rng.random() < 0.8)
                        semantic = success and bool(rng.random() < 0.6)
                        clean = json.dumps(
                            sorted(rng.choice(NUM_LABELS, 4, replace=False).tolist())
                        )
                        batch.append((ts_id, image, attack, eps, True, success, semantic,
                                      float(rng.random() * 0.1) if success else None, eps, eps * 50,
                                      float(0.9 + 0.1 * rng.random()) if success else None, int(rng.integers(1, 300)),
                                      0.05, False, clean, clean, labels, labels))  # fmt: skip
            gradcorr = [
                (ts_id, i, float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
                for i in range(IMAGES_PER_SET)
            ]
            store.write_unit(f"bench:{ts_id}", results=batch, gradcorr=gradcorr)
            written += len(batch)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        started = time.perf_counter()
        written = fill(run_dir, args.rows)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        page = build_report(run_dir)
        seconds = time.perf_counter() - started
        print(f"filled {written} rows in {filled:.1f} s")
        print(
            f"report on {written} rows: {seconds:.2f} s (target <= 30 s; {page.stat().st_size} bytes of HTML)"
        )


if __name__ == "__main__":
    main()
