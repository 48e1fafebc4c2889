"""The style rules that tools hold: `ruff check` and `ruff format --check` pass on the
package, the tests and the benchmarks, with the project's configuration
(pyproject.toml). The notebooks' code cells: test_notebooks.py."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["minsd", "tests", "benchmarks"]


@pytest.mark.parametrize(
    "command", [["check"], ["format", "--check"]], ids=["check", "format"]
)
def test_ruff(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *FOLDERS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
