"""How long the book takes to build, per chapter, on a quiet machine and on a busy one.

    python benchmarks/book.py [--busy 2] [--only quiet|loaded] [--out
    benchmarks/results/book.md]

Runs the README's strict build (`jupyter-book build . --all -W -n --keep-going`, every
notebook executed) into a temporary folder twice: once as it is, once beside `--busy`
processes that each spin one core (`python -c "while True: pass"`) for the whole build,
as on a user's busy laptop. Prints each chapter's execution time (myst-nb's own
measurement) and the whole build's.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_name, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
EXECUTED = re.compile(r"notebooks/(\S+)\.md: Executed notebook in ([\d.]+) seconds")


def build(busy: int) -> dict:
    """One strict build beside `busy` spinning processes: chapter -> seconds, plus the
    total and the status."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(busy)
    ]
    try:
        with tempfile.TemporaryDirectory() as out:
            command = [
                str(JUPYTER_BOOK),
                "build",
                str(ROOT),
                "--path-output",
                out,
                "--all",
                "-W",
                "-n",
                "--keep-going",
            ]
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
    finally:
        for spinner in spinners:
            spinner.kill()
    log = result.stdout + result.stderr
    chapters = {name: float(s) for name, s in EXECUTED.findall(log)}
    if result.returncode:
        print(log[-3000:], file=sys.stderr)
    return {"chapters": chapters, "total": seconds, "status": result.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--busy", type=int, default=2, help="spinning processes beside the loaded build"
    )
    parser.add_argument(
        "--only",
        choices=("quiet", "loaded"),
        default=None,
        help="run one of the two builds",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the report (markdown) here"
    )
    args = parser.parse_args()

    runs = {}
    for label, busy in (("quiet", 0), ("loaded", args.busy)):
        if args.only in (None, label):
            runs[label] = build(busy)
            print(
                f"{label}: {runs[label]['total']:.0f} s, exit status {runs[label]['status']}",
                file=sys.stderr,
            )

    chapters = sorted({name for run in runs.values() for name in run["chapters"]})
    header = ["chapter", *(f"{label} (s)" for label in runs)]
    rows = [
        [
            name,
            *(
                f"{run['chapters'].get(name, float('nan')):.1f}"
                for run in runs.values()
            ),
        ]
        for name in chapters
    ]
    rows.append(
        ["whole build (wall clock)", *(f"{run['total']:.0f}" for run in runs.values())]
    )
    rows.append(["exit status", *(str(run["status"]) for run in runs.values())])
    report = "\n".join(
        [
            f"Strict book build (`jupyter-book build . --all -W -n --keep-going`) on {cpu_name()}, "
            f"{os.cpu_count()} CPUs; loaded = beside {args.busy} processes spinning a core each.",
            "",
            table(rows, header),
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    sys.exit(max(run["status"] for run in runs.values()))


if __name__ == "__main__":
    main()
