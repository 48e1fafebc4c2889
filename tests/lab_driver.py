"""JupyterLab as a reader uses it, driven through Chromium: the README's notebook
command started on notebooks/, a chapter opened by a double click, Run All, every
slider moved, the chapter saved and closed. tests/test_jupyterlab.py runs it on every
chapter; it can also run on one chapter while the chapter is written:

    .venv/bin/python tests/lab_driver.py 07 [--shots DIR]
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# The checkout whose notebooks/ JupyterLab serves: this one, or $MINSD_LAB_ROOT's.
ROOT = Path(os.environ.get("MINSD_LAB_ROOT") or Path(__file__).resolve().parents[1])
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUN_ALL_TIMEOUT_S = 600  # one chapter's Run All, on a busy machine
MOVE_TIMEOUT_S = 60  # one slider move until its figure has redrawn

# MyST that a reader should never see raw in a rendered Markdown cell: roles,
# directives, colon fences, HTML source.
RAW_MYST = re.compile(
    r"\{[a-z][\w:-]*\}`|^\s*:::|```\{|\(\w[\w-]*\)=|<div|</div>|<p class", re.M
)

# What a reader sees in the open notebook, measured in the page.
NOTEBOOK_STATE = r"""() => {
  const panel = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
  if (!panel) return null;
  const cells = [...panel.querySelectorAll(".jp-Cell")];
  const code = cells.filter((c) => c.classList.contains("jp-CodeCell"));
  const prompts = code.map((c) => (c.querySelector(".jp-InputPrompt")?.textContent || "").trim());
  const markdown = cells.filter((c) => c.classList.contains("jp-MarkdownCell"));
  const texts = markdown.map((c) => {
    const out = c.querySelector(".jp-MarkdownOutput, .jp-RenderedMarkdown, .myst");
    if (!out) return "";
    // rendered text only: code spans and maths are not prose
    const clone = out.cloneNode(true);
    clone.querySelectorAll("code, pre, .MathJax, mjx-container, .katex").forEach((e) => e.remove());
    return clone.innerText;
  });
  const codeSpans = markdown.flatMap((c) => [...c.querySelectorAll(".jp-MarkdownOutput code, .myst code")].map((e) => e.textContent));
  // An error or a warning in an output (a notice on stderr, such as which model a
  // chapter loads, is not one).
  // (A listing of the package's code, minsd.book.listing, is code, not a message.)
  const message = (o) => {
    const shown = o.cloneNode(true);
    shown.querySelectorAll("pre code, .highlight").forEach((e) => e.remove());
    return shown.textContent;
  };
  const errors = [...panel.querySelectorAll(".jp-OutputArea-output")].filter((o) =>
    /Traceback \(most recent call last\)|\b\w*(Error|Warning)\b/.test(message(o)))
    .map((o) => o.textContent.slice(0, 300));
  const stray = [...panel.querySelectorAll(".jp-OutputArea-output")].filter((o) =>
    /^<function |^<matplotlib\.|^interactive\(children=/.test(o.textContent.trim())).map((o) => o.textContent.slice(0, 120));
  const editing = markdown.filter((c) => !c.classList.contains("jp-mod-rendered")).length;
  // What jupyterlab-myst could not resolve (a citation, a cross-reference, a role it
  // does not know) it draws as the raw label, with a warning title.
  const unresolved = [...panel.querySelectorAll(".jp-MarkdownCell .myst [title]")]
    .filter((e) => /not found|unknown|error/i.test(e.title))
    .map((e) => `${e.title}: ${e.textContent.trim().slice(0, 60)}`);
  return {cells: cells.length, prompts, texts, codeSpans, errors, stray, editing, unresolved,
          busy: prompts.some((p) => p.includes("*"))};
}"""

# The ipywidgets sliders in the notebook's outputs, with what each one's figure shows.
SLIDERS = r"""() => {
  const panel = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
  return [...panel.querySelectorAll(".widget-slider, .jupyter-widgets.widget-hslider")].map((s, i) => {
    const area = s.closest(".jp-OutputArea") || s.parentElement;
    const image = area.querySelector("img");
    return {i, label: (s.querySelector(".widget-label")?.textContent || "").trim(),
            readout: (s.querySelector(".widget-readout")?.textContent || "").trim(),
            image: image ? image.src.length + ":" + image.src.slice(-40) : null};
  });
}"""


# The visible notebook's kernel has nothing left to run (its toolbar's indicator).
KERNEL_IDLE = """() => {
  const indicator = document.querySelector(
    ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator");
  return indicator !== null && indicator.dataset.status === "idle";
}"""


@dataclass
class ChapterResult:
    name: str
    opened_as_notebook: bool = False
    run_all_s: float | None = None
    errors: list[str] = field(default_factory=list)
    raw_myst: list[str] = field(default_factory=list)
    unevaluated: list[str] = field(default_factory=list)
    stray_outputs: list[str] = field(default_factory=list)
    sliders: list[dict] = field(
        default_factory=list
    )  # label, readout, redrawn, seconds
    changed_on_save: str = ""

    def problems(self) -> list[str]:
        found = []
        if not self.opened_as_notebook:
            found.append("a double click did not open it as a notebook")
        if self.run_all_s is None:
            found.append("Run All did not finish")
        found += [f"error output: {e}" for e in self.errors]
        found += [f"raw MyST in rendered Markdown: {r}" for r in self.raw_myst]
        found += [f"an {{eval}} not evaluated: {u}" for u in self.unevaluated]
        found += [f"stray output under a widget: {s}" for s in self.stray_outputs]
        for s in self.sliders:
            if not s["redrawn"]:
                found.append(f"slider {s['label']!r} did not redraw its figure")
            if (
                re.fullmatch(r"\d+", s["readout_before"] or "")
                and "index" in s["label"].lower()
            ):
                found.append(f"slider {s['label']!r} shows an index")
        if self.changed_on_save:
            found.append(f"saving changed the file:\n{self.changed_on_save}")
        return [f"{self.name}: {p}" for p in found]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """The README's `.venv/bin/jupyter lab notebooks/`, run from the repository root,
    with settings and workspaces in a temporary folder (not the reader's home)."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="minsd-lab-"))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Lab":
        settings = self.home / "settings"
        # A reader's own settings stay theirs; here, no news pop-up over the page.
        notification = settings / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false"})
        )
        # Every cell in the page at once (JupyterLab renders only the cells in view
        # by default), so that what the reader would scroll to can be measured.
        notebook = settings / "@jupyterlab" / "notebook-extension"
        notebook.mkdir(parents=True)
        (notebook / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"})
        )
        env = {
            **os.environ,
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.home / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("MINSD_WEIGHTS", None)
        jupyter = Path(sys.executable).parent / "jupyter"
        command = [str(jupyter), "lab", "notebooks/", "--no-browser"]
        command += [
            f"--port={self.port}",
            "--ServerApp.token=",
            "--ServerApp.password=",
        ]
        command += ["--ServerApp.disable_check_xsrf=True"]
        if os.geteuid() == 0:
            command.append("--allow-root")  # these machines run as root; readers not
        self.log = open(self.home / "lab.log", "w")
        self.process = subprocess.Popen(
            command, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/status", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"JupyterLab did not start: {(self.home / 'lab.log')}")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def shut_down_kernels(self) -> None:
        sessions = json.load(urllib.request.urlopen(f"{self.url}/api/sessions"))
        for session in sessions:
            request = urllib.request.Request(
                f"{self.url}/api/sessions/{session['id']}", method="DELETE"
            )
            urllib.request.urlopen(request)

    def read_chapter(self, page, chapter: Path, shots: Path | None) -> ChapterResult:
        """Open chapter by a double click, Run All, move every slider, save, close."""
        result = ChapterResult(chapter.stem)
        before = chapter.read_bytes()
        # a fresh workspace: no notebook of an earlier chapter still open
        page.goto(f"{self.url}/lab?reset", wait_until="load")
        item = page.locator(".jp-DirListing-item", has_text=chapter.name).first
        item.wait_for(timeout=60_000)
        item.dblclick()
        try:
            page.wait_for_selector(
                ".jp-NotebookPanel .jp-Cell", state="attached", timeout=60_000
            )
            result.opened_as_notebook = True
        except Exception:
            if shots:
                page.screenshot(path=str(shots / f"{chapter.stem}_lab_open.png"))
            return result
        # The kernel started and idle (on a busy machine this takes a while), then the
        # widgets manager ready.
        page.wait_for_function(KERNEL_IDLE, timeout=RUN_ALL_TIMEOUT_S * 1000)
        page.wait_for_timeout(2000)
        start = time.monotonic()
        self.run_all(page)
        state, idle_since = None, None
        deadline = start + RUN_ALL_TIMEOUT_S
        while time.monotonic() < deadline:
            page.wait_for_timeout(1000)
            state = page.evaluate(NOTEBOOK_STATE)
            if (
                state
                and not state["busy"]
                and all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"])
            ):
                result.run_all_s = round(time.monotonic() - start, 1)
                break
            # Run All stops at an error: nothing runs any more, cells are left unrun.
            if state and not state["busy"]:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 20:
                    break
            else:
                idle_since = None
        # The Markdown cells' {eval} values arrive from the kernel after their cells ran.
        names = set(re.findall(r"\{eval\}`(\w+)`", chapter.read_text()))
        for _ in range(30):
            page.wait_for_timeout(1000)
            state = page.evaluate(NOTEBOOK_STATE)
            if not names & set(state["codeSpans"]):
                break
        result.errors = state["errors"]
        result.stray_outputs = state["stray"]
        for text in state["texts"]:
            for match in RAW_MYST.finditer(text):
                line = text[max(0, match.start() - 40) : match.end() + 40]
                result.raw_myst.append(line.replace("\n", " "))
        result.raw_myst += state["unresolved"]
        result.unevaluated = sorted(names & set(state["codeSpans"]))
        if shots:
            page.screenshot(path=str(shots / f"{chapter.stem}_lab_top.png"))
        result.sliders = self.move_sliders(page, shots, chapter.stem)
        # Save as a reader would; the file must come back unchanged.
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(
            position={"x": 5, "y": 5}
        )
        page.keyboard.press("Escape")
        page.keyboard.press("Control+s")
        page.wait_for_timeout(2500)
        after = chapter.read_bytes()
        if after != before:
            import difflib

            diff = difflib.unified_diff(
                before.decode().splitlines(), after.decode().splitlines(), lineterm=""
            )
            result.changed_on_save = "\n".join(list(diff)[:40])
            chapter.write_bytes(before)  # leave the reader's file as it was
        self.shut_down_kernels()
        return result

    def run_all(self, page, tries: int = 3) -> None:
        """Run > Run All Cells, as a reader does; again if no cell has started after
        30 s (a click that a busy page missed)."""
        for _ in range(tries):
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                prompts = page.evaluate(NOTEBOOK_STATE)["prompts"]
                if any(re.fullmatch(r"\[(\*|\d+)\]:", p) for p in prompts):
                    return
                page.wait_for_timeout(500)
            page.keyboard.press("Escape")  # a menu left open

    def move_sliders(self, page, shots: Path | None, stem: str) -> list[dict]:
        moved = []
        sliders = page.evaluate(SLIDERS)
        for s in sliders:
            slider = page.locator(
                ".widget-slider, .jupyter-widgets.widget-hslider"
            ).nth(s["i"])
            slider.scroll_into_view_if_needed()
            handle = slider.locator(".noUi-handle, .ui-slider-handle").first
            # The figure as it is once the kernel has drawn every earlier move: a slider
            # that shares its figure with the one before must redraw it again.
            page.wait_for_function(KERNEL_IDLE, timeout=MOVE_TIMEOUT_S * 1000)
            page.wait_for_timeout(500)
            image = page.evaluate(SLIDERS)[s["i"]]["image"]
            start = time.monotonic()
            handle.focus()
            # One step right, or left from the last value
            key = "ArrowRight"
            before = s["readout"]
            page.keyboard.press(key)
            page.wait_for_timeout(300)
            now = page.evaluate(SLIDERS)[s["i"]]
            if now["readout"] == before:
                key = "ArrowLeft"
                page.keyboard.press(key)
            redrawn, seconds = False, None
            deadline = start + MOVE_TIMEOUT_S
            while time.monotonic() < deadline:
                now = page.evaluate(SLIDERS)[s["i"]]
                if now["image"] and now["image"] != image:
                    redrawn, seconds = True, round(time.monotonic() - start, 2)
                    break
                page.wait_for_timeout(200)
            moved.append(
                {
                    "label": s["label"],
                    "readout_before": before,
                    "readout_after": now["readout"],
                    "redrawn": redrawn,
                    "seconds": seconds,
                }
            )
        if shots and sliders:
            page.wait_for_function(KERNEL_IDLE, timeout=MOVE_TIMEOUT_S * 1000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / f"{stem}_lab_slider.png"))
        return moved


def chromium(playwright):
    if CHROMIUM is None:
        raise RuntimeError("no Chromium: install it (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def main() -> None:
    import argparse

    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("chapters", nargs="+", help="chapter numbers, e.g. 02 07")
    parser.add_argument("--shots", default="/tmp/lab_shots")
    args = parser.parse_args()
    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    chapters = [
        sorted((ROOT / "notebooks").glob(f"{int(n):02d}_*.md"))[0]
        for n in args.chapters
    ]
    with Lab() as lab, sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for chapter in chapters:
            result = lab.read_chapter(page, chapter, shots)
            print(json.dumps(result.__dict__, indent=1)[:4000])
            print("\n".join(result.problems()) or f"{chapter.stem}: no problems")
        browser.close()
    print(f"screenshots in {shots}")


if __name__ == "__main__":
    main()
