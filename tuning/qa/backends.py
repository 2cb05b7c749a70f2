"""LLM backends for QA generation, one interface: a local transformers model, or a remote chat endpoint
(any OpenAI-compatible server, or Hugging Face Inference Providers) through huggingface_hub.InferenceClient.

On a shared app (tuning/guards/caps.py) a visitor's base URL must be a public address (tuning/guards/safe_url.py),
and Inference Providers take the visitor's own token: the app's HF_TOKEN and OpenAI settings are the owner's."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from http import HTTPStatus

from tuning.config import AUTO_MODEL
from tuning.errors import KanteleError, exception_chain, first_line
from tuning.guards.caps import is_shared

LOCAL, REMOTE = "local", "remote"
DEFAULT_REMOTE_IN_FLIGHT = 4  # chunks in flight at once: enough to hide latency, few enough not to be throttled
MAX_REMOTE_IN_FLIGHT = 16
DEFAULT_TIMEOUT_S = 180.0
# Sent as the key to an endpoint the user gave no key for. Without it, InferenceClient sends the
# locally saved Hugging Face token (HF_TOKEN / `hf auth login`) to whatever base URL it was given.
NO_KEY = "EMPTY"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
OPENAI_HEADERS_ENV = "OPENAI_CUSTOM_HEADERS"  # extra headers the openai client adds to every request it sends
LOCAL_REPETITION_PENALTY = 1.1  # small models loop on lists of pairs without it


def _max_reply_bytes() -> int | None:
    """The most a visitor's endpoint may send back in one reply, on a shared app."""
    from tuning.guards.caps import caps

    megabytes = caps().endpoint_reply_mb
    return None if megabytes is None else int(megabytes * 2**20)


class BackendError(KanteleError, RuntimeError):
    """The LLM could not answer; the message says why and what to do (and never holds a token)."""


@dataclass
class Completion:
    """What one request asked for."""

    messages: list[dict]
    max_tokens: int
    temperature: float
    # The start of the wanted reply (e.g. '[{"question": "'). A local model is made to continue from it,
    # which turns a small model's rambling into parseable JSON; chat endpoints can't be prefilled, so
    # remote backends only get the instruction (and end their replies themselves: no stop strings).
    reply_prefix: str = ""
    stop: tuple[str, ...] = ()
    seed: int | None = None  # same request, same seed: the same reply (locally; remote servers may ignore it)


class LocalBackend:
    """A chat model loaded in this process (the embedded default offline); one generate at a time."""

    kind = LOCAL
    max_in_flight = 1

    def __init__(self, model_name: str = AUTO_MODEL) -> None:
        self.model_name = model_name
        self._model = self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        """Human name of the model."""
        from tuning.models.loading import display_name, resolve_model

        return display_name(resolve_model(self.model_name))

    def _load(self) -> None:
        from tuning.hardware.device import GENERATION
        from tuning.models.loading import load_base_model, load_tokenizer, resolve_model
        from tuning.models.memory import check_model_params, chosen_model_config

        resolved = resolve_model(self.model_name)
        check_model_params(self.model_name, resolved.path)  # before any weight loads
        self._tokenizer = load_tokenizer(resolved.path)
        # 4-bit on a GPU, which training shares; full precision on a CPU, where 4-bit would only cost quality.
        self._model = load_base_model(resolved.path, chosen_model_config(self.model_name), work=GENERATION)
        self._model.eval()

    def complete(self, request: Completion) -> str:
        """The model's reply to a chat."""
        import torch

        from tuning.data.chat_template import encode_prompt

        with self._lock:
            if self._model is None:
                self._load()
            prompt = encode_prompt(self._tokenizer, request.messages)
            prompt += self._tokenizer(request.reply_prefix, add_special_tokens=False).input_ids if request.reply_prefix else []
            ids = torch.tensor([prompt], device=self._model.device)
            stopping = {"stop_strings": list(request.stop), "tokenizer": self._tokenizer} if request.stop else {}
            sampling = {"do_sample": True, "temperature": request.temperature, "top_p": 0.95} \
                if request.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            if request.seed is not None:
                torch.manual_seed(request.seed)  # under the lock, so no other request draws in between
            with torch.inference_mode():
                out = self._model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           max_new_tokens=request.max_tokens, pad_token_id=self._tokenizer.pad_token_id,
                                           repetition_penalty=LOCAL_REPETITION_PENALTY, **sampling, **stopping)
            return request.reply_prefix + self._tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


class RemoteBackend:
    """A chat-completions endpoint: any OpenAI-compatible base URL (through the `openai` client), or a Hub
    model id served by Hugging Face Inference Providers (through huggingface_hub.InferenceClient).
    Several requests may be in flight at once."""

    kind = REMOTE

    def __init__(self, model: str, base_url: str | None = None, token: str | None = None,
                 provider: str | None = None, max_in_flight: int = DEFAULT_REMOTE_IN_FLIGHT,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not (model or "").strip():
            raise BackendError("no model named -- give the model id the endpoint serves (e.g. "
                               "'meta-llama/Llama-3.1-8B-Instruct')")
        if not 1 <= max_in_flight <= MAX_REMOTE_IN_FLIGHT:
            raise BackendError(f"requests in flight must be 1-{MAX_REMOTE_IN_FLIGHT}, got {max_in_flight}")
        self.model = model.strip()
        self.base_url = (base_url or "").strip().rstrip("/") or None
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise BackendError(f"base URL '{self.base_url}' must start with http:// or https://")
        self.provider = provider
        self.max_in_flight = max_in_flight
        self._shared = is_shared()
        if self.base_url and self._shared:
            _check_public(self.base_url)
        self._token = (token or "").strip() or (None if self.base_url else _providers_token(self._shared))
        self._client = self._make_client(timeout)

    def _make_client(self, timeout: float):
        if self.base_url:
            # The openai client, not InferenceClient: InferenceClient sends the saved Hugging Face token to
            # any URL when no key is given, and refuses even a loopback server when HF_HUB_OFFLINE is set.
            from openai import DefaultHttpxClient, OpenAI

            from tuning.guards.safe_url import PublicOnlyTransport

            # Shared: every request (and redirect) is checked to go to a public address, see tuning/guards/safe_url.py.
            http_client = DefaultHttpxClient(transport=PublicOnlyTransport(max_reply_bytes=_max_reply_bytes())) \
                if self._shared else None
            key = self._token or NO_KEY
            return OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=1, http_client=http_client,
                          default_headers=_no_ambient_headers(key) if self._shared else None)
        from huggingface_hub import InferenceClient

        # Inference Providers: the token is always passed -- with None, InferenceClient would take HF_TOKEN,
        # which on a shared app is the owner's, and bill every visitor's batches to the owner.
        return InferenceClient(provider=self.provider or "auto", api_key=self._token, timeout=timeout)

    @property
    def label(self) -> str:
        """Human name of the endpoint and model (no token)."""
        return f"{self.model} at {self.base_url}" if self.base_url else f"{self.model} (Inference Providers)"

    def __repr__(self) -> str:  # the default repr would show the token
        return f"RemoteBackend({self.label!r}, max_in_flight={self.max_in_flight})"

    def complete(self, request: Completion) -> str:
        """The endpoint's reply to a chat."""
        options = {"messages": request.messages, "model": self.model, "max_tokens": request.max_tokens,
                   "temperature": request.temperature, "seed": request.seed}
        try:
            if self.base_url:
                reply = self._client.chat.completions.create(**options)
            else:
                reply = self._client.chat_completion(**options)
        except Exception as exc:  # noqa: BLE001 -- every transport and HTTP error becomes one clear message
            raise BackendError(self._explain(exc)) from None
        return self._reply_text(reply)

    def _reply_text(self, reply) -> str:
        """The text of a chat completion; BackendError when the endpoint answered something else."""
        where = self.base_url or "Hugging Face Inference Providers"
        try:  # a server may answer 200 with an HTML page, or JSON of any shape
            content = reply.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            raise BackendError(f"{where}: {_not_a_completion('no choices[0].message.content')}") from None
        if content is not None and not isinstance(content, str):
            raise BackendError(f"{where}: {_not_a_completion(f'its message content is {type(content).__name__}')}")
        return content or ""

    def _explain(self, exc: Exception) -> str:
        from tuning.guards.safe_url import AddressRefused, ReplyTooLarge

        where = self.base_url or "Hugging Face Inference Providers"
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        name = type(exc).__name__.lower()
        refused = next((link for link in exception_chain(exc) if isinstance(link, (AddressRefused, ReplyTooLarge))), None)
        if refused is not None:  # a redirect, or a DNS answer that changed since the base URL was checked
            why = str(refused)
        elif status in (401, 403):
            why = f"the endpoint refused the key (HTTP {status}) -- check the token and its permissions"
        elif status == 404:
            why = f"HTTP 404 -- check the base URL (it usually ends in /v1) and that '{self.model}' is served there"
        elif status == 429:
            why = "HTTP 429 (Too Many Requests) -- the endpoint is rate-limiting; try fewer batches in flight"
        elif status is not None:
            # The status only, never the body: a server's error page may hold anything (its secrets, an echoed key).
            what = "refused the request" if 400 <= status < 500 else "failed"
            why = f"HTTP {status} ({_reason(status)}) -- the endpoint {what}; its own log says why"
        elif isinstance(exc, json.JSONDecodeError):
            why = _not_a_completion("its JSON is cut off or invalid")
        elif "offline" in name:
            why = "HF_HUB_OFFLINE is set, so the Hub can't be reached -- unset it, or use the local model"
        elif isinstance(exc, TimeoutError) or "timeout" in name:
            why = "no answer in time -- the server may be overloaded; try fewer requests in flight"
        elif isinstance(exc, (ConnectionError, OSError)) or "connect" in name:
            why = "can't connect -- is the server running and the URL right?"
        else:
            why = f"{type(exc).__name__}: {first_line(exc)}"
        return self._scrub(f"{where}: {why}")

    def _scrub(self, text: str) -> str:
        """Never let a token reach a message, even if a library echoed it."""
        return text.replace(self._token, "***") if self._token else text


def _providers_token(shared: bool) -> str:
    """The token for Inference Providers when none was given: this machine's own (HF_TOKEN / `hf auth login`),
    but never on a shared app, where it is the owner's and every visitor's batches would be billed to it."""
    if shared:
        raise BackendError("Inference Providers need your own Hugging Face token on this shared app -- paste a "
                           f"token that may call Inference Providers ({TOKENS_PAGE}), or sign in with Hugging Face "
                           "where the app offers it")
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise BackendError("no Hugging Face token for Inference Providers -- set HF_TOKEN, run `hf auth login`, "
                           f"or paste a token that may call Inference Providers ({TOKENS_PAGE})")
    return token


def _no_ambient_headers(key: str) -> dict:
    """Headers that replace those the openai client takes from this machine's environment (OPENAI_CUSTOM_HEADERS,
    OPENAI_ORG_ID, OPENAI_PROJECT_ID): on a shared app they are the owner's, and would go to a visitor's URL --
    an Authorization among them even in place of the visitor's key."""
    from openai import omit

    lines = os.environ.get(OPENAI_HEADERS_ENV, "").splitlines()
    names = [line.split(":", 1)[0].strip() for line in lines if ":" in line]
    # An explicit Authorization makes the client drop the environment's (in any letter case).
    names = [name for name in names if name.lower() != "authorization"]
    return {**dict.fromkeys(names, omit), "OpenAI-Organization": omit, "OpenAI-Project": omit,
            "Authorization": f"Bearer {key}"}


def _check_public(base_url: str) -> None:
    """BackendError unless base_url's host is a public address (or one the owner allowed); connects nowhere."""
    from tuning.guards.safe_url import AddressRefused, check_url

    try:
        check_url(base_url)
    except AddressRefused as error:
        raise BackendError(f"base URL {base_url}: {error}") from None
    except (OSError, ValueError) as error:  # no such host, or a URL httpx can't parse
        raise BackendError(f"base URL {base_url}: can't find the host ({first_line(error)}) -- check the URL") from None


def _not_a_completion(detail: str) -> str:
    return (f"the reply is not a chat completion ({detail}) -- check that the base URL is an OpenAI-compatible "
            "API (it usually ends in /v1)")


def _reason(status: int) -> str:
    """The standard phrase of an HTTP status ('Internal Server Error'), or 'unknown status'."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "unknown status"
