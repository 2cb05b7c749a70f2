"""A PDF's text layer, extracted in a child process that is killed at a deadline.

A PDF can be built so that pypdf spends hours on it: a few kilobytes of pages that all share one huge
compressed content stream. One page's extract_text can itself take many seconds, so checking the clock
between pages can't bound it; a child process can be killed whatever it is doing. The child also checks
the page count before extracting anything and stops once it has more characters than the caller allows.

`python -m tuning.qa.pdf_text FILE [--max-pages N] [--max-chars N]` prints a PdfText as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the child runs from here, so `-m tuning.qa.pdf_text` imports


@dataclass
class PdfText:
    """What the child found: the text, or why there is none (over a limit, unreadable, out of time)."""

    text: str = ""
    pages: int | None = None  # set when the page count is over the limit
    chars: int | None = None  # set when the text is over the limit; the characters extracted by then
    error: str = ""  # the PDF reader's complaint, or how the child died
    timed_out: bool = False


def extract_pdf_text(path: Path, max_pages: int | None, max_chars: int | None, seconds: float | None) -> PdfText:
    """Run the extraction in a child; kill it after `seconds` (None: no deadline)."""
    command = [sys.executable, "-m", "tuning.qa.pdf_text", str(Path(path).resolve())]
    command += ["--max-pages", str(max_pages)] if max_pages is not None else []
    command += ["--max-chars", str(max_chars)] if max_chars is not None else []
    try:
        # stderr is dropped: a damaged PDF can make pypdf log a warning per operator, megabytes of them
        done = subprocess.run(command, cwd=PACKAGE_PARENT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=seconds, check=False)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return PdfText(timed_out=True)
    try:
        return PdfText(**json.loads(done.stdout))
    except (ValueError, TypeError):
        return PdfText(error=f"the PDF reader stopped with exit code {done.returncode}")


def _extract(path: str, max_pages: int | None, max_chars: int | None) -> PdfText:
    """In the child: the page count first, then page by page until done or over max_chars."""
    try:
        from pypdf import PdfReader
    except ImportError:  # pragma: no cover - pypdf is in requirements.txt
        return PdfText(error="reading PDFs needs pypdf: `pip install pypdf`")
    # Anything pypdf raises means this PDF can't be read (PyPdfError, but also KeyError, RecursionError, ...
    # from damaged files); the child exists to report that, so it catches everything.
    try:
        pages = PdfReader(path).pages
        if max_pages is not None and len(pages) > max_pages:
            return PdfText(pages=len(pages))
        texts, total = [], 0
        for page in pages:
            text = (page.extract_text() or "").strip()
            total += len(text)
            if max_chars is not None and total > max_chars:
                return PdfText(chars=total)
            texts.append(text)
    except Exception as exc:  # noqa: BLE001 - see above
        return PdfText(error=f"{type(exc).__name__}: {exc}")
    return PdfText(text="\n\n".join(t for t in texts if t))


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: print the result as one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m tuning.qa.pdf_text", description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--max-pages", type=int)
    parser.add_argument("--max-chars", type=int)
    args = parser.parse_args(argv)
    json.dump(asdict(_extract(args.path, args.max_pages, args.max_chars)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
