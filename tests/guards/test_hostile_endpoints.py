"""A shared app's Generate backends against hostile visitors: the owner's Hugging Face token is never lent to a
visitor's Inference Providers batches, and a visitor's base URL can't reach the app's own network (loopback,
the LAN, the cloud metadata service), neither directly, by a redirect, nor by a DNS answer that changes.
An endpoint's error page is never shown, and a reply that isn't a chat completion fails its batch cleanly.

Every server here is a real HTTP server on 127.0.0.1 that records each request it gets; no test sends a
packet off loopback: sockets connecting elsewhere, and DNS queries, are caught and fail the test."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from fake_hub import CANARY

from tuning.guards.safe_url import ALLOWED_ENDPOINTS_ENV, AddressRefused, PublicOnlyTransport
from tuning.qa.backends import BackendError, Completion, RemoteBackend
from tuning.qa.generate import QASettings, generate_qa
from tuning.qa.sources import chunk_text

VISITOR_TOKEN = "hf_visitor0123456789abcdefVISITOR"
TYPED_TOKEN = "hf_typed0123456789abcdefTYPEDKEY"
LOCAL_TOKEN = "hf_local0123456789abcdefLOCALONE"
OWNER_OPENAI = "sk-owner-openai-setting-NEVER-TO-A-VISITOR"
SECRET_IN_ERROR_PAGE = "db-password=hunter2-SECRET-in-error-page"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
HI = Completion([{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0)
PASSAGE = ("Elias Lönnrot compiled the Kalevala from folk poems he collected in Karelia. The first edition "
           "appeared in 1835 and the longer edition in 1849. The poems were sung by rune singers.")
CHAT_REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}
# Addresses of the app's own network, none public; "{port}" is a loopback server's, which must hear nothing.
INTERNAL_URLS = [
    "http://127.0.0.1:{port}/v1", "http://localhost:{port}/v1", "http://[::1]:{port}/v1",
    "http://[::ffff:127.0.0.1]:{port}/v1",  # IPv4-mapped loopback
    "http://2130706433:{port}/v1", "http://0x7f.1:{port}/v1",  # loopback spelled as a number
    "http://0.0.0.0:{port}/v1", "http://[::]:{port}/v1",  # unspecified: Linux connects these to loopback
    "http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/latest/meta-data",  # AWS metadata
    "http://metadata.google.internal/computeMetadata/v1", "http://100.100.100.200/latest/meta-data",  # GCP, Alibaba
    "http://[64:ff9b::a9fe:a9fe]/latest", "http://[2002:a9fe:a9fe::]/latest",  # metadata by NAT64 and 6to4
    "http://10.0.0.1:8000/v1", "http://172.16.5.4/v1", "http://192.168.1.10/v1", "http://[fd12:3456::1]/v1",
    "http://[fe80::1]/v1", "http://224.0.0.1/v1", "http://[ff02::1]/v1", "http://240.0.0.1/v1",
]
LOOPBACK = {"127.0.0.1", "::1"}


class Recorder:
    """A loopback HTTP server in a thread that records every request and answers with reply(method, path)."""

    def __init__(self, reply=None) -> None:
        self.reply = reply or (lambda method, path: (200, {"Content-Type": "application/json"},
                                                     json.dumps(CHAT_REPLY).encode()))
        self.requests: list[tuple[str, str, dict]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Its base URL, as an OpenAI-compatible server's."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, body = recorder.reply(self.command, self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()  # quick shutdown
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def redirect_to(location: str):
    """A reply that sends the client on to location, method and body kept (307)."""
    return lambda method, path: (307, {"Location": location}, b"")


@pytest.fixture
def shared(monkeypatch, tmp_path):
    """A shared app (KANTELE_SHARED=1) whose owner's HF_TOKEN is the canary; no saved login, nothing allowed."""
    import huggingface_hub.constants

    monkeypatch.setenv("KANTELE_SHARED", "1")
    monkeypatch.setenv("HF_TOKEN", CANARY)
    for name in ("HUGGING_FACE_HUB_TOKEN", ALLOWED_ENDPOINTS_ENV, "SYSTEM", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


@pytest.fixture
def local(monkeypatch, tmp_path):
    """Your own machine: not shared, no token anywhere."""
    import huggingface_hub.constants

    for name in ("KANTELE_SHARED", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", ALLOWED_ENDPOINTS_ENV, "SYSTEM", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


@pytest.fixture
def loopback_only(monkeypatch):
    """Every socket connect and DNS query this test makes, recorded; those that would leave this machine (a
    connect off loopback, a name needing DNS) fail without a packet. Yields the list of those attempts."""
    escapes: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if address[0] not in LOOPBACK:
            escapes.append(f"connect {address}")
            raise OSError("test: no packets off loopback")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name != "localhost" and not _numeric(name):
            escapes.append(f"DNS query for {name}")
            raise socket.gaierror(socket.EAI_NONAME, "test: no DNS")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield escapes
    assert escapes == [], "a request tried to leave loopback"


def _numeric(name: str) -> bool:
    """True when getaddrinfo answers name without DNS: an IP address, or an IPv4 number such as 2130706433."""
    try:
        socket.inet_aton(name)
        return True
    except OSError:
        try:
            ipaddress.ip_address(name.split("%")[0])
            return True
        except ValueError:
            return False


@pytest.fixture
def fake_dns(monkeypatch):
    """Names this test resolves as it says: per name a list of answers, one per lookup (the last one repeated),
    each answer its addresses separated by commas. Other names fail; no DNS query is sent."""
    answers: dict[str, list[str]] = {}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            answer = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                    for address in answer.split(",")]
        if _numeric(str(host)) or host == "localhost":
            return real_getaddrinfo(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "test: no DNS")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def hub_requests(monkeypatch):
    """huggingface_hub's HTTP client answered in-process (no socket): every request it would send is recorded,
    and chat completions get CHAT_REPLY."""
    import huggingface_hub

    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=CHAT_REPLY)

    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(answer)))
    yield sent
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


def batch_against(url: str):
    """The one batch of a one-passage generation against url (judge off): its result."""
    chunks = chunk_text(PASSAGE, "pasted")
    [result] = list(generate_qa(chunks, RemoteBackend(MODEL, base_url=url, timeout=10), QASettings(pairs_per_batch=10)))
    return result


# --- Inference Providers: the owner's token is never a visitor's --------------------------------------------


def test_shared_providers_without_a_visitor_token_refuse_before_any_network(shared, loopback_only, hub_requests):
    with pytest.raises(BackendError, match="your own Hugging Face token .* sign in with Hugging Face") as error:
        RemoteBackend(MODEL)
    assert CANARY not in str(error.value)
    assert hub_requests == []


def test_shared_providers_carry_the_visitors_token_never_the_owners(shared, loopback_only, hub_requests):
    from ui.generate_panel import PROVIDERS_CHOICE, make_backend

    signed_in = make_backend(PROVIDERS_CHOICE, "", MODEL, "", 4, signed_in_token=VISITOR_TOKEN)
    typed = make_backend(PROVIDERS_CHOICE, "", MODEL, TYPED_TOKEN, 4, signed_in_token=VISITOR_TOKEN)
    assert signed_in.complete(HI) == "hello" and typed.complete(HI) == "hello"
    keys = [request.headers.get("authorization") for request in hub_requests]
    assert keys == [f"Bearer {VISITOR_TOKEN}", f"Bearer {TYPED_TOKEN}"], "the typed key wins over the sign-in"
    assert not any(CANARY in str(request.headers) + str(request.url) for request in hub_requests)
    assert CANARY not in repr(vars(signed_in._client)) + repr(vars(typed._client))


def test_the_sign_in_token_never_goes_to_an_openai_compatible_url(local):
    from ui.generate_panel import OPENAI_CHOICE, make_backend

    with Recorder() as server:
        make_backend(OPENAI_CHOICE, server.url, MODEL, "", 1, signed_in_token=VISITOR_TOKEN).complete(HI)
    assert [headers.get("authorization") for _, _, headers in server.requests] == ["Bearer EMPTY"]


def test_locally_providers_use_this_machines_token_resolved_explicitly(local, monkeypatch, hub_requests):
    with pytest.raises(BackendError, match="no Hugging Face token for Inference Providers -- set HF_TOKEN"):
        RemoteBackend(MODEL)
    monkeypatch.setenv("HF_TOKEN", LOCAL_TOKEN)
    backend = RemoteBackend(MODEL)
    assert backend._client.token == LOCAL_TOKEN, "passed explicitly, not left to InferenceClient's fallback"
    assert backend.complete(HI) == "hello"
    assert [request.headers.get("authorization") for request in hub_requests] == [f"Bearer {LOCAL_TOKEN}"]


def test_the_owners_openai_settings_never_reach_a_visitors_endpoint(shared, loopback_only, monkeypatch):
    """The openai client adds OPENAI_CUSTOM_HEADERS (an Authorization there even replaces the key it is given),
    OPENAI_ORG_ID and OPENAI_PROJECT_ID to every request, wherever it goes; on a shared app they are the owner's."""
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", f"authorization: Bearer {OWNER_OPENAI}\nX-Gateway-Key: {OWNER_OPENAI}")
    for name in ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, OWNER_OPENAI)
    with Recorder() as server:
        monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, f"127.0.0.1:{server.port}")
        RemoteBackend(MODEL, base_url=server.url).complete(HI)
        RemoteBackend(MODEL, base_url=server.url, token=TYPED_TOKEN).complete(HI)
    sent = [headers for _, _, headers in server.requests]
    assert [headers["authorization"] for headers in sent] == ["Bearer EMPTY", f"Bearer {TYPED_TOKEN}"]
    assert OWNER_OPENAI not in json.dumps(sent)


# --- A visitor's base URL: public addresses only, checked after DNS, on every request and redirect ---------


@pytest.mark.parametrize("template", INTERNAL_URLS)
def test_shared_base_url_into_the_apps_network_is_refused_before_connecting(template, shared, loopback_only):
    with Recorder() as server:
        url = template.format(port=server.port)
        with pytest.raises(BackendError, match="not a public internet address|cloud metadata service") as error:
            RemoteBackend(MODEL, base_url=url)
        assert ALLOWED_ENDPOINTS_ENV in str(error.value), "the message names how the owner may allow one"
    assert server.requests == []


@pytest.mark.parametrize("template", INTERNAL_URLS)
def test_every_request_is_checked_at_the_transport_too(template, shared, loopback_only):
    """The check on each request (what a redirect goes through), without the base URL's check first."""
    with Recorder() as server, httpx2.Client(transport=PublicOnlyTransport()) as client:
        with pytest.raises(AddressRefused):
            client.post(template.format(port=server.port) + "/chat/completions", json={})
    assert server.requests == []


def test_a_redirect_from_an_allowed_endpoint_to_another_loopback_port_is_refused(shared, loopback_only, monkeypatch):
    with Recorder() as target, Recorder() as allowed:
        allowed.reply = redirect_to(f"http://127.0.0.1:{target.port}/v1/chat/completions")
        monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, f"127.0.0.1:{allowed.port}")
        backend = RemoteBackend(MODEL, base_url=allowed.url)
        with pytest.raises(BackendError, match=f"'127.0.0.1' is not a public .*127.0.0.1:{target.port}"):
            backend.complete(HI)
    assert len(allowed.requests) == 1 and target.requests == []


def test_a_redirect_to_the_metadata_service_is_refused_without_a_packet(shared, loopback_only, monkeypatch):
    with Recorder(redirect_to("http://169.254.169.254/latest/meta-data/iam/security-credentials/")) as allowed:
        monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, f"127.0.0.1:{allowed.port}")
        with pytest.raises(BackendError, match="'169.254.169.254' is not a public internet address"):
            RemoteBackend(MODEL, base_url=allowed.url).complete(HI)
    assert len(allowed.requests) == 1


def test_a_name_that_turns_internal_after_the_check_is_refused(shared, loopback_only, fake_dns):
    """DNS rebinding: public when the base URL is checked, loopback by the time the request is sent."""
    with Recorder() as server:
        fake_dns["rebind.example"] = ["93.184.216.34", "127.0.0.1"]
        backend = RemoteBackend(MODEL, base_url=f"http://rebind.example:{server.port}/v1")
        with pytest.raises(BackendError, match="'rebind.example' resolves to an address that is not a public"):
            backend.complete(HI)
    assert server.requests == []


def test_a_name_with_one_internal_address_among_public_ones_is_refused(shared, loopback_only, fake_dns):
    fake_dns["mixed.example"] = ["93.184.216.34,10.1.2.3"]
    with pytest.raises(BackendError, match="'mixed.example' resolves to an address that is not a public") as error:
        RemoteBackend(MODEL, base_url="https://mixed.example/v1")
    assert "10.1.2.3" not in str(error.value), "the app is no lookup service for its network's names"


def test_the_request_goes_to_the_address_that_was_checked(shared, loopback_only, fake_dns):
    """Pinned: the connection is to the checked address, while the Host header and TLS keep the name."""
    fake_dns["api.example"] = ["93.184.216.34", "127.0.0.1"]  # a second lookup would say loopback
    seen = []
    inner = httpx2.MockTransport(lambda request: seen.append(request) or httpx2.Response(200, json=CHAT_REPLY))
    with httpx2.Client(transport=PublicOnlyTransport(inner)) as client:
        client.post("https://api.example/v1/chat/completions", json={})
    [request] = seen
    assert request.url.host == "93.184.216.34" and request.headers["host"] == "api.example"
    assert request.extensions["sni_hostname"] == "api.example"


def test_an_allowed_loopback_endpoint_works_on_a_shared_app(shared, loopback_only, monkeypatch):
    with Recorder() as server:
        monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, f"localhost:1, 127.0.0.1:{server.port}")
        assert RemoteBackend(MODEL, base_url=server.url).complete(HI) == "hello"
    assert len(server.requests) == 1


def test_locally_a_loopback_endpoint_still_works(local, loopback_only):
    with Recorder() as server:
        assert RemoteBackend(MODEL, base_url=server.url).complete(HI) == "hello"
        assert RemoteBackend(MODEL, base_url=f"http://localhost:{server.port}/v1").complete(HI) == "hello"
    assert len(server.requests) == 2


def test_a_malformed_allow_list_names_the_fix(shared, monkeypatch):
    monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, "127.0.0.1")
    with pytest.raises(BackendError, match=f"{ALLOWED_ENDPOINTS_ENV} entry '127.0.0.1' is not host:port"):
        RemoteBackend(MODEL, base_url="http://127.0.0.1:8000/v1")


# --- What an endpoint answers: status, never the body; a reply that isn't a chat completion fails its batch --


@pytest.mark.parametrize("mode", ["local", "shared"])
def test_an_error_page_shows_the_status_never_the_body(mode, request, monkeypatch):
    request.getfixturevalue(mode)
    body = json.dumps({"error": {"message": f"internal failure, {SECRET_IN_ERROR_PAGE}"}}).encode()
    with Recorder(lambda method, path: (500, {"Content-Type": "application/json"}, body)) as server:
        monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, f"127.0.0.1:{server.port}")
        with pytest.raises(BackendError, match=r"HTTP 500 \(Internal Server Error\)") as error:
            RemoteBackend(MODEL, base_url=server.url, timeout=10).complete(HI)
    assert SECRET_IN_ERROR_PAGE not in str(error.value) and "hunter2" not in str(error.value)


def test_a_refused_request_shows_the_status_never_the_body(local):
    body = json.dumps({"error": {"message": SECRET_IN_ERROR_PAGE}}).encode()
    with Recorder(lambda method, path: (400, {"Content-Type": "application/json"}, body)) as server:
        with pytest.raises(BackendError, match=r"HTTP 400 \(Bad Request\) -- the endpoint refused") as error:
            RemoteBackend(MODEL, base_url=server.url).complete(HI)
    assert SECRET_IN_ERROR_PAGE not in str(error.value)


MALFORMED = {
    "an HTML page": ("text/html", b"<html><body>Welcome to nginx!</body></html>"),
    "plain text": ("text/plain", b"ok"),
    "JSON without choices": ("application/json", b'{"object": "list", "data": []}'),
    "choices not a list": ("application/json", b'{"choices": "none"}'),
    "a message without content": ("application/json", b'{"choices": [{"index": 0}]}'),
    "content not text": ("application/json", b'{"choices": [{"message": {"role": "assistant", "content": 5}}]}'),
    "JSON null": ("application/json", b"null"),
    "invalid JSON": ("application/json", b'{"choices": [{"mess'),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_reply_that_is_not_a_chat_completion_fails_the_batch_cleanly(what, local):
    kind, body = MALFORMED[what]
    with Recorder(lambda method, path: (200, {"Content-Type": kind}, body)) as server:
        result = batch_against(server.url)
    assert result.error and not result.kept and result.attempts == 2
    assert "not a chat completion" in result.error, result.error
    assert body.decode() not in result.error


def test_a_shared_app_stops_reading_a_reply_past_its_size_cap(shared, loopback_only, monkeypatch):
    """A visitor's endpoint could stream gigabytes into the server's memory; past the cap it is cut off."""
    huge = b'{"choices": [{"message": {"role": "assistant", "content": "' + b"x" * (3 * 2**20) + b'"}}]}'
    with Recorder(lambda method, path: (200, {"Content-Type": "application/json"}, huge)) as server:
        monkeypatch.setenv(ALLOWED_ENDPOINTS_ENV, f"127.0.0.1:{server.port}")
        monkeypatch.setenv("KANTELE_CAP_ENDPOINT_REPLY_MB", "1")
        with pytest.raises(BackendError, match="reply passed 1 MB, this app's limit") as error:
            RemoteBackend(MODEL, base_url=server.url, timeout=10).complete(HI)
        monkeypatch.setenv("KANTELE_CAP_ENDPOINT_REPLY_MB", "8")  # the same reply under the cap is read whole
        assert len(RemoteBackend(MODEL, base_url=server.url, timeout=10).complete(HI)) == 3 * 2**20
    assert "xxxx" not in str(error.value)


# --- The real app, shared, through its HTTP API -------------------------------------------------------------


def generate_endpoint(client) -> str:
    """The api_name of the Generate button's handler (the one taking the backend choice and the API key)."""
    api = client.view_api(print_info=False, return_format="dict")
    for name, info in api["named_endpoints"].items():
        labels = [parameter.get("label", "") for parameter in info["parameters"]]
        if any("API key" in label for label in labels) and any("Which LLM" in label for label in labels):
            return name
    raise AssertionError(f"no Generate endpoint in {list(api['named_endpoints'])}")


def ask_generate(url: str, choice: str, base_url: str = "", key: str = "") -> str:
    """Press Generate as a fresh visitor with pasted text and the given backend; the progress text shown."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    client.predict(None, api_name="/identify")
    endpoint = generate_endpoint(client)
    names = [p["parameter_name"] for p in client.view_api(print_info=False, return_format="dict")
             ["named_endpoints"][endpoint]["parameters"]]
    values = {"pasted": PASSAGE, "choice": choice, "base_url": base_url, "model": MODEL, "api_key": key,
              "in_flight": 1, "per_batch": 10, "batches": 1, "off_topic": 0, "topic": "", "judge": False,
              "min_judge": 5, "duplicate_threshold": 0.9, "files": None}
    outputs = client.predict(*[values.get(name) for name in names], api_name=endpoint)
    return json.dumps(outputs, default=str)


def test_the_shared_app_refuses_providers_without_the_visitors_own_token(shared_app):
    from ui.generate_panel import PROVIDERS_CHOICE

    url, home = shared_app
    shown = ask_generate(url, PROVIDERS_CHOICE)
    assert "Nothing generated" in shown and "your own Hugging Face token" in shown, shown
    assert CANARY not in shown
    assert CANARY not in (home / "server.log").read_text(errors="replace")


def test_the_shared_app_refuses_a_loopback_base_url(shared_app):
    from ui.generate_panel import OPENAI_CHOICE

    url, _ = shared_app
    with Recorder() as server:
        shown = ask_generate(url, OPENAI_CHOICE, base_url=server.url)
    assert "Nothing generated" in shown and "not a public internet address" in shown, shown
    assert server.requests == []
