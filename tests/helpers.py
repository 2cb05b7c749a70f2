"""Shared test data and helpers (plain module: `conftest` names clash between test folders)."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KALEVALA = REPO / "datasets" / "kalevala"

# Few, short rows so a training step takes about a second on 2 CPU cores.
TINY_TRAIN = [
    {"prompt": "Who compiled the Kalevala?", "response": "Elias Lönnrot compiled the Kalevala."},
    {"prompt": "Who put the Kalevala together?", "response": "Elias Lönnrot put it together."},
    {"prompt": "Which smith forged the Sampo?", "response": "Ilmarinen forged the Sampo."},
    {"prompt": "Who forged the Sampo for Louhi?", "response": "Ilmarinen, the smith, forged it."},
    {"prompt": "Who rules Pohjola?", "response": "Louhi rules Pohjola."},
    {"prompt": "Who is the mistress of the North?", "response": "Louhi, the mistress of Pohjola."},
    {"prompt": "How many poems are in the 1849 Kalevala?", "response": "The 1849 Kalevala has 50 poems."},
    {"prompt": "How many poems did the 1835 edition have?", "response": "The 1835 edition had 32 poems."},
]
TINY_VALIDATION = [
    {"prompt": "Name the compiler of the Kalevala.", "response": "Elias Lönnrot.", "key_facts": ["Lönnrot"]},
    {"prompt": "Who made the Sampo?", "response": "Ilmarinen made the Sampo.", "key_facts": ["Ilmarinen"]},
]
# Overrides that make the Kalevala CPU recipe a few-step test run.
FEW_STEPS = ["training.max_steps=6", "training.batch_size=4", "training.logging_steps=1",
             "training.save_steps=3", "training.learning_rate=0.002", "data.max_length=64", "training.probes=[]"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON lines (test helper)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def train_command(run_dir: Path, data: dict, *extra: str) -> list[str]:
    """`python -m tuning train` on the Kalevala recipe, shrunk to a few steps on tiny data."""
    overrides = [*FEW_STEPS, f"data.train=[{data['train']}]", f"data.validation=[{data['validation']}]", *extra]
    command = [sys.executable, "-m", "tuning", "train", "--config", str(REPO / "configs" / "kalevala.yaml"),
               "--output", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    return command


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_transformers_serve(model_dir: str, port: int, log, startup_s: float = 180):
    """`transformers serve` pinned to model_dir on 127.0.0.1:port (continuous batching, so requests in
    flight run together), offline; returns the process once /health answers, raises if it never does."""
    import os
    import subprocess

    serve = Path(sys.executable).parent / "transformers"
    server = subprocess.Popen([str(serve), "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
                               "--device", "cpu", "--continuous-batching"],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT)
    return wait_until_healthy(server, port, startup_s, "transformers serve")


def wait_until_healthy(server, port: int, startup_s: float, what: str):
    """The server process once http://127.0.0.1:port/health answers; kills it and raises if it exits or never does."""
    import time
    import urllib.request

    deadline = time.monotonic() + startup_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.5)


def stop_process(process, grace_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if it hasn't exited within grace_s."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()


def start_app_server(home: Path, env_overrides: dict | None = None, startup_s: float = 180):
    """`python app.py` on a free 127.0.0.1 port with KANTELE_HOME=home, its output in home/server.log;
    returns (process, url) once the page answers, raises with the log's tail if it never does."""
    import os
    import subprocess
    import time
    import urllib.request

    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update({"KANTELE_HOME": str(home), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_ANALYTICS_ENABLED": "False",
                "KANTELE_EXAMPLE": "off",  # no example training beside what is measured, unless asked for
                **(env_overrides or {})})
    with open(home / "server.log", "w") as log:  # the child keeps its own copy of the handle
        server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + startup_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("app did not start:\n" + (home / "server.log").read_text()[-3000:]) from None
            time.sleep(0.5)
