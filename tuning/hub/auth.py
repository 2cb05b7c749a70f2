"""Who is pushing: the Hugging Face token (given, HF_TOKEN, or the saved login), checked for identity and
write access before anything is uploaded, and Hub errors turned into messages that never hold the token."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tuning.errors import KanteleError, first_line

TOKENS_PAGE = "https://huggingface.co/settings/tokens"
WRITE_ROLES = {"write", "admin"}
WRITE_PERMISSION = "repo.write"
READ_ONLY_ORG_ROLES = {"read"}  # org members with this role may not create or push repos there
NAMESPACE_ENTITIES = {"user", "org"}  # fine-grained scopes on a whole account; others name one repo


class HubError(KanteleError, RuntimeError):
    """A Hub call that failed; the message names the fix and never contains a token."""


@dataclass(frozen=True)
class HubIdentity:
    """The account behind a token and the namespaces it may write to."""

    name: str
    writable: frozenset[str]


def on_space() -> bool:
    """True inside a Hugging Face Space (the Hub sets SYSTEM=spaces and SPACE_ID there; gradio checks the same)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


def download_token(repo_id: str, owner_chosen: str | None = None) -> bool | None:
    """The token for downloading repo_id: None lets huggingface_hub use HF_TOKEN / the login as usual;
    False downloads anonymously. On a shared app (a Space, or KANTELE_SHARED=1) HF_TOKEN is the owner's
    secret: it may fetch the model the owner configured (owner_chosen), never a repo a visitor typed in --
    that would open the owner's private and gated repos to every visitor."""
    from tuning.guards.caps import is_shared  # imported here: shared_space builds on on_space() above

    if is_shared() and repo_id != owner_chosen:
        return False
    return None


def resolve_token(token: str | None = None, allow_ambient: bool = True) -> str:
    """The token to use: the one given, else (allow_ambient) HF_TOKEN / the saved `hf auth login`.

    On a shared Space the app passes allow_ambient=False: HF_TOKEN there is the Space owner's secret,
    and a visitor must never publish with it."""
    from huggingface_hub import get_token

    token = (token or "").strip() or (get_token() if allow_ambient else None)
    if not token:
        where = ("set HF_TOKEN, run `hf auth login`, or paste a write token" if allow_ambient
                 else "sign in with Hugging Face or paste a write token")
        raise HubError(f"no Hugging Face token: {where} ({TOKENS_PAGE})")
    return token


def check_repo_id(repo_id: str) -> str:
    """repo_id itself when it is a valid NAMESPACE/NAME; HubError otherwise (before any Hub call)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problem = None
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        problem = "write it as USER/NAME or ORG/NAME"
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            problem = "use letters, digits, '-', '_' or '.', no '--' or '..', at most 96 characters"
    if problem:
        raise HubError(f"'{repo_id}' is not a repository id -- {problem}")
    return repo_id


def whoami(token: str, endpoint: str | None = None) -> dict:
    """The Hub's answer to 'who is this token' (one call: the endpoint is rate-limited)."""
    from huggingface_hub import HfApi

    try:
        return HfApi(endpoint=endpoint).whoami(token=token)
    except Exception as exc:  # noqa: BLE001 -- network, 401, rate limit: all become one clear message
        raise HubError(explain_hub_error(exc, token, "checking the token", endpoint)) from None


def check_write_access(repo_id: str, token: str, repo_type: str = "model", endpoint: str | None = None,
                       who: dict | None = None) -> HubIdentity:
    """Ask the Hub who the token belongs to (unless `who` already says); HubError unless it may write repo_id."""
    check_repo_id(repo_id)
    namespace = repo_id.split("/")[0]
    who = who if who is not None else whoami(token, endpoint)
    identity = HubIdentity(who.get("name", "?"), frozenset(_writable_namespaces(who)))
    # Namespaces are case-insensitive on the Hub (a fine-grained scope may spell the user in lower case).
    if namespace.casefold() not in {name.casefold() for name in identity.writable} \
            and not _may_write_repo(who, repo_id, repo_type):
        raise HubError(f"the token of '{identity.name}' can't write to '{namespace}' -- "
                       f"{_write_advice(who, namespace)}")
    return identity


def _access(who: dict) -> dict:
    return (who.get("auth") or {}).get("accessToken") or {}


def _writable_namespaces(who: dict) -> set[str]:
    """Namespaces the token may create repositories in and push to."""
    access = _access(who)
    role = access.get("role")
    if role in WRITE_ROLES:
        orgs = {org.get("name") for org in who.get("orgs") or []
                if org.get("name") and org.get("roleInOrg") not in READ_ONLY_ORG_ROLES}
        return {who.get("name"), *orgs} - {None}
    if role == "fineGrained":
        return {entry["entity"]["name"] for entry in _scoped(access)
                if entry["entity"].get("type") in NAMESPACE_ENTITIES and WRITE_PERMISSION in entry["permissions"]}
    return set()


def _may_write_repo(who: dict, repo_id: str, repo_type: str) -> bool:
    """A fine-grained token scoped to this one (existing) repository with write permission."""
    access = _access(who)
    if access.get("role") != "fineGrained":
        return False
    return any(entry["entity"].get("type") == repo_type
               and entry["entity"].get("name", "").casefold() == repo_id.casefold()
               and WRITE_PERMISSION in entry["permissions"] for entry in _scoped(access))


def _scoped(access: dict) -> list[dict]:
    """The fine-grained scopes, each with an entity dict and a permissions list (missing parts filled in)."""
    scoped = (access.get("fineGrained") or {}).get("scoped") or []
    return [{"entity": entry.get("entity") or {}, "permissions": entry.get("permissions") or []}
            for entry in scoped if isinstance(entry, dict)]


def _write_advice(who: dict, namespace: str) -> str:
    role = _access(who).get("role")
    if role == "read":
        return f"it is a read-only token; create one with the 'write' role at {TOKENS_PAGE}"
    if role == "fineGrained":
        return f"give the fine-grained token '{WRITE_PERMISSION}' on '{namespace}' at {TOKENS_PAGE}"
    return f"push to your own namespace ('{who.get('name')}/…') or an organisation you may write to"


def explain_hub_error(exc: Exception, token: str | None, action: str, endpoint: str | None = None) -> str:
    """A one-line message for a failed Hub call, with the fix, and the token scrubbed out."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    # The Hub says why in X-Error-Message (e.g. "You don't have the rights to create a model under ...").
    server_says = (response.headers.get("X-Error-Message") or "").strip() if response is not None else ""
    said = f" The Hub said: {server_says[:300]}" if server_says else ""
    if status == 401:
        why = f"the Hub refused the token (401) -- it is wrong or revoked; create a new one at {TOKENS_PAGE}"
    elif status == 403:
        why = (f"the token may not do this (403) -- it needs write access to the repository's namespace "
               f"('write' role, or '{WRITE_PERMISSION}' for a fine-grained token: {TOKENS_PAGE}).{said}")
    elif status == 404:
        why = f"not found (404) -- check the repository id and that the token may see it.{said}"
    elif status == 429:
        why = "rate-limited (429) -- wait a minute and try again"
    elif status is not None:
        why = f"HTTP {status}: {server_says or first_line(exc)}"
    elif isinstance(exc, OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE is set -- unset it to reach the Hub"
    elif isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        why = (f"can't reach the Hub at {endpoint or constants.ENDPOINT} ({type(exc).__name__}) -- check the "
               "network; pushing again is safe (a commit lands whole or not at all)")
    else:  # a refused card, a malformed answer...: say what it was, not "network"
        why = f"{type(exc).__name__}: {first_line(exc)}"
    message = f"{action}: {why}"
    return message.replace(token, "***") if token else message
