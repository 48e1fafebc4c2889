"""The book, built strictly (every notebook executed) and opened page by page in
headless Chromium.

The one place where the chapters are executed. Asserts that the build succeeds with no
warnings, and that every page reads clean in a 1280 px wide window, as a reader sees it
(solutions collapsed): every chapter at most 14,000 px tall (one sitting); nothing wider
than the text column (listings, code cells, outputs, tables, display equations, figures);
no unrendered markup outside code ({eq}, {doc}, $\\..., LaTeX commands); no MathJax
error; no output line ending in ": False" (a claim the page makes should be asserted, not
printed); no local resource fails to load, every figure is drawn, each player's "next
frame" button changes its frame, no Markdown table is shown as raw pipe text, no output
shows a traceback, an error or a warning, no link text shows raw LaTeX, the sidebar
numbers the chapters as their files do, and every chapter's exercises have worked
solutions, collapsed until clicked.

And that the pages teach as the book's writing guide asks (tests/book_checks.py): no
visible listing longer than 15 lines, computed numbers in the prose's own weight, a
figure within 1,400 px of each chapter's title and at the head of every section that
has one, no glue plumbing in sight, alt text on every image, live widgets that open with
a picture; and, on a phone (390 x 844) and a tablet (820 x 1180), figures, players and
widgets within the column, controls at least 32 px tall and nothing covering a widget.
The book is built with MPLBACKEND=Agg in the environment, as on many servers, and every
figure must still be there.

Screenshots of every page (and each chapter on a phone) are kept in tests/output/book/
(not in git), with report.json: each chapter's longest visible listing, first figure
offset, computed numbers, height and phone problems.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from book_checks import (
    live_widget_problems,
    phone_problems,
    teaching_problems,
)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "tests" / "output" / "book"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_CHAPTER_HEIGHT = 14_000  # px at 1280 px wide: one sitting
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# What a reader would see as broken, measured in the page; returns one line per problem.
READING_PROBLEMS = r"""() => {
  const problems = [];
  const main = document.querySelector("main") || document.body;
  const clip = (text) => text.replace(/\s+/g, " ").trim().slice(0, 70);
  for (const p of main.querySelectorAll("p")) {  // a Markdown table rendered as text: | --- |
    if (/\|\s*:?-{3,}/.test(p.textContent)) problems.push(`raw Markdown table: ${clip(p.textContent)}`);
  }
  // Anything wider than the text column: it scrolls sideways, or sticks out of the column.
  const column = (main.querySelector("article") || main).getBoundingClientRect();
  const boxes = "pre, table, div.cell_output, div.highlight, img, div.animation, "
    + "mjx-container[display='true']";
  for (const box of main.querySelectorAll(boxes)) {
    const right = box.getBoundingClientRect().right;
    const scrolls = box.scrollWidth > box.clientWidth + 1;
    if (scrolls || right > column.right + 1) {
      const excess = Math.max(box.scrollWidth - box.clientWidth, Math.round(right - column.right));
      problems.push(`${box.tagName.toLowerCase()} wider than the column by ${excess} px: `
        + clip(box.textContent || box.getAttribute("src") || ""));
    }
  }
  // Markup a reader should never see: roles, raw TeX, outside code and rendered maths.
  const text = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  while (text.nextNode()) {
    const node = text.currentNode;
    if (node.parentElement.closest("pre, code, mjx-container, script, style, .MathJax")) continue;
    const raw = node.textContent.match(/\{(eq|doc|ref|numref|cite|cite:t|cite:p|math|glue:text|eval)\}|\$\\|\\(mathbf|mathrm|mathcal|boldsymbol|sigma|frac|sqrt|left|right|qquad|text|alpha|epsilon)\b/);
    if (raw) problems.push(`unrendered markup "${raw[0]}": ${clip(node.textContent)}`);
  }
  for (const error of main.querySelectorAll("mjx-merror")) {
    problems.push(`MathJax error: ${clip(error.getAttribute("data-mjx-error") || error.textContent)}`);
  }
  // A printed "...: False" is a claim the page checks and does not hold.
  for (const output of main.querySelectorAll("div.cell_output pre")) {
    for (const line of output.textContent.split("\n")) {
      if (/:\s*False\s*$/.test(line)) problems.push(`an output line ends in ": False": ${clip(line)}`);
    }
  }
  for (const output of main.querySelectorAll("div.cell_output")) {
    // a listing of the package's code (minsd.book.listing) is code, not a message
    const shown = output.cloneNode(true);
    shown.querySelectorAll("[class*='highlight-python']").forEach((e) => e.remove());
    const found = shown.textContent.match(/Traceback|KeyboardInterrupt|\b\w*(Error|Warning)\b|\{glue/);
    if (found) problems.push(`"${found[0]}" in an output: ${clip(output.textContent)}`);
  }
  if (main.textContent.includes("{glue")) problems.push("an unresolved {glue} role");
  for (const link of document.querySelectorAll("a")) {
    if (/\\[A-Za-z]|\$/.test(link.textContent)) problems.push(`raw LaTeX in a link text: ${clip(link.textContent)}`);
  }
  return problems;
}"""


# The worked solutions of a chapter's exercises: dropdown admonitions titled
# "Solution..." (collapsed by sphinx-togglebutton: class toggle-hidden, body hidden)
# and code cells tagged hide-cell whose source starts "# Solution to exercise" (a
# closed <details>). Returns counts, and how many of each a reader sees open.
SOLUTIONS = r"""() => {
  const main = document.querySelector("main") || document.body;
  const admonitions = [...main.querySelectorAll(".admonition.dropdown")]
    .filter(a => /^Solution/.test((a.querySelector(".admonition-title")?.textContent || "").trim()));
  const visible = (e) => getComputedStyle(e).visibility !== "hidden";
  const shown = admonitions.filter(a => !a.classList.contains("toggle-hidden")
    || [...a.querySelectorAll(":scope > .admonition-title ~ *")].some(visible));
  const cells = [...main.querySelectorAll("details.hide")]
    .filter(d => d.textContent.includes("# Solution to exercise"));
  const open = cells.filter(d => d.open).length;
  return {admonitions: admonitions.length, shown: shown.length, cells: cells.length, open: open};
}"""


def sidebar_problems(page) -> list[str]:
    """The sidebar numbers each chapter as its file is numbered: notebooks/02_euler is
    chapter 2."""
    links = page.eval_on_selector_all(
        "nav.bd-docs-nav a.reference.internal",
        "links => links.map(a => [a.getAttribute('href'), a.textContent])",
    )
    problems = []
    for href, text in links:
        number = re.search(r"(?:^|/)(\d\d)_[a-z_]+\.html", href)
        if number and not text.strip().startswith(f"{int(number.group(1))}. "):
            problems.append(f"sidebar shows {text.strip()!r} for {href}")
    return problems


def pages(book: Path) -> list[str]:
    files = re.findall(
        r"^(?:root:|\s*- file:) (\S+)", (ROOT / "_toc.yml").read_text(), flags=re.M
    )
    return [f"{f}.html" for f in files]


@pytest.mark.slow
def test_book_in_a_browser(built_book, book_server):
    if CHROMIUM is None:
        pytest.fail(
            "no Chromium: install it (apt-get install chromium), as .ci/setup does"
        )
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems, players_seen, solutions_seen = [], 0, 0
    report = {}  # per chapter: what the closing notes quote
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        failed = []
        page.on(
            "requestfailed",
            lambda r: failed.append(r.url) if r.url.startswith(book_server) else None,
        )
        page.on(
            "response",
            lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        # Nothing outside this machine: block remote requests instead of
        # waiting for them.
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(book_server)
                else route.abort()
            ),
        )
        for name in pages(built_book):
            failed.clear()
            page.goto(f"{book_server}/{name}", wait_until="load")
            page.wait_for_timeout(500)
            if failed:
                problems.append(f"{name}: failed to load {failed}")
            # Every image is present and decoded (naturalWidth > 0).
            broken = page.eval_on_selector_all(
                "img",
                "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))",
            )
            if broken:
                problems.append(f"{name}: broken images {broken}")
            if name.startswith("notebooks/") and page.locator("main img").count() == 0:
                problems.append(f"{name}: a chapter without a single figure")
            if name.startswith("notebooks/"):
                solutions = page.evaluate(SOLUTIONS)
                solutions_seen += solutions["admonitions"]
                if solutions["admonitions"] == 0:
                    problems.append(
                        f"{name}: exercises without a single worked solution"
                    )
                if solutions["shown"] or solutions["open"]:
                    problems.append(f"{name}: solutions open on arrival {solutions}")
            page.evaluate(
                "async () => { if (window.MathJax?.startup) await MathJax.startup.promise; }"
            )
            problems += [
                f"{name}: {problem}" for problem in page.evaluate(READING_PROBLEMS)
            ]
            problems += [f"{name}: {problem}" for problem in sidebar_problems(page)]
            height = page.evaluate("document.documentElement.scrollHeight")
            if name.startswith("notebooks/") and height > MAX_CHAPTER_HEIGHT:
                problems.append(
                    f"{name}: {height} px tall (at most {MAX_CHAPTER_HEIGHT})"
                )
            # Pictures first, listings a dozen lines, numbers as text, alt text, no
            # plumbing, live widgets that open with a picture (tests/book_checks.py).
            if name.startswith("notebooks/"):
                teaching, stats = teaching_problems(page, name)
                problems += teaching + live_widget_problems(page, name)
                report[name] = {**stats, "height": height}
            # Players (minsd.plots.player): each labels its slider, and after 'first
            # frame', 'next frame' changes the frame and its label.
            for player in page.locator("div.animation").all():
                players_seen += 1
                image = player.locator("img").first
                label = player.locator(".minsd-frame-label").first
                player.locator("button[title='First frame']").first.click()
                page.wait_for_timeout(100)
                before = image.get_attribute("src"), label.text_content()
                player.locator("button[title='Next frame']").first.click()
                page.wait_for_timeout(100)
                after = image.get_attribute("src"), label.text_content()
                if after[0] == before[0]:
                    problems.append(f"{name}: 'next frame' did not change the frame")
                if not after[1] or after[1] == before[1]:
                    problems.append(f"{name}: a player's slider has no frame labels")
            page.screenshot(
                path=str(
                    SCREENSHOTS
                    / (name.replace("/", "_").removesuffix(".html") + ".png")
                ),
                full_page=True,
            )
        # A phone (390 x 844) and a tablet (820 x 1180): figures, players and widgets
        # within the column, controls a finger can hit, nothing covering a widget.
        for width, height in [(390, 844), (820, 1180)]:
            small = browser.new_page(viewport={"width": width, "height": height})
            for name in pages(built_book):
                small.goto(f"{book_server}/{name}", wait_until="load")
                small.wait_for_timeout(300)
                found = phone_problems(small, f"{name} at {width} px")
                problems += found
                if name.startswith("notebooks/") and width == 390:
                    report[name]["phone_problems"] = len(found)
                    small.screenshot(
                        path=str(
                            SCREENSHOTS
                            / ("phone_" + name.replace("/", "_").removesuffix(".html"))
                        )
                        + ".png",
                        full_page=True,
                    )
            small.close()
        browser.close()
    (SCREENSHOTS / "report.json").write_text(json.dumps(report, indent=1))
    assert not problems, "\n".join(problems)
    assert players_seen >= 6  # the sliders of chapters 1-8, drawn in advance
    assert solutions_seen >= 3 * len(
        [p for p in pages(built_book) if p.startswith("notebooks/")]
    )


# The boxes the introduction's map must have, by what their links say.
MAP_BOXES = ["text encoder", "guidance", "denoiser", "UNet", "schedule", "Euler", "VAE"]


@pytest.mark.slow
def test_the_map_leads_to_every_chapter_and_widget(built_book, book_server):
    """Every box of the introduction's pipeline map (book/pipeline.svg, inline) links to
    a page of the book that exists; a live button lands on its widget; and the map has
    a box for each part of the pipeline."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{book_server}/book/intro.html", wait_until="load")
        links = page.eval_on_selector_all(
            "svg.minsd-map a",
            "as => as.map(a => [a.href.baseVal || a.getAttribute('href'), "
            "a.getAttribute('aria-label'), a.getAttribute('class')])",
        )
        labels = " ".join(label for _, label, _ in links)
        assert all(box in labels for box in MAP_BOXES), labels
        problems = []
        for href, label, kind in links:
            url = page.evaluate("h => new URL(h, location.href).href", href)
            response = page.goto(url, wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{label}: {href} does not load")
                continue
            fragment = url.partition("#")[2]
            if fragment:
                target = page.locator(f"[id='{fragment}']")
                if target.count() == 0:
                    problems.append(f"{label}: no #{fragment} on {href}")
                elif "live" in kind and "minsd-live" not in (
                    target.first.get_attribute("class") or ""
                ):
                    problems.append(f"{label}: #{fragment} is not a live widget")
            page.goto(f"{book_server}/book/intro.html", wait_until="load")
        browser.close()
    assert len(links) >= 13 and not problems, "\n".join(problems)
