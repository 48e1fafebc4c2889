"""The chapters as notebooks, read as a reader reads them: JupyterLab started with the
README's command (`.venv/bin/jupyter lab notebooks/`, from the repository root),
Chromium driven by Playwright (tests/lab_driver.py). For every chapter, one at a time
in one server: a double click opens it as a notebook; Run All finishes with no error
output; no raw MyST (roles, directives, unresolved references) in its rendered
Markdown and every {eval} shows its value; no stray output under a slider; every slider
moved once redraws its figure; a save leaves the file as it was. Afterwards the
repository's notebooks/ is as it was before.

Results per chapter go to tests/output/lab/report.json, screenshots beside it.
"""

import json
import subprocess
from pathlib import Path

import pytest
from lab_driver import ROOT, Lab, chromium

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.md"))
OUTPUT = ROOT / "tests" / "output" / "lab"

pytestmark = pytest.mark.slow


def git_status(folder: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout


def test_every_chapter_reads_in_jupyterlab():
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    before = git_status(ROOT / "notebooks")
    with Lab() as lab, sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        results = [lab.read_chapter(page, chapter, OUTPUT) for chapter in NOTEBOOKS]
        browser.close()
    (OUTPUT / "report.json").write_text(
        json.dumps([r.__dict__ for r in results], indent=1)
    )
    problems = [p for r in results for p in r.problems()]
    assert not problems, "\n".join(problems)
    # every chapter with live sliders had them found and moved
    with_sliders = [c.stem for c in NOTEBOOKS if "ipywidgets.interact" in c.read_text()]
    assert all(r.sliders for r in results if r.name in with_sliders)
    assert git_status(ROOT / "notebooks") == before, "JupyterLab left files behind"
