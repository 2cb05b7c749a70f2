"""A small OpenAI-compatible chat server on 127.0.0.1 that checks its API key and writes grounded QA pairs.

Stdlib only (http.server). It speaks the wire protocol the `openai` client uses -- POST /v1/chat/completions
with a Bearer key, JSON in, a chat.completion object out, OpenAI-shaped errors -- so the app's remote
backend runs unchanged against it, in seconds, where `transformers serve` takes minutes on a CPU.

The pairs are cut from the passage in the request (each answer is one of its sentences), so they pass
the app's grounding checks. `echo_key_in_errors=n` makes the first n requests fail with HTTP 400 whose
message repeats the key it was sent, as careless servers do: the app must scrub it before showing it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASSAGE = re.compile(r'"""\n(.*?)\n"""', re.S)
PAIRS_WANTED = re.compile(r"exactly (\d+) question-and-answer pairs")


def grounded_pairs(prompt: str) -> list[dict]:
    """Up to the wanted number of pairs, each answer a sentence of the passage and its question about it."""
    match = PASSAGE.search(prompt)
    wanted = int(PAIRS_WANTED.search(prompt).group(1)) if PAIRS_WANTED.search(prompt) else 10
    text = match.group(1) if match else prompt
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 5 and "#" not in s]
    pairs = []
    for sentence in sentences[:wanted]:
        subject = " ".join(sentence.rstrip(".!?").split()[:6])
        pairs.append({"question": f"What do we know about {subject}?", "answer": sentence})
    return pairs


class FakeOpenAI:
    """The server; a context manager running it on a free 127.0.0.1 port in a thread."""

    def __init__(self, api_key: str, echo_key_in_errors: int = 0) -> None:
        self.api_key = api_key
        self.echo_left = echo_key_in_errors
        self.authorizations: list[str | None] = []  # the Authorization header of every request, in order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The base URL to give the client (it ends in /v1, as OpenAI-compatible servers' do)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def handle(self, method: str, path: str, authorization: str | None, body: bytes) -> tuple[int, dict]:
        """(status, JSON body) for one request."""
        with self._lock:
            self.authorizations.append(authorization)
            echo, self.echo_left = self.echo_left > 0, max(self.echo_left - 1, 0)
        key = (authorization or "").removeprefix("Bearer ").strip()
        if key != self.api_key:
            return _error(401, f"Incorrect API key provided: {key[:3]}...{key[-2:]}", "invalid_api_key")
        if echo:
            return _error(400, f"this server is busy; the request with key {key} was not run", "busy")
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "fake-qa", "object": "model", "owned_by": "tests"}]}
        if method != "POST" or path != "/v1/chat/completions":
            return _error(404, f"no route {method} {path}", "not_found")
        request = json.loads(body or b"{}")
        if request.get("stream"):
            return _error(400, "streaming is not implemented by the fake server", "unsupported")
        prompt = request["messages"][-1]["content"]
        reply = json.dumps(grounded_pairs(prompt), ensure_ascii=False)
        return 200, {"id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
                     "model": request.get("model", "fake-qa"),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(reply.split()),
                               "total_tokens": len(prompt.split()) + len(reply.split())}}

    def __enter__(self) -> FakeOpenAI:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _error(status: int, message: str, code: str) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = server.handle(self.command, self.path.split("?")[0], self.headers.get("Authorization"),
                                            body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args) -> None:  # requests are in server.authorizations
            pass

    return Handler
