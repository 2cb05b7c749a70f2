"""Recognize a raw row's shape (prompt/response, alpaca, ShareGPT, messages, ...) and normalize it to chat messages."""

from __future__ import annotations

import json

from tuning.data.files import (
    ROW,
    ROW_EXAMPLE,
    SHAPE_KEYS,
    DataError,
    RowError,
    describe_kind,
    loads_json,
    one_line,
)

KEY_FACTS_FIELD = "key_facts"
KEY_FACTS_SEPARATOR = ";"
PASSTHROUGH_FIELDS = (KEY_FACTS_FIELD, "source", "id")  # kept on the example (validation key facts, provenance)
SYSTEM_FIELD = "system"
ALPACA_INPUT_FIELD = "input"

CHAT_SHAPES = ("messages", "sharegpt")
EXPECTED_SHAPES = (
    "prompt/response, question/answer, instruction/output, prompt/completion, conversations (ShareGPT) or messages"
)
# (role key, content key) per chat column; each column also accepts the other's names, as real exports mix them.
TURN_KEYS = {"messages": ("role", "content"), "conversations": ("from", "value")}
ALLOWED_ROLES = {"messages": "system, user or assistant", "conversations": "human, gpt or system (or user, assistant)"}
ROLE_NAMES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}

PROMPT_FIX = "write the question the user asks"
ANSWER_FIX = "write the answer the model should give"
SYSTEM_FIX = "write the system prompt or leave the field out"
TURN_FIX = {"user": PROMPT_FIX, "assistant": ANSWER_FIX, "system": SYSTEM_FIX}
TURNS_EXAMPLE = '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'


def normalize_row(row: dict, row_number: int) -> dict:
    """Turn one raw row of any supported shape into {"messages": [...], ...passthrough}."""
    return normalize_row_with_shape(row, row_number)[0]


def normalize_row_with_shape(row, number: int) -> tuple[dict, str, list[str]]:
    """Return (example, shape name, names of fields that held data but were not used)."""
    if not isinstance(row, dict):
        _fail(
            number,
            ROW,
            f"expected an object, got {describe_kind(row)} — each row is an object like {ROW_EXAMPLE}",
        )
    row = _lower_keys(row, number, "")
    shape = _detect_shape(row, number)
    if shape in CHAT_SHAPES:
        messages = _read_turns(row, SHAPE_KEYS[shape][0], number)
    else:
        messages = _read_pair(row, shape, number)
    system = _read_text(row, SYSTEM_FIELD, number, SYSTEM_FIX, optional=True)
    if system:
        if messages[0]["role"] == "system":
            _fail(number, SYSTEM_FIELD, "the conversation already starts with a system turn — keep one of the two")
        messages.insert(0, {"role": "system", "content": system})
    example = {"messages": messages}
    example.update({k: row[k] for k in PASSTHROUGH_FIELDS if not is_blank(row.get(k))})
    for key in PASSTHROUGH_FIELDS:
        if key in example:
            _check_writable(json.dumps(example[key], ensure_ascii=False), number, key)
    if isinstance(example.get(KEY_FACTS_FIELD), str):
        _split_key_facts(example)
    used = {*SHAPE_KEYS[shape], SYSTEM_FIELD, *PASSTHROUGH_FIELDS} | (
        {ALPACA_INPUT_FIELD} if shape == "alpaca" else set()
    )
    ignored = [k for k, v in row.items() if k not in used and not is_blank(v)]
    return example, shape, ignored


def is_blank(value) -> bool:
    """True for None, whitespace-only text and empty lists or objects: a field that holds no data."""
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, (list, dict)) and not value)
    )


def _split_key_facts(example: dict) -> None:
    # a spreadsheet cell can't hold a list, so "Lönnrot; 1835" stands for two facts; the scorer needs a list,
    # and would otherwise treat each character of the text as a fact
    facts = [f.strip() for f in example[KEY_FACTS_FIELD].split(KEY_FACTS_SEPARATOR) if f.strip()]
    if facts:
        example[KEY_FACTS_FIELD] = facts
    else:
        del example[KEY_FACTS_FIELD]  # only separators: no facts, the same as a blank cell


def _detect_shape(row: dict, number: int) -> str:
    def score(shape):
        keys = SHAPE_KEYS[shape]
        filled = sum(not is_blank(row.get(k)) for k in keys)
        return filled == len(keys), filled, sum(k in row for k in keys)

    complete = [s for s in SHAPE_KEYS if score(s)[0]]
    if len(complete) > 1:
        _fail(
            number,
            ROW,
            f"fits several shapes ({' and '.join(complete)}) — keep the fields of one, so no answer is lost",
        )
    best = max(SHAPE_KEYS, key=score)  # max keeps the first of equals, so SHAPE_KEYS order breaks ties
    if not score(best)[2]:
        _fail(
            number, ROW, f"unknown shape: found {_names(row)} — expected one of {EXPECTED_SHAPES}{_delimiter_hint(row)}"
        )
    return best


def _read_pair(row: dict, shape: str, number: int) -> list[dict]:
    prompt_key, answer_key = SHAPE_KEYS[shape]
    prompt = _read_text(row, prompt_key, number, PROMPT_FIX)
    if shape == "alpaca":
        extra = _read_text(row, ALPACA_INPUT_FIELD, number, PROMPT_FIX, optional=True)
        if extra:
            prompt = f"{prompt}\n\n{extra}"
    answer = _read_text(row, answer_key, number, ANSWER_FIX)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _read_turns(row: dict, key: str, number: int) -> list[dict]:
    value = row[key]
    if is_blank(value):
        _fail(number, key, f"empty — write the conversation as a list of turns like {TURNS_EXAMPLE}")
    if isinstance(value, str):  # a CSV cell holds the turns as JSON text
        try:
            value = loads_json(value)
        except ValueError as e:
            _fail(number, key, f"not valid JSON ({e}) — the cell should hold a list like {TURNS_EXAMPLE}")
    if not isinstance(value, list) or not value:
        _fail(number, key, f"expected a list of turns, got {describe_kind(value)} — write it like {TURNS_EXAMPLE}")
    turns, roles = [], []
    for i, turn in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            _fail(
                number,
                where,
                f"expected an object, got {describe_kind(turn)} — "
                'write each turn like {"role": "user", "content": "..."}',
            )
        turn = _lower_keys(turn, number, where)
        role_key, content_key = next((k for k in (TURN_KEYS[key], *TURN_KEYS.values()) if k[0] in turn), TURN_KEYS[key])
        role = turn.get(role_key)
        if role is None:
            _fail(
                number,
                f"{where}.{role_key}",
                f"missing — each turn needs {role_key} ({ALLOWED_ROLES[key]}) and {content_key}",
            )
        if not isinstance(role, str) or role.strip().lower() not in ROLE_NAMES:
            _fail(number, f"{where}.{role_key}", f"unknown role {_short(role)} — use {ALLOWED_ROLES[key]}")
        role = ROLE_NAMES[role.strip().lower()]
        content = _read_text(
            turn,
            content_key,
            number,
            TURN_FIX[role],
            field_name=f"{where}.{content_key}",
            missing=f"each turn needs {role_key} and {content_key}",
        )
        turns.append({"role": role, "content": content})
        roles.append((f"{where}.{role_key}", role))
    _check_turn_order(roles, key, number)
    return turns


def _check_turn_order(roles: list[tuple[str, str]], key: str, number: int) -> None:
    """Fail unless the turns run: optional system, a user question, ..., the assistant's answer last."""
    for i, (where, role) in enumerate(roles):
        if role == "system" and i > 0:
            _fail(number, where, "a system turn must come first — move it to the start of the conversation")
    assistants = [i for i, (_, role) in enumerate(roles) if role == "assistant"]
    if not assistants:
        _fail(number, key, "no assistant turn — end the conversation with the answer the model should give")
    if not any(role == "user" for _, role in roles[: assistants[0]]):
        _fail(
            number,
            roles[assistants[0]][0],
            "assistant turn before any user turn — start with the user's question (after an optional system turn)",
        )
    if roles[-1][1] != "assistant":
        _fail(
            number,
            roles[-1][0],
            f"the last turn is from the {roles[-1][1]} — "
            "end with the assistant's answer (add it or drop the trailing turn)",
        )


def _read_text(holder: dict, key: str, number: int, fix: str, field_name=None, optional=False, missing=None) -> str:
    """Return holder[key] as stripped text, or fail naming the field and the fix."""
    field_name = field_name or key
    if key not in holder:
        if optional:
            return ""
        _fail(
            number,
            field_name,
            f"missing '{key}' — " + (missing or f"expected one of {EXPECTED_SHAPES}; found {_names(holder)}"),
        )
    value = holder[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return ""
        _fail(number, field_name, f"empty — {fix}")
    if not isinstance(value, str):
        _fail(number, field_name, f"expected text, got {describe_kind(value)} — write it as a quoted string")
    _check_writable(value, number, field_name)
    return value.strip()


def _check_writable(text: str, number: int, field_name: str) -> None:
    """Fail on a lone surrogate escape (JSON's "\\ud800"): it loads, but the cleaned set could never be saved."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        _fail(
            number,
            field_name,
            f"holds {text[e.start]!r}, half of a character pair, which no text file can store — "
            "remove that escape or write the character itself",
        )


def _lower_keys(mapping: dict, number: int, where: str) -> dict:
    """Key names ignore case and surrounding spaces; two keys that collide would lose one, so fail."""
    out, original = {}, {}
    for key, value in mapping.items():
        name = str(key).strip().lower()
        if name in out:
            _fail(
                number,
                one_line(f"{where}.{name}" if where else name or "(unnamed)"),
                f"the fields {_short(original[name])} and {_short(key)} are the same name "
                "(names ignore case) — keep one",
            )
        out[name], original[name] = value, key
    return out


def _fail(number: int, field_name: str, message: str):
    error = RowError(number, field_name, message)
    raise DataError(str(error), [error])


def _names(mapping: dict) -> str:
    return "fields " + ", ".join(_short(k) for k in mapping) if mapping else "no fields"


def _delimiter_hint(row: dict) -> str:
    if any(";" in k or "\t" in k for k in row):
        return " (the file may separate columns with ';' or tabs — save it as comma-separated)"
    return ""


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
