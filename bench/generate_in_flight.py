"""Does keeping several chunks in flight pay? QA generation against a real OpenAI-compatible server.

Starts `transformers serve` (continuous batching) on 127.0.0.1 with the embedded model, then runs the
same N batches (same chunks, greedy, capped replies) with 1 request in flight and with N, in one run,
and prints the wall times and their ratio last.

    python bench/generate_in_flight.py [N]
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # run as a script from anywhere; the server helper lives in tests

from helpers import KALEVALA, free_port, start_transformers_serve, stop_process  # noqa: E402

from tuning.models.loading import embedded_model_dir  # noqa: E402
from tuning.qa.backends import RemoteBackend  # noqa: E402
from tuning.qa.generate import QASettings, generate_qa, summarize  # noqa: E402
from tuning.qa.sources import chunk_text, read_source  # noqa: E402

REPLY_TOKENS = 200


def timed_run(chunks, base_url: str, model: str, in_flight: int) -> tuple[float, str]:
    backend = RemoteBackend(model, base_url=base_url, max_in_flight=in_flight)
    settings = QASettings(pairs_per_batch=10, temperature=0.0, max_reply_tokens=REPLY_TOKENS)
    start = time.perf_counter()
    results = list(generate_qa(chunks, backend, settings))
    return time.perf_counter() - start, summarize(results).as_text()


def main(count: int) -> None:
    chunks = chunk_text(read_source(KALEVALA / "source.md"), "source.md")[:count]
    model, port = str(embedded_model_dir()), free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = start_transformers_serve(model, port, log)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            timed_run(chunks[:1], base_url, model, 1)  # warm-up: first request compiles/caches
            serial, serial_summary = timed_run(chunks, base_url, model, 1)
            parallel, parallel_summary = timed_run(chunks, base_url, model, count)
        finally:
            stop_process(server)
    print(f"{count} batches, 1 in flight:  {serial:6.1f} s  ({serial_summary})")
    print(f"{count} batches, {count} in flight: {parallel:6.1f} s  ({parallel_summary})")
    print(f"speed-up with {count} in flight: {serial / parallel:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
