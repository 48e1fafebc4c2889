"""The benchmark scripts in their quick modes (tiny configs, end to end): they run, and their tables add up."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_benchmark_smoke_mode():
    """benchmarks/gpu.py --smoke runs, draws diffusers' image, and reports both speeds (diffusers = 1.00)."""
    command = [sys.executable, "gpu.py", "--smoke", "--no-compile"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    difference = float(re.search(r"pixel difference after \d+ steps: (\S+)", result.stdout).group(1))
    assert difference < 1e-4  # minsd and diffusers drew the same image from the same noise
    assert re.search(r"\| diffusers \(eager, SDPA\) \|.*\| 1\.00 ", result.stdout)
    assert re.search(r"\| minsd \(eager\) +\| [\d.]+ +\| [\d.]+ ", result.stdout)


def table_row(text: str, label: str) -> list[str]:
    """The cells of the first markdown table row whose first cell is `label`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_cpu_benchmark_quick_mode(tmp_path):
    """benchmarks/cpu.py --quick writes its report; each median ratio lies within its measured range."""
    report = tmp_path / "cpu.md"
    command = [sys.executable, "cpu.py", "--quick", "--no-compile", "--out", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    assert float(re.search(r"fp32 matmul rate of this CPU in this run: (\d+) GFLOP/s", text).group(1)) > 0
    unet_rows = [f"UNet forward, batch 2, {n}x{n} latents ({8 * n} px)" for n in (16, 32)]
    for label in (*unet_rows, "pipeline 64x64, 2 steps, guidance"):
        *_, ratio, spread = table_row(text, label)
        low, high = map(float, spread.split(" - "))
        assert 0 < low <= float(ratio) <= high  # the median of the paired ratios lies within their range
    peaks = table_row(text, "UNet forward, batch 2, 32x32")[1:5]  # the memory table: peaks and rises
    assert all(float(x) > 0 for x in peaks)


def test_cpu_profile_quick_mode():
    """The profile finds each group's operators and its groups add up to its total, in every column."""
    command = [sys.executable, "cpu_profile.py", "--quick", "--size", "32"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    groups = [table_row(result.stdout, g) for g in ("convolutions", "linear layers", "attention", "everything else")]
    total = table_row(result.stdout, "total")
    for column in (2, 3, 4):  # diffusers eager, minsd eager, minsd compiled: "seconds (GFLOP/s)"
        seconds = [float(row[column].split()[0]) for row in groups]
        assert sum(seconds) == pytest.approx(float(total[column].split()[0]), abs=0.02)
    # Eager operators have the same ATen names on every CPU: each group's time was found. (Which of
    # the compiled graph's kernels run as external matmuls or convolutions depends on the CPU's
    # instruction set, so the compiled column is only checked to add up.)
    for column in (2, 3):
        for row in groups[:3]:
            assert float(re.search(r"\(([\d.e+-]+)\)", row[column]).group(1)) > 0, row
