"""Cost of loading a released checkpoint with our loaders, against the bare minimum, in one run.

For each released layout asked for (full size, random weights made from the manifest's keys and
shapes in ``../shared/data/official-models/manifests``, written once to a temporary file):

- ``loader``: ``load_asl_checkpoint`` / ``load_mldecoder_checkpoint`` / ``load_mlgcn_checkpoint``
  on the file: read, infer the architecture, build, put the tensors in (everything a user waits
  for);
- ``baseline``: ``torch.load(weights_only=True)`` + ``load_state_dict`` of the same state dict into
  the same model, already built (not timed): the least any loader must do.

Target: ``loader / baseline <= 1.2``. Medians of ``--repeats`` alternated runs (the machine is
shared and noisy); the file is read once first so both find it in the page cache.

    python benchmarks/bench_checkpoint_load.py [--layouts asl_tresnet_l_openimages_448 ...]
        [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlattack.models import load_asl_checkpoint, load_mldecoder_checkpoint, load_mlgcn_checkpoint
from mlattack.models.released.asl import map_asl_state_dict
from mlattack.models.released.mldecoder import map_mldecoder_state_dict
from mlattack.models.released.mlgcn import map_mlgcn_state_dict

MANIFESTS = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "official-models" / "manifests"
)
DEFAULT_LAYOUTS = [
    "asl_tresnet_l_openimages_448",
    "mldecoder_tresnet_m_openimages_224",
    "mlgcn_resnet101_voc_448",
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
TARGET = 1.2


def _write_release(manifest: dict[str, Any], folder: Path) -> tuple[Path, Path | None]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, dtype, _ in manifest["state_dict"]["keys"]:
        if DTYPES[dtype].is_floating_point:
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.zeros(shape, dtype=DTYPES[dtype])
    path = folder / f"{manifest['layout']}.pth"
    num_classes = manifest["release"]["num_classes"]
    if manifest["family"] == "ML-GCN":
        torch.save({"epoch": 1, "arch": None, "state_dict": state, "best_score": 0.0}, path)
        vectors = folder / "glove_word2vec.pkl"
        vectors.write_bytes(pickle.dumps(np.zeros((num_classes, 300), np.float32), protocol=3))
        return path, vectors
    names = {i: f"/m/{i:05d}" for i in range(num_classes)}  # MIDs: distinct names, any count
    torch.save({"model": state, "num_classes": num_classes, "idx_to_class": names}, path)
    return path, None


def _loader(manifest: dict[str, Any], path: Path, vectors: Path | None) -> Callable[[], Any]:
    family = manifest["family"]
    if family == "ML-GCN":
        names = [f"class {i}" for i in range(manifest["release"]["num_classes"])]
        return lambda: load_mlgcn_checkpoint(path, word_vectors=vectors, label_names=names)  # type: ignore[arg-type]
    if family == "ASL":
        return lambda: load_asl_checkpoint(path)
    return lambda: load_mldecoder_checkpoint(path)


def _baseline(manifest: dict[str, Any], path: Path, model: torch.nn.Module) -> Callable[[], None]:
    family = manifest["family"]
    key = "state_dict" if family == "ML-GCN" else "model"
    mapper = {"ASL": map_asl_state_dict, "ML-Decoder": map_mldecoder_state_dict}.get(
        family, map_mlgcn_state_dict
    )
    embeddings = model.state_dict().get("label_embeddings")

    def run() -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)[key]
        mapped, _ = mapper(
            {
                name: value.float() if value.is_floating_point() else value
                for name, value in state.items()
            }
        )
        if embeddings is not None:
            mapped["label_embeddings"] = embeddings
        model.load_state_dict(mapped, strict=True)

    return run


def _time(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=DEFAULT_LAYOUTS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'layout':38s} {'MB':>6s} {'loader s':>9s} {'baseline s':>11s} {'ratio':>6s}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for layout in args.layouts:
            manifest = json.loads((MANIFESTS / f"{layout}.json").read_text("utf-8"))
            path, vectors = _write_release(manifest, Path(folder))
            load = _loader(manifest, path, vectors)
            baseline = _baseline(manifest, path, load())  # also warms the page cache
            loader_times, baseline_times = [], []
            for _ in range(args.repeats):
                loader_times.append(_time(load))
                baseline_times.append(_time(baseline))
            ours, base = statistics.median(loader_times), statistics.median(baseline_times)
            worst = max(worst, ours / base)
            size = path.stat().st_size / 1e6
            print(f"{layout:38s} {size:6.0f} {ours:9.3f} {base:11.3f} {ours / base:6.2f}")
            path.unlink()
    verdict = "meets" if worst <= TARGET else "MISSES"
    print(f"worst loader/baseline ratio {worst:.2f}: {verdict} the target <= {TARGET}")


if __name__ == "__main__":
    main()
