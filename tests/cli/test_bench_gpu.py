"""CPU tests of bench/bench_gpu.py: the peak table tells H100 SXM from PCIe/NVL, and no CUDA exits 0."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import bench_gpu  # noqa: E402


@pytest.mark.parametrize("name,gib,variant,bf16", [
    ("NVIDIA H100 80GB HBM3", 79.6, "H100 SXM", 1979 / 2),   # datasheet: 1,979 TFLOP/s with sparsity
    ("NVIDIA H100 PCIe", 79.6, "H100 PCIe", 1513 / 2),
    ("NVIDIA H100 NVL", 93.6, "H100 NVL", 1671 / 2),
    ("NVIDIA H100", 93.6, "H100 NVL", 1671 / 2),             # no hint in the name: 94 GB is the NVL
    ("NVIDIA H200", 139.8, "H200 SXM", 1979 / 2),
    ("NVIDIA H200 NVL", 139.8, "H200 NVL", 1671 / 2),
])
def test_peak_table_tells_the_variants_apart(name, gib, variant, bf16):
    assert bench_gpu.gpu_variant(name, gib) == variant
    assert abs(bench_gpu.peak_tflops(name, gib, "bf16") - bf16) < 1.0


def test_unknown_variant_gives_nan():
    assert bench_gpu.gpu_variant("NVIDIA H100", 79.6) == ""  # SXM or PCIe? not guessed
    assert bench_gpu.peak_tflops("NVIDIA GeForce RTX 4090", 24.0, "bf16") != bench_gpu.peak_tflops(
        "NVIDIA GeForce RTX 4090", 24.0, "bf16")  # NaN


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only path")
@pytest.mark.parametrize("script", ["bench_gpu.py", "gpu_check.py"])
def test_no_cuda_exits_0_with_a_line(script):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0 and "no CUDA" in p.stdout
