"""Hostile uploads, measured: Gradio's upload route on a shared app with small limits (a file over the limit, many
files each under it, a body of unknown length, how long Gradio keeps a copy), the Data tab refusing a load over
the rows per load, and a large load with each conversation's tokens counted twice (as before) and once.

`measure()` returns (figure, value) pairs for docs/RELIABILITY.md; run as a script it prints them.

    python bench/hostile_uploads.py [--rows 99999]
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]  # run as a script from anywhere; the app helpers live in tests/

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import start_app_server, stop_process  # noqa: E402

from tuning.data.files import MB  # noqa: E402
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_ENV  # noqa: E402

SMALL_APP = {SHARED_ENV: "1", "KANTELE_EXAMPLE": "off", "KANTELE_MAX_UPLOAD_MB": "1",
             f"{CAP_ENV_PREFIX}SOURCE_MB": "1", f"{CAP_ENV_PREFIX}REQUEST_MB": "1.5",
             f"{CAP_ENV_PREFIX}UPLOAD_CACHE_MINUTES": "0.25"}  # 1 MB per file, 1.5 MB per load, copies kept 15 s
WORDS = ["kantele", "sampo", "louhi", "pohjola", "ilmarinen", "väinämöinen", "aino", "kalevala", "smith", "forged",
         "north", "song", "poem"]


def _stored(cache: Path) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0


def _post(url: str, sizes: list[int]):
    import httpx

    files = [("files", (f"{os.urandom(8).hex()}.jsonl", os.urandom(size))) for size in sizes]
    try:
        return httpx.post(url + "gradio_api/upload", files=files, timeout=60).status_code
    except httpx.TransportError as error:  # the server answered and hung up before the body was all sent
        return f"connection closed ({type(error).__name__})"


def _route_figures(folder: Path) -> list[tuple[str, str]]:
    import httpx

    cache = folder / "gradio-cache"
    server, url = start_app_server(folder, {**SMALL_APP, "GRADIO_TEMP_DIR": str(cache)})
    try:
        figures = []
        for label, sizes in (("one 2 MB file (limit 1 MB per file)", [2 * MB]),
                             ("three 0.9 MB files in one request (limit 1.5 MB per load)", [900_000] * 3)):
            before = _stored(cache)
            status = _post(url, sizes)
            stored = _stored(cache) - before
            figures.append((f"raw upload POST, {label}: status, bytes stored", f"{status}, {stored:,}"))
        body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.jsonl"\r\n\r\n{}\r\n--x--\r\n'
        status = httpx.post(url + "gradio_api/upload", content=iter([body]), timeout=60,
                            headers={"Content-Type": "multipart/form-data; boundary=x"}).status_code
        figures.append(("raw upload POST with no declared length: status", str(status)))
        started = time.monotonic()
        [path] = httpx.post(url + "gradio_api/upload", files=[("files", ("small.jsonl", os.urandom(1000)))],
                            timeout=60).json()
        while os.path.exists(path) and time.monotonic() - started < 120:
            time.sleep(0.25)
        figures.append(("Gradio's copy of an upload, kept 15 s (checked every 2 s): seconds until deleted",
                        f"{time.monotonic() - started:.1f}"))
        return figures
    finally:
        stop_process(server)


def _write_rows(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            prompt = " ".join(rng.choice(WORDS) for _ in range(12)) + f" {seed}-{i}?"
            response = " ".join(rng.choice(WORDS) for _ in range(25)) + f" {i}."
            handle.write(json.dumps({"prompt": prompt, "response": response}, ensure_ascii=False) + "\n")
    return path


def _timed(call):
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _load_figures(folder: Path, rows: int) -> list[tuple[str, str]]:
    from ui import data_tab
    from ui.state import count_tokens_with

    data_tab.WORKSPACES_DIR = folder / "workspaces"
    count_tokens_with()  # the tokenizer, loaded once as in the running app: not part of any load below
    state = data_tab.empty_dataset_state()
    os.environ[SHARED_ENV] = "1"  # the shared caps: 100,000 rows per file and per load
    parts = [_write_rows(folder / f"part{i}.jsonl", 60_000, seed=i) for i in (1, 2)]
    (_, _, message, *_), cpu, wall = _timed(lambda: data_tab.load_uploads([str(p) for p in parts], 0.1, state))
    figures = [("Data tab: two files of 60,000 rows (120,000 in one load, limit 100,000): message",
                message.split("\n")[1]),
               ("Data tab: two files of 60,000 rows: seconds to refuse (CPU, wall)", f"{cpu:.2f}, {wall:.2f}")]
    del os.environ[SHARED_ENV]
    big = _write_rows(folder / "big.jsonl", rows, seed=3)
    remembered = data_tab._remembered
    for label, counter in (("tokens counted twice (before)", lambda make: make()), ("counted once", remembered)):
        data_tab._remembered = counter
        (_, _, message, *_), cpu, wall = _timed(lambda: data_tab.load_uploads([str(big)], 0.1, state))
        assert message == "", message
        figures.append((f"Data tab: one file of {rows:,} rows, {label}: seconds to load (CPU, wall)",
                        f"{cpu:.1f}, {wall:.1f}"))
    data_tab._remembered = remembered
    return figures


def measure(rows: int = 99_999) -> list[tuple[str, str]]:
    """The figures: the upload route, then the Data tab's loads."""
    with tempfile.TemporaryDirectory() as folder:
        return _route_figures(Path(folder)) + _load_figures(Path(folder), rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=99_999, help="rows of the large load")
    for figure, value in measure(parser.parse_args().rows):
        print(f"{figure}: {value}", flush=True)
