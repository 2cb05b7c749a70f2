"""The remote backend against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1,
serving the embedded model folder, started and stopped here."""

import os
import subprocess
import sys
import threading

import pytest
from helpers import KALEVALA, REPO, free_port, start_transformers_serve, stop_process

from tuning.data.examples import read_jsonl
from tuning.models.loading import embedded_model_dir
from tuning.qa.backends import BackendError, Completion, RemoteBackend
from tuning.qa.generate import QASettings, generate_qa
from tuning.qa.sources import chunk_text, read_source

STARTUP_S = 180
# Replies capped so the CPU server answers in seconds; a cut-off reply also exercises the parser's salvage.
REPLY_TOKENS = 200
CANARY_KEY = "sk-canary-5f1e0c9d-never-print-me"


@pytest.fixture(scope="module")
def qa_server(tmp_path_factory):
    """(base URL, served model id, log path) of a real `transformers serve` on loopback."""
    model = str(embedded_model_dir())
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log_path, "w") as log:
        try:
            server = start_transformers_serve(model, port, log, STARTUP_S)
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{log_path.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}/v1", model, log_path
        stop_process(server)


class CountingBackend:
    """The real remote backend, with the number of requests in flight recorded."""

    def __init__(self, backend):
        self.backend, self.kind, self.label = backend, backend.kind, backend.label
        self.max_in_flight = backend.max_in_flight
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    def complete(self, request):
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return self.backend.complete(request)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_a_real_server_answers_a_chat(qa_server):
    base_url, model, _ = qa_server
    reply = RemoteBackend(model, base_url=base_url).complete(
        Completion([{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0.0))
    assert isinstance(reply, str) and reply.strip()


def test_several_chunks_in_flight_each_batch_validated_or_reported(qa_server):
    base_url, model, _ = qa_server
    chunks = chunk_text(read_source(KALEVALA / "source.md"), "source.md")[:4]
    backend = CountingBackend(RemoteBackend(model, base_url=base_url, max_in_flight=4))
    results = list(generate_qa(chunks, backend, QASettings(pairs_per_batch=10, temperature=0.0,
                                                                    max_reply_tokens=REPLY_TOKENS)))
    assert backend.peak >= 2, "several chunks were in flight at once"
    assert sorted(r.number for r in results) == [1, 2, 3, 4]
    for result in results:
        assert result.error or result.kept or result.removed, "a batch is either parsed or reported"
        if result.error:
            assert result.attempts == 2 and result.raw_reply is not None
        for pair in result.kept:
            assert pair.provenance["source"] == "source.md" and pair.grounding is not None


def test_cli_remote_run_writes_pairs_and_never_prints_the_key(qa_server, tmp_path):
    base_url, model, log_path = qa_server
    out = tmp_path / "pairs.jsonl"
    env = {**os.environ, "KANTELE_TEST_KEY": CANARY_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "tuning", "generate", "--backend", "remote", "--base-url", base_url, "--model", model,
         "--api-key-env", "KANTELE_TEST_KEY", "--source", str(KALEVALA / "source.md"), "--out", str(out),
         "--batches", "2", "--in-flight", "2", "--max-reply-tokens", str(REPLY_TOKENS), "--off-topic", "2",
         "--topic", "the Kalevala"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 batches" in result.stdout and "kept" in result.stdout
    rows = read_jsonl(out)
    assert len(rows) >= 2 and all("provenance" in row for row in rows)
    written = [out.read_text(encoding="utf-8"), result.stdout, result.stderr, log_path.read_text()]
    written += [p.read_text(encoding="utf-8") for p in tmp_path.glob("*.jsonl")]
    assert not any(CANARY_KEY in text for text in written)


def test_an_unreachable_endpoint_is_a_clear_error():
    backend = RemoteBackend("any-model", base_url=f"http://127.0.0.1:{free_port()}/v1", token=CANARY_KEY, timeout=5)
    with pytest.raises(BackendError, match="can't connect -- is the server running") as error:
        backend.complete(Completion([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.0))
    assert CANARY_KEY not in str(error.value) and CANARY_KEY not in repr(backend)


def test_inference_providers_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf_token = "hf_canary0123456789abcdefNEVERPRINT"
    backend = RemoteBackend("HuggingFaceTB/SmolLM2-1.7B-Instruct", token=hf_token, timeout=5)
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE is set") as error:
        backend.complete(Completion([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.0))
    assert hf_token not in str(error.value) and hf_token not in repr(backend)
