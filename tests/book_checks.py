"""What a reader sees on a page of the book, measured in Chromium: the checks that
tests/test_book.py runs on every page, kept here so that one chapter's page can be
checked alone while it is written (`page_report`).

Every function takes a Playwright page already loaded and returns a list of problems,
one line each, plus, for the teaching checks, the numbers the closing notes quote.
"""

# A visible code block is at most this many lines (minsd.book.LISTING_LINES).
MAX_LISTING_LINES = 15
# The first figure of a chapter is at most this far below its title, at 1280 x 900.
MAX_FIRST_FIGURE_PX = 1400
# Every control of a player or a live widget is at least this tall, for a finger.
MIN_CONTROL_PX = 32

# Shared by the scripts below: what is visible, what is a figure.
_HELPERS = r"""
  const main = document.querySelector("main") || document.body;
  const article = main.querySelector("article") || main;
  const clip = (text) => (text || "").replace(/\s+/g, " ").trim().slice(0, 70);
  // Rendered and not hidden: a closed <details> or a collapsed toggle renders nothing.
  const visible = (e) => {
    if (!e.getClientRects().length) return false;
    const closed = e.closest("details:not([open])");  // its content is not shown
    if (closed && !closed.querySelector(":scope > summary")?.contains(e)) return false;
    const style = getComputedStyle(e);
    if (style.visibility === "hidden" || style.display === "none") return false;
    for (let a = e; a && a !== document.body; a = a.parentElement) {
      if (a.classList.contains("toggle-hidden")) return false;
      if (getComputedStyle(a).visibility === "hidden") return false;
    }
    return true;
  };
  // Figures: images (outputs, Markdown images, player frames), canvases of the live
  // widgets, and the live widgets themselves.
  const FIGURES = "img, canvas, div.animation, .minsd-live";
  const top = (e) => e.getBoundingClientRect().top + window.scrollY;
"""

# Listings, numbers, pictures first, plumbing, alt text: at 1280 x 900.
TEACHING = (
    r"""() => {"""
    + _HELPERS
    + r"""
  const problems = [];
  const stats = {longest_listing: 0, first_figure_px: null, numbers: 0};
  // 1. Listings are a dozen lines: no visible code block (a code cell's input, a
  // listing, a code fence) longer than the limit. Printed outputs are not listings.
  for (const pre of article.querySelectorAll("div.cell_input pre, div.highlight pre")) {
    if (!visible(pre)) continue;
    if (pre.closest("div.cell_output") && !pre.closest("[class*='highlight-python'], [class*='highlight-ipython']")) continue;
    const lines = pre.textContent.replace(/\n+$/, "").split("\n").length;
    stats.longest_listing = Math.max(stats.longest_listing, lines);
    if (lines > %(max_lines)d) problems.push(`a visible listing of ${lines} lines: ${clip(pre.textContent)}`);
  }
  // 2. Numbers read as text: computed values ({eval}) in the prose's own weight.
  for (const number of article.querySelectorAll("p span.output, li span.output, td span.output, span.pasted-text")) {
    stats.numbers += 1;
    const weight = Number(getComputedStyle(number).fontWeight) || 400;
    if (weight >= 600 || number.closest("strong, b")) problems.push(`a bold computed number: ${clip(number.parentElement.textContent)}`);
  }
  // 3. Pictures first: a figure near the title ...
  const title = article.querySelector("h1");
  const figures = [...article.querySelectorAll(FIGURES)].filter(visible);
  if (title && figures.length) {
    stats.first_figure_px = Math.round(top(figures[0]) - top(title));
    if (stats.first_figure_px > %(max_first)d) problems.push(`the first figure is ${stats.first_figure_px} px below the title (at most %(max_first)d)`);
  } else if (title) {
    problems.push("no visible figure");
  }
  // ... and every section with a figure opens with it, or with one paragraph (or
  // list) saying what to see in it: nothing else visible comes first. Collapsed
  // blocks and hidden code do not count.
  const BLOCKS = "p, ul, ol, pre, mjx-container[display='true'], table, div.admonition:not(.dropdown)";
  for (const section of article.querySelectorAll("section")) {
    const heading = section.querySelector(":scope > h2");
    if (!heading || /Summary|Exercises|Solutions/i.test(heading.textContent)) continue;
    const first = [...section.querySelectorAll(FIGURES)].find(visible);
    if (!first) continue;
    const before = [...section.querySelectorAll(BLOCKS)].filter((e) =>
      visible(e) && !e.contains(first) && !first.contains(e) && !e.closest("summary")
      && !e.matches(".admonition-title") && !e.closest("details.hide > summary, .toggle-details__summary")
      && (e.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING));
    const outermost = before.filter((e) => !before.some((o) => o !== e && o.contains(e)));
    const text = outermost.filter((e) => e.matches("p, ul, ol"));
    const other = outermost.filter((e) => !e.matches("p, ul, ol"));
    if (text.length > 1 || other.length) {
      const name = clip(heading.textContent).replace(/#$/, "");
      problems.push(`section "${name}" opens with ${text.length} paragraphs and [${other.map((e) => e.tagName.toLowerCase()).join(", ")}] before its first figure`);
    }
  }
  // 5. No plumbing in sight.
  for (const code of article.querySelectorAll("div.cell_input pre")) {
    if (visible(code) && /\bglue\(|myst_nb/.test(code.textContent)) problems.push(`visible glue plumbing: ${clip(code.textContent)}`);
  }
  // 6. Figures for every reader: alt text that says what the image shows.
  for (const image of article.querySelectorAll("img")) {
    const alt = (image.getAttribute("alt") || "").trim();
    if (alt.split(/\s+/).length < 4 || /\.(png|svg|jpe?g|gif)$|^[0-9a-f]{16,}/i.test(alt)) {
      problems.push(`an image without a sentence of alt text: "${clip(alt || image.getAttribute("src"))}"`);
    }
  }
  return {problems, stats};
}"""
) % {"max_lines": MAX_LISTING_LINES, "max_first": MAX_FIRST_FIGURE_PX}

# The phone: nothing wider than the column, controls a finger can hit, nothing on top
# of a widget.
PHONE = (
    r"""() => {"""
    + _HELPERS
    + r"""
  const problems = [];
  const column = article.getBoundingClientRect();
  for (const box of article.querySelectorAll(FIGURES + ", figure, div.cell_output")) {
    if (!visible(box)) continue;
    const r = box.getBoundingClientRect();
    const scrolls = box.matches("div.cell_output") ? false : box.scrollWidth > box.clientWidth + 1;
    if (r.right > column.right + 1 || r.left < column.left - 1 || scrolls) {
      problems.push(`${box.tagName.toLowerCase()}.${[...box.classList].join(".")} sticks out of the column by ${Math.round(Math.max(r.right - column.right, column.left - r.left, box.scrollWidth - box.clientWidth))} px`);
    }
  }
  const controls = "div.animation input, div.animation button, div.animation select, "
    + ".minsd-live input, .minsd-live button, .minsd-live select, .minsd-live .minsd-swatch";
  for (const control of article.querySelectorAll(controls)) {
    if (!visible(control) || control.type === "hidden") continue;
    if (control.type === "radio" || control.type === "checkbox") continue;
    const height = control.getBoundingClientRect().height;
    if (height < %(min_control)d) problems.push(`a ${control.tagName.toLowerCase()}${control.type ? "[" + control.type + "]" : ""} ${Math.round(height)} px tall (at least %(min_control)d)`);
  }
  return {problems};
}"""
) % {"min_control": MIN_CONTROL_PX}

# Nothing covers a widget: scrolled into view, the point at its centre belongs to it.
COVERED = r"""(element) => {
  element.scrollIntoView({block: "start"});
  const r = element.getBoundingClientRect();
  const x = r.left + r.width / 2, y = Math.max(r.top, 0) + Math.min(r.height / 2, 100);
  const hit = document.elementFromPoint(x, y);
  return hit && (element === hit || element.contains(hit)) ? null
    : `covered by ${hit ? hit.tagName.toLowerCase() + "#" + hit.id + "." + [...hit.classList].join(".") : "nothing"}`;
}"""

# A live widget on load, before any Run: it shows a first result (a drawn canvas or a
# decoded image), not an empty box.
LIVE_FIRST_RESULT = r"""(widget) => {
  const drawn = (c) => {
    if (!c.width || !c.height) return false;
    try {
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (let i = 4; i < data.length; i += 4) {
        if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2] || data[i + 3] !== data[3]) return true;
      }
      return data[3] !== 0 && false;
    } catch (e) { return true; }  // a tainted canvas has been drawn on
  };
  const canvases = [...widget.querySelectorAll("canvas")].filter((c) => c.getClientRects().length);
  const images = [...widget.querySelectorAll("img")].filter((i) => i.getClientRects().length && i.naturalWidth > 0);
  const empty = canvases.filter((c) => !drawn(c));
  return {canvases: canvases.length, images: images.length, empty: empty.length};
}"""


def teaching_problems(page, name: str) -> tuple[list[str], dict]:
    """Items 1, 2, 3, 5 and 6 of the page rules, at the page's current size."""
    result = page.evaluate(TEACHING)
    return [f"{name}: {p}" for p in result["problems"]], result["stats"]


def phone_problems(page, name: str) -> list[str]:
    """Item 7: at a phone's width, nothing sticks out, controls are tall enough, and
    nothing covers a live widget or a player."""
    problems = [f"{name} (phone): {p}" for p in page.evaluate(PHONE)["problems"]]
    for widget in page.locator("div.animation, .minsd-live").all():
        covered = widget.evaluate(COVERED)
        if covered:
            problems.append(f"{name} (phone): a widget is {covered}")
    return problems


def live_widget_problems(page, name: str) -> list[str]:
    """Item 8: every live widget shows a first result on load."""
    problems = []
    for i, widget in enumerate(page.locator(".minsd-live").all()):
        seen = widget.evaluate(LIVE_FIRST_RESULT)
        if not (seen["canvases"] or seen["images"]) or seen["empty"]:
            problems.append(f"{name}: live widget {i} opens empty on load ({seen})")
    return problems
