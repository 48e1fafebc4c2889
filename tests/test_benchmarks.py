"""The benchmark scripts in their quick modes (tiny configs, end to end): they run, and
their tables add up."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_benchmark_smoke_mode(tmp_path):
    """benchmarks/gpu.py --smoke runs each variant in a fresh process and writes its
    report: minsd draws diffusers' images from the same noise, and both are timed."""
    report = tmp_path / "gpu.md"
    command = [
        sys.executable,
        "gpu.py",
        "--smoke",
        "--no-compile",
        "--batches",
        "2",
        "--out",
        str(report),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    # the report is all that goes to stdout
    assert text.strip() == result.stdout.strip()
    difference = re.search(
        r"batch 2: max \|minsd - diffusers\| pixel difference \(eager, same noise\): max (\S+),",
        text,
    )
    assert float(difference.group(1)) < 1e-4  # fp32 on the CPU: the same image
    for label in ("diffusers eager", "minsd eager"):
        variant, batch, it_s, versus, s_per_image, *_ = table_row(text, label)
        assert batch == "2" and float(s_per_image) > 0
    # "-": it/s lost in a busy machine's noise
    assert table_row(text, "diffusers eager")[3] in ("1.00", "-")
    assert "Partial" not in text and "failed" not in text


def import_benchmark(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module(name)


def test_gpu_benchmark_peaks_by_device_name(monkeypatch):
    """The dense fp16 tensor peaks of NVIDIA's datasheets, found by
    torch.cuda.get_device_name(); an L40S is no L4."""
    gpu = import_benchmark("gpu", monkeypatch)
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4  # SXM
    assert gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_tflops("NVIDIA H200") == 989.4
    assert gpu.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu.peak_tflops("NVIDIA L4") == 121.0
    assert gpu.peak_tflops("NVIDIA L40S") is None


def test_gpu_benchmark_syncs_per_step(monkeypatch):
    """Syncs per step: what grows from 1 step to N, over N - 1; the fixed syncs (text,
    decoding) cancel."""
    gpu = import_benchmark("gpu", monkeypatch)
    at_20 = ["scheduler.py:7"] * 20 + ["pipeline.py:3"] * 2 + ["unet.py:9"] * 19
    at_1 = ["scheduler.py:7"] * 1 + ["pipeline.py:3"] * 2
    per_step, sources = gpu.syncs_per_step(at_20, at_1, 20)
    assert per_step == 2.0
    assert sources == [("scheduler.py:7", 1.0), ("unet.py:9", 1.0)]


def table_row(text: str, label: str) -> list[str]:
    """The cells of the first markdown table row whose first cell is `label`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_cpu_benchmark_quick_mode(tmp_path):
    """benchmarks/cpu.py --quick writes its report; each median ratio lies within its
    measured range."""
    report = tmp_path / "cpu.md"
    command = [
        sys.executable,
        "cpu.py",
        "--quick",
        "--no-compile",
        "--out",
        str(report),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    assert (
        float(
            re.search(
                r"fp32 matmul rate of this CPU in this run: (\d+) GFLOP/s", text
            ).group(1)
        )
        > 0
    )
    unet_rows = [
        f"UNet forward, batch 2, {n}x{n} latents ({8 * n} px)" for n in (16, 32)
    ]
    for label in (*unet_rows, "pipeline 64x64, 2 steps, guidance"):
        *_, ratio, spread = table_row(text, label)
        low, high = map(float, spread.split(" - "))
        # the median of the paired ratios lies within their range
        assert 0 < low <= float(ratio) <= high
    # the memory table: peaks and rises
    peaks = table_row(text, "UNet forward, batch 2, 32x32")[1:5]
    assert all(float(x) > 0 for x in peaks)


def test_cpu_profile_quick_mode():
    """The profile finds each group's operators and its groups add up to its total, in
    every column."""
    command = [sys.executable, "cpu_profile.py", "--quick", "--size", "32"]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    groups = [
        table_row(result.stdout, g)
        for g in ("convolutions", "linear layers", "attention", "everything else")
    ]
    total = table_row(result.stdout, "total")
    # diffusers eager, minsd eager, minsd compiled: "seconds (GFLOP/s)"
    for column in (2, 3, 4):
        seconds = [float(row[column].split()[0]) for row in groups]
        assert sum(seconds) == pytest.approx(float(total[column].split()[0]), abs=0.02)
    # Eager operators have the same ATen names on every CPU: each group's time was
    # found. (Which of the compiled graph's kernels run as external matmuls or
    # convolutions depends on the CPU's instruction set, so the compiled column is
    # only checked to add up.)
    for column in (2, 3):
        for row in groups[:3]:
            assert float(re.search(r"\(([\d.e+-]+)\)", row[column]).group(1)) > 0, row


def test_browser_quick_mode():
    """benchmarks/browser.py runs the exported default model in Chromium beside torch
    and reports both per-call times, the image's time and the page weight it adds."""
    command = [sys.executable, "browser.py", "--quick"]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=BENCHMARKS, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    browser_ms, torch_ms = table_row(result.stdout, "ms per UNet call (batch 2)")[1:3]
    assert float(browser_ms) > 0 and float(torch_ms) > 0
    image_ms = table_row(
        result.stdout, "ms per image (20 Euler steps, g = 7.5, decode)"
    )[1]
    assert float(image_ms.split()[0]) > 0
    weight = re.search(
        r"page weight added: ([\d.]+) MB, ([\d.]+) MB gzipped", result.stdout
    )
    assert 0 < float(weight.group(2)) < float(weight.group(1))
