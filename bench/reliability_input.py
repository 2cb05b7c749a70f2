"""Bad input, measured (issue 8): generated files through the data importer and generated replies through the QA
parser, the issue's hand cases, and the upload-limit messages.

`measure()` returns (figure, value) pairs for docs/RELIABILITY.md; run as a script it prints them.
The generated cases are the same on every machine (hypothesis derandomized), as in tests/data/test_fuzz_input.py.

    python bench/reliability_input.py [--cases 10000]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]  # run as a script from anywhere; the strategies live in tests/

from fuzz_inputs import CASES, HAND_CASES, check_import, run_importer_fuzz, run_parser_fuzz  # noqa: E402

from tuning.data.examples import DataError, load_examples  # noqa: E402
from tuning.data.files import MB, upload_limits  # noqa: E402

OVER_LIMIT_MB = 60  # a file just over the 50 MB default; sparse, so it costs no disk


def _fuzz_figures(label: str, outcomes, failures, seconds: float, kinds: list[str]) -> list[tuple[str, str]]:
    tried = sum(outcomes.values())
    unhandled = sum(n for key, n in outcomes.items() if key.startswith("unhandled"))
    figures = [(f"{label}: cases tried", f"{tried:,}")]
    figures += [(f"{label}: {kind}", f"{outcomes[kind]:,}") for kind in kinds]
    figures += [(f"{label}: unhandled exceptions", f"{unhandled:,}"),
                (f"{label}: outcomes breaking a rule", f"{outcomes['broke a rule']:,}"),
                (f"{label}: seconds", f"{seconds:.1f}")]
    figures += [(f"{label}: failure", failure) for failure in failures[:5]]
    return figures


def _limit_messages(folder: Path) -> list[tuple[str, str]]:
    limits = upload_limits()  # the app's defaults, unless KANTELE_MAX_UPLOAD_MB / KANTELE_MAX_ROWS say otherwise
    big, many = folder / "big.jsonl", folder / "many.csv"
    with big.open("wb") as handle:
        handle.truncate(OVER_LIMIT_MB * MB)
    many.write_text("prompt,response\n" + "".join(f"q{i},a{i}\n" for i in range(limits.max_rows + 1)),
                    encoding="utf-8")
    figures = [("upload limits", f"{limits.max_bytes / MB:g} MB and {limits.max_rows:,} rows per file")]
    for label, path in (("upload over the size limit", big), ("upload over the row limit", many)):
        started = time.perf_counter()
        try:
            load_examples(path, limits=limits)
            message = "(accepted: no limit hit)"
        except DataError as error:
            message = str(error)
        figures.append((f"{label}: message", message))
        figures.append((f"{label}: seconds to refuse", f"{time.perf_counter() - started:.3f}"))
    return figures


def measure(cases: int = CASES) -> list[tuple[str, str]]:
    """Fuzz the importer and the parser `cases` times each; run the hand cases; show the limit messages."""
    figures = []
    with tempfile.TemporaryDirectory(prefix="kantele-fuzz-") as folder:
        folder = Path(folder)
        started = time.perf_counter()
        outcomes, failures = run_importer_fuzz(folder, cases, count_failures=True)
        figures += _fuzz_figures("importer fuzz", outcomes, failures, time.perf_counter() - started,
                                 ["loaded", "rejected: rows", "rejected: file"])
        figures.append(("importer fuzz: rejections naming the row or file and a fix",
                        f"{outcomes['rejected: rows'] + outcomes['rejected: file']:,} of "
                        f"{outcomes['rejected: rows'] + outcomes['rejected: file'] + outcomes['broke a rule']:,}"))
        started = time.perf_counter()
        outcomes, failures = run_parser_fuzz(cases, count_failures=True)
        figures += _fuzz_figures("QA parser fuzz", outcomes, failures, time.perf_counter() - started,
                                 ["pairs", "rejected"])
        handled, wrong = 0, []
        for name, suffix, data, expected in HAND_CASES:
            try:
                got = check_import(folder, suffix, data)
            except Exception as exc:  # noqa: BLE001 -- counted, not raised: the measurement reports it
                got = f"{type(exc).__name__}"
            handled += got == expected
            if got != expected:
                wrong.append(f"{name}: {got}, expected {expected}")
        figures.append(("hand cases handled as expected", f"{handled} of {len(HAND_CASES)}"))
        figures.append(("hand cases", "; ".join(name for name, *_ in HAND_CASES)))
        figures += [("hand case failed", line) for line in wrong]
        figures += _limit_messages(folder)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=CASES, help="generated cases per parser (default %(default)s)")
    args = parser.parse_args()
    for name, value in measure(args.cases):
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
