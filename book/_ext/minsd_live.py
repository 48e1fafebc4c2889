"""A Sphinx extension for the book's live widgets (registered in _config.yml).

When an html build starts, it exports minsd's default model for the reader's browser
(`minsd.live.export`: ONNX files checked against PyTorch, where a difference above 1e-4
fails the build, and the page's data) into the built book's `_live/` folder, beside
ONNX Runtime Web (from the npm package in book/live/node_modules, installed by
.ci/setup) and the widgets' scripts (book/live/*.js). Nothing generated lands in
git: a later build reuses the export, kept in the source's _build/.minsd_live/, while
the model's files, minsd's code, the runtime and the versions of torch, onnx and
onnxruntime are unchanged.

Every page with a `minsd-live` block gets the widgets' scripts and stylesheet, plus a
few settings (the prompt vocabulary, the samplers and spacings, how much the first Run
loads, and whether the rest of the book was drawn with other weights) and, for each
widget on the page, the first result it opens on (`minsd.live.first_results`); the
runtime and the model load only when a reader runs something new.
"""

import hashlib
import html
import json
import os
import re
import shutil
import time
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

LIVE = Path(__file__).resolve().parents[1] / "live"  # book/live: the JavaScript
DIST = LIVE / "node_modules" / "onnxruntime-web" / "dist"
FOLDER = "_live"  # in the built book; not _static, whose *.js JB loads on every page
# In the order a page loads them: each adds its part to `minsd`.
SCRIPTS = (
    "denoiser.js",  # the mirror of minsd: D(x; sigma)
    "scheduler.js",  # schedules and samplers
    "toy.js",  # chapter 2's mixture
    "pipeline.js",  # generate
    "runtime.js",  # ONNX Runtime Web and the model, on demand
    "ui.js",  # the widgets' parts
    "tour.js",  # guided tours through a widget
    "loop.js",  # one file per widget
    "img2img.js",
    "toy_widget.js",
    "compare.js",
    "attention.js",
    "widgets.js",  # mounts every widget of the page
)
STAMP = "export.json"  # what the export was made from, and its parity numbers
CACHE = ".minsd_live"  # in the source's _build/: exports for later builds
SETTINGS: dict = {}  # for the pages: see page_settings
FIRST: dict = {}  # per widget: the first result it shows (minsd.live.first_results)


def export(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    start = time.perf_counter()  # the whole cost, from the import of torch on
    from minsd import live

    key = source_key(live)
    # The last export, kept under the source's _build/ (git-ignored) for later builds,
    # whatever their output folder.
    cache = Path(app.srcdir) / "_build" / CACHE / key[:16]
    if (cache / STAMP).is_file():
        parity = json.loads((cache / STAMP).read_text())["parity"]
        logger.info(f"minsd live: reusing the export in {cache}")
    else:
        # Written beside, then renamed: builds running at once never see half a folder.
        partial = cache.with_name(f"{cache.name}.{os.getpid()}")
        try:
            parity = live.export(partial)  # raises live.ParityError: the build fails
            live.write_runtime(DIST, partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        stamp = {"key": key, "parity": parity, "seconds": seconds}
        (partial / STAMP).write_text(json.dumps(stamp))
        for old in cache.parent.iterdir():  # earlier exports: out of date
            if old != partial and "." not in old.name:
                shutil.rmtree(old, ignore_errors=True)
        try:
            partial.rename(cache)
        except OSError:  # another build finished the same export first
            shutil.rmtree(partial)
        logger.info(
            f"minsd live: exported the default model in {seconds:.1f} s; "
            "max |onnxruntime - PyTorch|: "
            + ", ".join(f"{name} {value:.2g}" for name, value in parity.items())
        )
    out = Path(app.outdir) / FOLDER
    internal = shutil.ignore_patterns(STAMP, live.FIRST_RESULTS)  # not for pages
    shutil.copytree(cache, out, dirs_exist_ok=True, ignore=internal)
    for name in (*SCRIPTS, "live.css"):
        shutil.copyfile(LIVE / name, out / name)
    SETTINGS.update(page_settings(live, out))
    FIRST.update(json.loads((cache / live.FIRST_RESULTS).read_text()))


def source_key(live) -> str:
    """A digest of everything the export depends on: the model's files, minsd's code,
    the runtime, and the versions of torch, onnx and onnxruntime."""
    import onnx
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    package = Path(live.__file__).parent
    files = sorted(p for p in live.DEFAULT_MODEL.rglob("*") if p.is_file())
    files += sorted(package.glob("*.py"))
    files += [DIST / name for name in live.RUNTIME]
    for path in files:
        digest.update(str(path.name).encode())
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    versions = (torch.__version__, onnx.__version__, onnxruntime.__version__)
    digest.update(" ".join(versions).encode())
    return digest.hexdigest()


def page_settings(live, out: Path) -> dict:
    """What the widgets need before the model loads (globalThis.minsdLiveConfig)."""
    from minsd.dataset import BACKGROUNDS, COLOURS, SHAPES
    from minsd.loading import WEIGHTS_ENV

    on_run = [*live.NETWORKS, live.DATA, *live.RUNTIME]
    download = sum((out / f"{name}.js").stat().st_size for name in on_run)
    data = live.read_script(out / f"{live.DATA}.js")
    return {
        "vocabulary": {
            "colours": COLOURS,
            "shapes": SHAPES,
            "backgrounds": BACKGROUNDS,
        },
        "samplers": live.PAGE_SAMPLERS,
        "spacings": live.PAGE_SPACINGS,
        # SD's training schedule, for the schedule the page draws before the model
        # has loaded
        "schedule": {
            name: data[name]
            for name in ("beta_start", "beta_end", "num_train_timesteps")
        },
        "num_seeds": data["num_seeds"],
        "image_size": data["image_size"],
        "latent_size": data["latent_shape"][-1],
        "download_mb": round(download / 1e6, 1),
        # the weights the rest of the book was drawn with, if not the default model
        "other_weights": os.environ.get(WEIGHTS_ENV) or None,
    }


def add_widgets(
    app: Sphinx, pagename: str, templatename, context: dict, doctree
) -> None:
    """Give a page with a live widget its scripts (after its content)."""
    if "minsd-live" not in context.get("body", ""):
        return
    pathto = context["pathto"]
    widgets = sorted(set(re.findall(r'data-widget="(\w+)"', context["body"])))
    first = {name: FIRST[name] for name in widgets if name in FIRST}
    settings = {**SETTINGS, "first": first}
    settings = json.dumps(settings).replace("<", "\\u003c")  # no "</script>" inside
    tags = [
        f'<link rel="stylesheet" href="{pathto(f"{FOLDER}/live.css", 1)}">',
        f"<script>globalThis.minsdLiveConfig = {settings};</script>",
        *(
            f'<script src="{html.escape(pathto(f"{FOLDER}/{name}", 1))}"></script>'
            for name in SCRIPTS
        ),
    ]
    context["body"] += "\n".join(tags)


def pages_to_rewrite(app: Sphinx, env) -> list[str]:
    """The pages with a widget, when what add_widgets writes into them (scripts,
    settings, first results) changed since the last build: Sphinx rewrites only the
    pages whose source changed, and would keep their old scripts and pictures."""
    text = json.dumps([SCRIPTS, SETTINGS, FIRST], sort_keys=True).encode()
    key = hashlib.sha256(text).hexdigest()
    if getattr(env, "minsd_live_key", None) == key:
        return []
    env.minsd_live_key = key
    return [
        name
        for name in sorted(env.found_docs)
        if "minsd-live" in Path(env.doc2path(name)).read_text(errors="replace")
    ]


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", export)
    app.connect("env-get-updated", pages_to_rewrite)
    app.connect("html-page-context", add_widgets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
