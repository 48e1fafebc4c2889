"""environment.yml installs what pyproject.toml and .ci/setup install."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pip_section(text: str) -> list[str]:
    lines = text.split("- pip:", 1)[1].splitlines()
    return [line.strip()[2:].strip() for line in lines if line.strip().startswith("- ")]


def test_environment_installs_the_package_with_every_extra():
    """environment.yml installs minsd editable with every extra that pyproject.toml
    defines."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    entries = pip_section((ROOT / "environment.yml").read_text())
    editable = [e for e in entries if e.startswith("-e .[")]
    assert len(editable) == 1, entries
    assert set(editable[0][len("-e .[") : -1].split(",")) == extras


def test_environment_pins_the_same_torch_as_setup():
    """environment.yml pins the torch version that .ci/setup installs."""
    entries = pip_section((ROOT / "environment.yml").read_text())
    setup = (ROOT / ".ci" / "setup").read_text()
    pin = re.search(r"MINSD_TORCH:-(torch==[\d.]+)", setup).group(1)
    assert pin in entries


def test_one_python_version_everywhere():
    """environment.yml pins the Python that pyproject.toml's requires-python names as
    its lowest (3.11: tomllib, imported above, is 3.11's), and ruff's target is it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    python = re.search(r"- python=(\d+)\.(\d+)", (ROOT / "environment.yml").read_text())
    assert minimum.groups() == python.groups() == ("3", "11")
    assert pyproject["tool"]["ruff"].get("target-version", "py311") == "py311"


def test_ci_runs_the_readme_test_command():
    """CI runs the test command that the README gives."""
    readme = (ROOT / "README.md").read_text()
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command in readme
