"""A Hugging Face Hub dataset as a recipe names it: `hub:OWNER/NAME[@REVISION][:CONFIG]:SPLIT[?ROLE=COLUMN&...&rows=N]`.

Parsed and checked before any request (tuning.data.hub_dataset fetches it): the id is an OWNER/NAME Hub id and
nothing else -- never a path or a URL, since datasets would read a local folder of that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from tuning.data.files import DataError, one_line

HUB_PREFIX = "hub:"
DEFAULT_SPLIT = "train"
SPEC_SYNTAX = "hub:OWNER/NAME[@REVISION][:CONFIG]:SPLIT[?prompt=COLUMN&response=COLUMN&rows=N]"
# OWNER/NAME as the Hub spells ids: letters, digits, '-', '_', '.', each part at most 96 characters; the
# '..' and '--' checks are huggingface_hub's validate_repo_id, run after this.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
DATASET_ID = re.compile(rf"{_PART}/{_PART}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a config or split name; a branch or tag below
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}")
MAX_COLUMN_CHARS = 200
# The roles a column may take: the question (and an Alpaca-style extra input), the answer, a system prompt, or a
# whole conversation.
ROLES = ("prompt", "input", "response", "system", "messages")
ROWS_OPTION = "rows"


class HubDatasetError(DataError):
    """A Hub dataset that can't be loaded as asked; one line naming the dataset and the fix."""


class HubOfflineError(HubDatasetError):
    """The Hub is switched off (HF_HUB_OFFLINE) or can't be reached."""


class HubDatasetNotFoundError(HubDatasetError):
    """The dataset (or its config, split or revision) isn't there, or the token may not see it."""


@dataclass(frozen=True)
class HubDatasetSpec:
    """One Hub dataset split as a recipe names it; `columns` maps a role (ROLES) to a column, `rows` takes the
    first rows only (None: all, within the limits)."""

    repo_id: str
    split: str = DEFAULT_SPLIT
    config: str | None = None
    revision: str | None = None
    columns: dict[str, str] = field(default_factory=dict, hash=False)
    rows: int | None = None

    def __str__(self) -> str:
        name = self.repo_id + (f"@{self.revision}" if self.revision else "")
        text = HUB_PREFIX + name + (f":{self.config}" if self.config else "") + f":{self.split}"
        options = [(role, self.columns[role]) for role in ROLES if role in self.columns]
        options += [(ROWS_OPTION, str(self.rows))] if self.rows else []
        return text + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in options) if options else "")

    @property
    def label(self) -> str:
        """The short name messages use: hub:OWNER/NAME[:CONFIG]:SPLIT."""
        return f"{HUB_PREFIX}{self.repo_id}" + (f":{self.config}" if self.config else "") + f":{self.split}"


def is_hub_spec(entry) -> bool:
    """True for a data entry that names a Hub dataset (hub:...) rather than a file."""
    return isinstance(entry, str) and entry.startswith(HUB_PREFIX)


def check_dataset_id(repo_id) -> str:
    """repo_id itself when it is an OWNER/NAME Hub dataset id; HubDatasetError otherwise, before any request.
    Never a path (datasets reads a local folder of that name), a URL, '..', or more than two parts."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = repo_id if isinstance(repo_id, str) else ""
    ok = bool(DATASET_ID.fullmatch(text)) and ".." not in text and "--" not in text
    if ok:
        try:
            validate_repo_id(text)
        except HFValidationError:
            ok = False
    if not ok:
        shown = one_line(str(repo_id))[:120]
        raise HubDatasetError(f"'{shown}' is not a Hub dataset id — write it as OWNER/NAME, e.g. "
                              "tatsu-lab/alpaca (letters, digits, '-', '_', '.'; no paths or addresses)")
    return text


def hub_spec(repo_id: str, split: str = "", config: str = "", revision: str = "",
             columns: dict[str, str] | None = None, rows: int | None = None) -> HubDatasetSpec:
    """A checked spec from its parts (the Data tab's boxes): blanks take the defaults."""
    repo_id = check_dataset_id((repo_id or "").strip())
    label = f"{HUB_PREFIX}{repo_id}"
    split = _checked(NAME, (split or "").strip() or DEFAULT_SPLIT, "split", label)
    config = _checked(NAME, (config or "").strip(), "config", label) if (config or "").strip() else None
    revision = _checked(REVISION, (revision or "").strip(), "revision", label) if (revision or "").strip() else None
    if revision and ".." in revision:
        raise HubDatasetError(f"{label}: the revision '{one_line(revision)}' holds '..' — name a branch, tag or commit")
    checked = {}
    for role, column in (columns or {}).items():
        if role not in ROLES:
            raise HubDatasetError(f"{label}: '{one_line(str(role))[:40]}' is not a column role — use any of "
                                  f"{', '.join(ROLES)} (or {ROWS_OPTION}=N)")
        column = str(column or "").strip()
        if column:
            if len(column) > MAX_COLUMN_CHARS or not column.isprintable():
                raise HubDatasetError(f"{label}: the column for {role} is not a column name — "
                                      f"use one of the dataset's columns")
            checked[role] = column
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise HubDatasetError(f"{label}: {ROWS_OPTION}={rows!r} — take a number of rows of 1 or more, or leave it out")
    check_roles(checked, label)
    return HubDatasetSpec(repo_id, split, config, revision, checked, rows or None)


def parse_hub_spec(text: str) -> HubDatasetSpec:
    """The spec a recipe entry names (SPEC_SYNTAX); HubDatasetError naming the syntax when it is malformed."""
    if not is_hub_spec(text):
        raise HubDatasetError(f"'{one_line(str(text))[:120]}' is not a Hub dataset — write {SPEC_SYNTAX}")
    body, _, query = text[len(HUB_PREFIX):].partition("?")
    name, *parts = body.split(":")
    repo_id, _, revision = name.partition("@")
    if len(parts) > 2:
        raise HubDatasetError(f"'{one_line(text)[:120]}' has too many ':' parts — write {SPEC_SYNTAX}")
    config, split = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else "")
    if config == "" or (parts and split == ""):
        raise HubDatasetError(f"'{one_line(text)[:120]}' has an empty config or split — write {SPEC_SYNTAX}")
    columns, rows = {}, None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=len(ROLES) + 1)
    except ValueError:
        raise HubDatasetError(f"'{one_line(text)[:120]}': the options after '?' are not ROLE=COLUMN pairs "
                              f"joined by '&' — write {SPEC_SYNTAX}") from None
    for key, value in pairs:
        if key == ROWS_OPTION:
            rows = int(value) if value.isdigit() else value
        else:
            columns[key] = value
    return hub_spec(repo_id, split or DEFAULT_SPLIT, config or "", revision, columns, rows)  # type: ignore[arg-type]


def _checked(pattern: re.Pattern, value: str, what: str, label: str) -> str:
    if not pattern.fullmatch(value):
        raise HubDatasetError(f"{label}: '{one_line(value)[:60]}' is not a {what} name — use letters, digits, "
                              "'-', '_' and '.'")
    return value


def check_roles(columns: dict[str, str], label: str) -> None:
    if "messages" in columns and ({"prompt", "input", "response"} & set(columns)):
        raise HubDatasetError(f"{label}: name either a messages column or prompt and response columns, not both")
    if "messages" not in columns and columns and not {"prompt", "response"} <= set(columns):
        raise HubDatasetError(f"{label}: name both the prompt and the response column (or one messages column)")
