"""Serve a tuned run over an OpenAI-compatible API: `transformers serve` on the run's merged model.

    python -m tuning serve --run RUN   ->  http://127.0.0.1:8000/v1  (chat/completions, completions, models)

The run's adapter is merged into its base (export.merge_run) into a folder named after the run, and that
folder's chat template is made to answer as the run trained: a conversation without a system turn gets the
run's system prompt (training added it to every row that had none), and a tokenizer whose model always saw BOS
first gets it in the prompt too (chat_template.bos_to_add, as training, chat and the GGUF export decide).
Then `transformers serve` is pinned to that folder, so a client asks for the run's name as its model.

The merged folder is written outside the run folder (only training writes there): a temporary folder removed
when the server stops, or --merged-dir to keep it and reuse it next time (it is re-merged if the adapter changed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuning.config import write_text_atomic
from tuning.errors import KanteleError
from tuning.portable.export import _run_recipe, merge_run, ollama_name
from tuning.runs.files import ADAPTER_DIR

SERVED_MARKER = "kantele-served.json"  # which adapter the folder was merged from, and the prompt it defaults to
CHAT_TEMPLATE_FILE = "chat_template.jinja"
LOOPBACK = "127.0.0.1"


class ServeError(KanteleError, RuntimeError):
    """A run that can't be served; the message says why."""


@dataclass
class ServedModel:
    name: str  # the model id clients ask for: the folder's name, served from its parent
    folder: Path
    system_prompt: str | None
    bos: str | None  # the BOS text the served prompts start with, when training's did


def adapter_digest(run_dir: Path) -> str:
    """SHA-256 over the adapter's files: a changed adapter (a resumed or re-trained run) means a new merge."""
    digest = hashlib.sha256()
    for path in sorted((run_dir / ADAPTER_DIR).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(run_dir).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _jinja_string(text: str) -> str:
    """A Jinja string literal for any text (JSON's escapes are Jinja's: quotes, backslashes, newlines)."""
    return json.dumps(text, ensure_ascii=False)


def served_chat_template(template: str, system_prompt: str | None, bos: str | None) -> str:
    """The model's own template, preceded by what training did to every conversation before rendering it."""
    lines = []
    if system_prompt:
        # As with_system_prompt: only a conversation that brings no system turn of its own gets the run's.
        lines.append("{%- if not messages or messages[0]['role'] != 'system' -%}"
                     "{%- set messages = [{'role': 'system', 'content': " + _jinja_string(system_prompt) + "}] + messages -%}"
                     "{%- endif -%}")
    if bos:
        lines.append("{{- " + _jinja_string(bos) + " -}}")
    return "".join(lines) + template


def _served_marker(folder: Path) -> dict:
    """What an earlier `serve` recorded about the merge in folder ({} when there is none, or it is damaged)."""
    try:
        marker = json.loads((folder / SERVED_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def prepare_served_model(run_dir: str | os.PathLike, merged_root: str | os.PathLike) -> ServedModel:
    """merged_root/<run name>/: the run's merged model, with the chat template it trained with (see the module)."""
    from transformers import AutoTokenizer

    from tuning.data.chat_template import bos_to_add

    run_dir, merged_root = Path(run_dir), Path(merged_root)
    recipe = _run_recipe(run_dir)  # a clear error for a folder that isn't a finished run
    name = ollama_name(run_dir)
    folder = merged_root / name
    digest = adapter_digest(run_dir)
    marker = _served_marker(folder)
    reused = marker.get("adapter_sha256") == digest and "original_chat_template" in marker
    if not reused:
        merge_run(run_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # A reused folder's saved template is already the served one: start again from the model's own.
    original = marker["original_chat_template"] if reused else tokenizer.chat_template
    if not original:
        raise ServeError(f"the base model of {run_dir} has no chat template, so a chat server can't render "
                         "conversations for it")
    bos_id = bos_to_add(tokenizer)
    served = ServedModel(name=name, folder=folder, system_prompt=recipe.data.system_prompt,
                         bos=tokenizer.convert_ids_to_tokens(bos_id) if bos_id is not None else None)
    write_text_atomic(folder / CHAT_TEMPLATE_FILE, served_chat_template(original, served.system_prompt, served.bos))
    # tokenizer_config.json may carry the template inline too; the .jinja file wins, but keep them one template.
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if "chat_template" in config:
            del config["chat_template"]
            write_text_atomic(config_path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(folder / SERVED_MARKER, json.dumps(
        {"run": str(run_dir.resolve()), "adapter_sha256": digest, "system_prompt": served.system_prompt,
         "bos": served.bos, "original_chat_template": original}, indent=2, ensure_ascii=False) + "\n")
    return served


def serve_command(served: ServedModel, host: str, port: int, device: str) -> list[str]:
    """`transformers serve` pinned to the served folder (run from its parent, so its id is the run's name)."""
    return [sys.executable, "-m", "transformers.cli.transformers", "serve", served.name,
            "--host", host, "--port", str(port), "--device", device]


def serve_run(run_dir: str | os.PathLike, host: str = LOOPBACK, port: int = 8000, merged_dir: str | None = None,
              device: str = "auto", announce=print) -> int:
    """Merge, then run the server in the foreground until it stops or this process is told to stop; returns its
    exit code. A temporary merged folder is removed afterwards."""
    root = Path(merged_dir) if merged_dir else Path(tempfile.mkdtemp(prefix="kantele-serve-"))
    try:
        served = prepare_served_model(run_dir, root)
        announce(f"serving run {run_dir} as model '{served.name}' at http://{host}:{port}/v1"
                 + (f" (system prompt when a chat brings none: {served.system_prompt!r})" if served.system_prompt else ""))
        if host not in (LOOPBACK, "localhost", "::1"):
            announce(f"note: listening on {host}: anyone who can reach it may use the model -- the server has no "
                     "authentication")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the model is a local folder: nothing to fetch
        server = subprocess.Popen(serve_command(served, host, port, device), cwd=root, env=env)
        stop = _forward_stop_signals(server)
        try:
            return server.wait()
        finally:
            stop()
    finally:
        if not merged_dir:
            shutil.rmtree(root, ignore_errors=True)


def _forward_stop_signals(server: subprocess.Popen):
    """SIGTERM/SIGINT to this process stop the server (then serve_run cleans up); returns the undo."""
    previous = {}

    def forward(signum, _frame):
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, forward)

    def restore():
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    return restore
