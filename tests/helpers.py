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


# TinyLlama-1.1B-Chat's chat template (Zephyr's): it never writes <s>, though its tokenizer adds it to plain text.
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")


def write_bos_tokenizer(folder: Path) -> Path:
    """A SentencePiece Llama tokenizer (tokenizer.model trained here on the Kalevala source) that adds BOS as
    TinyLlama's does, with Zephyr's template, saved in folder: TinyLlama's tokenizer without the Hub."""
    import io

    import sentencepiece
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter((KALEVALA / "source.md").read_text(encoding="utf-8").splitlines()),
        model_writer=model, vocab_size=400, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    vocab, _, merges = SentencePieceExtractor(str(folder / "tokenizer.model")).extract()
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.chat_template = ZEPHYR
    tokenizer.save_pretrained(folder)
    return folder
