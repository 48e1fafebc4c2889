"""The GPU benchmark's CPU smoke mode: the same script, a tiny config, end to end."""

import re
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_benchmark_smoke_mode():
    command = [sys.executable, "gpu.py", "--smoke", "--no-compile"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    difference = float(re.search(r"pixel difference after \d+ steps: (\S+)", result.stdout).group(1))
    assert difference < 1e-4  # minsd and diffusers drew the same image from the same noise
    assert re.search(r"\| diffusers \(eager, SDPA\) \|.*\| 1\.00 ", result.stdout)
    assert re.search(r"\| minsd \(eager\) +\| [\d.]+ +\| [\d.]+ ", result.stdout)
