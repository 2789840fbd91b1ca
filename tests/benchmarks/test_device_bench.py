"""``benchmarks/device_bench.py --quick`` runs on a CPU and prints every figure it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_quick_device_bench_prints_every_figure() -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "device_bench.py"), "--quick", "--device", "cpu"],
        capture_output=True, text=True, timeout=60, env=environment, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    timings = re.findall(r"^(.+?) (mla-u|gmla) +(fp32|bf16|fp16) +([0-9.]+) +([0-9.]+)", out, re.M)
    # MLA-U and GMLA on both models, in fp32 (and AMP when the attacks have it), side by side.
    assert {(model.split()[0], attack) for model, attack, *_ in timings} == {
        (model, attack)
        for model in ("ResNet-50-sized", "TResNet-L-sized")
        for attack in ("mla-u", "gmla")
    }
    assert all(float(seconds) > 0 for *_, seconds, _ in timings)
    assert len(re.findall(r"GMLA/MLA-U per step [0-9.]+", out)) >= 2
    assert "AMP" in out and "largest batch that fits" in out
    assert re.search(
        r"9,605 labels cost <= 1.2x those at 20 labels .*worst ratio [0-9.]+ -> (PASS|FAIL)", out
    )


def test_bottleneck_resnet_has_resnet50s_shape() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from device_bench import BottleneckResNet
    finally:
        sys.path.remove(str(BENCHMARKS))
    backbone = BottleneckResNet((3, 4, 6, 3), 64, 448)
    # torchvision's resnet50 has 25,557,032 parameters, of which its 1000-way fc holds 2,049,000.
    assert sum(p.numel() for p in backbone.parameters()) == 25_557_032 - 2_049_000
    assert backbone.out_channels == 2048
