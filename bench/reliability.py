"""Re-measure every reliability figure (issue 8) and write them to docs/RELIABILITY.md.

Each part lives in its own script, runnable alone: bad input (bench/reliability_input.py), faults
(bench/reliability_faults.py), isolation and secrets (bench/reliability_isolation.py), concurrent
visitors (bench/reliability_load.py), hostile visitors (bench/reliability_hostile.py). Parts run one after
another, never side by side: two at once on a small machine would measure each other.

    python bench/reliability.py [--only input,faults,isolation,load,hostile] [--out docs/RELIABILITY.md]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench")]

from tuning.config import write_text_atomic  # noqa: E402

PARTS = {
    "input": ("Bad input", "reliability_input"),
    "faults": ("Faults", "reliability_faults"),
    "isolation": ("Isolation and secrets", "reliability_isolation"),
    "load": ("Concurrent visitors", "reliability_load"),
    "hostile": ("Hostile visitors", "reliability_hostile"),
}
HEADER = """# Reliability: figures

Written by `python bench/reliability.py`, which re-measures every figure below; do not edit by hand.
Measured {date} on {machine}.

What each part does is described at the top of its script in `bench/`; the tests in `tests/`
check the same properties on every CI run (with fewer cases where a part is slow).
"""


def measure_part(key: str) -> tuple[list[tuple[str, str]], float]:
    """One part's figures and the seconds it took (a part that crashes is reported, not hidden)."""
    started = time.monotonic()
    try:
        figures = importlib.import_module(PARTS[key][1]).measure()
    except Exception as error:  # noqa: BLE001 -- the document must say a part could not be measured, and why
        figures = [("could not be measured", f"{type(error).__name__}: {error}")]
    return figures, time.monotonic() - started


def format_section(title: str, script: str, figures: list[tuple[str, str]], seconds: float) -> str:
    """A markdown section: a two-column table of the part's figures."""
    rows = "\n".join(f"| {name} | {str(value).replace('|', '/')} |" for name, value in figures)
    return f"## {title}\n\n`bench/{script}.py`, {seconds:.0f} s.\n\n| figure | value |\n|---|---|\n{rows}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "RELIABILITY.md")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    sections = [HEADER.format(date=time.strftime("%Y-%m-%d"), machine=machine)]
    for key in args.only.split(","):
        title, script = PARTS[key]
        print(f"measuring {title}...", flush=True)
        figures, seconds = measure_part(key)
        sections.append(format_section(title, script, figures, seconds))
        print(sections[-1], flush=True)
    write_text_atomic(args.out, "\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
