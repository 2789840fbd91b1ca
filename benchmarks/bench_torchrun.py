"""Cost of the clean scan per rank: one rank scanning everything vs. each of W joined ranks.

Target (issue 11): with 2 ranks joined by ``torch.distributed`` (gloo on 127.0.0.1), the clean scan
costs each rank <= 0.6 x what one rank scanning everything costs -- the shard plus the gather.

Each rank runs single-threaded and is measured by its own CPU time (what it pays; robust to other
jobs on a shared machine), wall-clock time is printed beside it. Every figure is the best of
``--repeats`` scans. The gathered scan is checked to equal the single rank's (same hash).

Usage: ``python benchmarks/bench_torchrun.py [--images 512] [--size 64] [--ranks 2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from mlattack.experiments.config import ExperimentConfig
from mlattack.experiments.distributed import Ranks
from mlattack.experiments.scan import scan_clean
from mlattack.models import build_model

NUM_LABELS = 80


class RandomImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Seeded random images (created on access, like files read from disk) without labels."""

    has_ground_truth = False

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        image = torch.rand(3, self.size, self.size, generator=generator)
        return image, torch.zeros(NUM_LABELS, dtype=torch.bool)


def _setup(args: argparse.Namespace) -> tuple[Any, RandomImages, ExperimentConfig]:
    torch.manual_seed(0)
    model = build_model(
        "small-cnn",
        num_labels=NUM_LABELS,
        backbone={"name": "small-cnn", "input_size": args.size},
    ).eval()
    config = ExperimentConfig.from_dict(
        {
            "model": {"name": "small-cnn"},
            "dataset": {"name": "synthetic"},
            "attacks": [{"name": "mla-u"}],
            "eps": [0.01],
            "batch_size": args.batch,
        }
    )
    return model, RandomImages(args.images, args.size), config


def _best_scan(args: argparse.Namespace, ranks: Ranks) -> dict[str, Any]:
    model, dataset, config = _setup(args)
    cpu, wall, digest = [], [], ""
    for _ in range(args.repeats):
        ranks.barrier()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        scan = scan_clean(
            model, dataset, len(dataset), None, config, torch.device("cpu"), ranks,
            progress=False, what="clean predictions",
        )  # fmt: skip
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
        digest = scan.digest()
    return {"cpu": min(cpu), "wall": min(wall), "digest": digest}


def _rank_main(rank: int, world: int, port: int, out: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        figures = _best_scan(args, Ranks(rank, world, joined=True))
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(figures), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    single = _best_scan(args, Ranks())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(
            _rank_main, args=(args.ranks, port, out, args), nprocs=args.ranks, start_method="fork"
        )
        per_rank = [
            json.loads(Path(out, f"rank{r}.json").read_text(encoding="utf-8"))
            for r in range(args.ranks)
        ]

    print(
        f"clean scan of {args.images} images at {args.size} px, batch {args.batch}, 1 thread/rank"
    )
    print(f"  1 rank          : cpu {single['cpu']:.3f} s   wall {single['wall']:.3f} s")
    for rank, figures in enumerate(per_rank):
        print(
            f"  rank {rank} of {args.ranks}     : cpu {figures['cpu']:.3f} s   wall "
            f"{figures['wall']:.3f} s   ratio to 1 rank: cpu {figures['cpu'] / single['cpu']:.2f}, "
            f"wall {figures['wall'] / single['wall']:.2f}"
        )
    worst = max(figures["cpu"] / single["cpu"] for figures in per_rank)
    same = all(figures["digest"] == single["digest"] for figures in per_rank)
    print(f"  gathered scan equals the 1-rank scan: {same}")
    print(
        f"  worst rank / 1 rank (cpu): {worst:.2f}  (target <= 0.6: {'PASS' if worst <= 0.6 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
