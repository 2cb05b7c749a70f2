"""What the probes cost: the scorecard alone vs the scorecard with every probe (forgetting, limits, memorised,
retrieval), on the same loaded model, one after the other in one process. Prints each probe's figures and the
ratio last.

Target (issue 19): the full scorecard with every probe at most 2.5x the scorecard alone (58 Kalevala questions).

    python bench/scorecard_probes.py RUN_DIR [--keep] [--rounds N]   # --keep: write the report into RUN_DIR/eval.json

A shared 2-core machine's speed drifts by tens of percent within minutes (the same scorecard took 47 s and 67 s an
hour apart), so the two are taken in alternating rounds and the ratio is of their sums.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from scorecard_batching import copy_run

from tuning.chat.probes.run_probes import PROBES
from tuning.chat.scorecard import format_summary, score_run
from tuning.chat.side_by_side import SideBySideChat
from tuning.quiet import quiet_library_noise
from tuning.runs.files import EVAL_FILE, write_json

TARGET = 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--keep", action="store_true", help="write the report with probes into the run's eval.json")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (the ratio is of the sums)")
    args = parser.parse_args()
    quiet_library_noise()
    run_dir = copy_run(args.run, Path(tempfile.mkdtemp()))
    chat = SideBySideChat.from_run(run_dir, dequantize=False)  # as the trainer's scorecard loads it
    chat.answer("Warm up.", adapter_on=True)

    alone = with_probes = 0.0
    for round_number in range(1, args.rounds + 1):
        started = time.perf_counter()
        score_run(run_dir, chat=chat)
        alone_s = time.perf_counter() - started
        started = time.perf_counter()
        report = score_run(run_dir, chat=chat, probes=PROBES)
        probes_s = time.perf_counter() - started
        print(f"round {round_number}: scorecard alone {alone_s:.1f} s, with every probe {probes_s:.1f} s "
              f"({probes_s / alone_s:.2f}x)", flush=True)
        alone, with_probes = alone + alone_s, with_probes + probes_s

    print(format_summary(report))
    print(json.dumps(report["probes"]["retrieval"]["key_fact"]))
    if args.keep:
        write_json(args.run / EVAL_FILE, report)
    ratio = with_probes / alone
    print(f"over {args.rounds} rounds: scorecard alone {alone:.1f} s, with every probe {with_probes:.1f} s: {ratio:.2f}x "
          f"(target <= {TARGET}x) -- {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
