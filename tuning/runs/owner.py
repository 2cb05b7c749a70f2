"""Who owns a run: the visitor's browser (a random id) or, when signed in, their Hugging Face login.

On a shared Space a visitor's runs are theirs alone until they publish. The app writes the owner's
digest into the run folder when it queues the run; a run without one (trained from the shell) is
open to everyone. A visitor id is a bearer secret -- whoever holds it is that visitor -- so the
folder holds only its SHA-256, and no message or repr ever shows it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tuning.config import write_text_atomic
from tuning.errors import KanteleError
from tuning.runs.files import OWNER_FILE

VISITOR_ID_BYTES = 32  # 256 random bits: not guessable, so the id alone proves who asks
_VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{43,128}$")  # secrets.token_urlsafe(32) is 43 characters


class RunAccessError(KanteleError, ValueError):
    """A run id that is not one of the asker's runs (a missing run reads the same: ids are not probed)."""


@dataclass(frozen=True)
class Owner:
    """Who asks: this browser's visitor id and, when signed in on the Space, the Hugging Face user."""

    visitor_id: str = field(repr=False)
    hf_user: str | None = None

    def digest(self) -> str:
        """The digest a new run is recorded under: the login when signed in, else the browser."""
        return owner_digest("hf", self.hf_user) if self.hf_user else owner_digest("visitor", self.visitor_id)

    def digests(self) -> set[str]:
        """Every digest whose runs this asker may open (a signed-in visitor keeps the runs of their browser)."""
        mine = {owner_digest("visitor", self.visitor_id)}
        return (mine | {owner_digest("hf", self.hf_user)}) if self.hf_user else mine


def owner_digest(kind: str, key: str) -> str:
    """SHA-256 of an owner key, as written in the run folder."""
    return hashlib.sha256(f"kantele-owner:{kind}:{key}".encode()).hexdigest()


def is_visitor_id(value) -> bool:
    """True for an id new_visitor_id could have made (anything short is guessable, so refused)."""
    return isinstance(value, str) and bool(_VISITOR_ID.match(value))


def new_visitor_id() -> str:
    """A fresh random visitor id."""
    return secrets.token_urlsafe(VISITOR_ID_BYTES)


def ensure_visitor_id(value) -> str:
    """The browser's stored id when it is a real one, else a new one."""
    return value if is_visitor_id(value) else new_visitor_id()


def record_owner(run_dir: str | Path, owner: Owner) -> None:
    """Mark a run folder as the owner's."""
    write_text_atomic(Path(run_dir) / OWNER_FILE, owner.digest() + "\n")


def read_owner(run_dir: str | Path) -> str | None:
    """The run's owner digest, or None for a run open to everyone."""
    try:
        return (Path(run_dir) / OWNER_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def may_open(run_dir: str | Path, owner: Owner | None) -> bool:
    """True when the asker owns the run, or nobody does."""
    recorded = read_owner(run_dir)
    return recorded is None or (owner is not None and recorded in owner.digests())


def check_owner(run_dir: str | Path, owner: Owner | None) -> Path:
    """The run folder when it exists and the asker may open it; RunAccessError naming the fix otherwise."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and may_open(run_dir, owner):
        return run_dir
    if owner is None:
        raise RunAccessError("this browser is not identified yet -- reload the page")
    raise RunAccessError(f"no run of yours is called '{run_dir.name}' -- pick one from your runs (a run "
                         "belongs to the browser, or the Hugging Face login, that started it)")
