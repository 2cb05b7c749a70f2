"""Parse an LLM's reply that should hold a JSON list of question/answer pairs, repairing what models commonly break."""

from __future__ import annotations

import ast
import json
import re
import warnings
from dataclasses import dataclass, field

from tuning.errors import KanteleError

# Key names in priority order; matched case-insensitively after stripping.
QUESTION_KEYS = ("question", "q", "prompt", "instruction", "query", "input")
ANSWER_KEYS = ("answer", "a", "response", "output", "reply", "completion")
ALPACA_INSTRUCTION, ALPACA_INPUT = "instruction", "input"
EXPECTED = 'a JSON list like [{"question": "...", "answer": "..."}]'
MAX_WRAPPER_DEPTH = 3  # {"data": {"pairs": [...]}} is as deep as real replies nest; deeper is not a pair list
MAX_REASONS_SHOWN = 5  # enough to see the pattern in an error without flooding the log
PREVIEW_CHARS = 80

THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
FENCED = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)  # \Z: a reply cut off inside its fence
FENCE_MARK = re.compile(r"```[^\n`]*")
OPENER = re.compile(r"[\[{]")
ITEM_GAP = re.compile(r"[\s,]*")
TRAILING_COMMA = re.compile(r",(\s*[\]}])")
SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})
CLOSERS = {"[": "]", "{": "}"}
# "1. Q: ...", "**Question 2:** ...", "- A: ..." — a colon is required so prose like "A. Lönnrot" is not an answer.
QA_LINE = re.compile(
    r"^\s*(?:[-*#>]+\s*)?(?:\d+\s*[.)]\s*)?[*_]*\s*(q|question|a|answer)\s*\d*\s*[*_]*\s*:\s*[*_]*\s*(.*)$", re.IGNORECASE)
FAILED = object()  # decode() result for text that is no JSON or Python literal (None is a valid value)


class QAParseError(KanteleError, ValueError):
    """The reply holds no usable pairs; the message says what was found and what was expected."""


@dataclass
class ParsedPairs:
    """Usable pairs, one reason per unusable item, and the repairs the reply needed."""

    pairs: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


def parse_qa_reply(text: str) -> ParsedPairs:
    """Read question/answer pairs from a model reply; raise QAParseError when none are usable."""
    if not isinstance(text, str):
        raise QAParseError(f"expected the reply as text, got {type(text).__name__} — pass the generated string")
    if not text.strip():
        raise QAParseError(f"the reply is empty — expected {EXPECTED}; check max_new_tokens and stop strings")
    body, repaired = strip_thinking(text)
    if not body.strip():
        raise QAParseError(f"the reply is only a <think> block — expected {EXPECTED} after it; "
                           "raise max_new_tokens or turn thinking off")
    best = ParsedPairs()
    for variant, notes in list_variants(body):
        result = parse_json_pairs(variant)
        if result.pairs:
            return ParsedPairs(result.pairs, result.skipped, repaired + notes + result.repaired)
        best = best if len(best.skipped) >= len(result.skipped) else result
    result = parse_plain_pairs(FENCE_MARK.sub("", body))
    if result.pairs:
        return ParsedPairs(result.pairs, result.skipped, repaired + result.repaired)
    raise QAParseError(describe_failure(best.skipped or result.skipped, body))


def strip_thinking(text: str) -> tuple[str, list[str]]:
    """Remove <think> reasoning, closed or not, and say what was removed."""
    notes = []
    body = THINK_BLOCK.sub("", text)
    if body != text:
        notes.append("removed <think> block")
    # Some chat templates put <think> in the prompt, so the reply holds only the closing tag.
    closes = list(THINK_CLOSE.finditer(body))
    if closes:
        body = body[closes[-1].end():]
        notes.append("removed reasoning before a stray </think>")
    if THINK_OPEN.search(body):
        # Unclosed: the model never ended its reasoning; keep the text, as the list is often inside it.
        body = THINK_OPEN.sub("", body)
        notes.append("removed an unclosed <think> tag")
    return body, notes


def list_variants(body: str) -> list[tuple[str, list[str]]]:
    """Texts to try in order: fenced code first, then the whole reply, each also with smart quotes made plain."""
    variants = []
    fenced = FENCED.findall(body)
    if fenced:
        variants.append(("\n".join(fenced), ["removed ``` code fences"]))
        variants.append((FENCE_MARK.sub("", body), ["removed ``` code fences"]))
    else:
        variants.append((body, []))
    plain = [(text.translate(SMART_QUOTES), notes + ["replaced smart quotes with plain ones"])
             for text, notes in variants if text.translate(SMART_QUOTES) != text]
    return variants + plain


def parse_json_pairs(text: str) -> ParsedPairs:
    """Read pairs from every JSON (or Python literal) value in the text."""
    values, repaired = collect_values(text)
    items, notes = gather_items(values)
    result = ParsedPairs(repaired=repaired + notes)
    for number, item in enumerate(items, start=1):
        pair, reason = read_pair(item, number)
        if pair:
            result.pairs.append(pair)
        else:
            result.skipped.append(reason)
    return result


def collect_values(text: str) -> tuple[list, list[str]]:
    """Decode each bracketed value in the text; salvage the complete items of an array cut off at the end."""
    values, notes, known = [], [], {}
    position = 0
    while match := OPENER.search(text, position):
        start = match.start()
        end, complete = find_value_end(text, start, known)
        if complete:
            value = decode(text[start:end], notes)
            if value is not FAILED:
                values.append(value)
                position = end
                continue
        elif end != -1 and text[start] == "[":
            salvage_notes = []
            items = salvage_items(text, start + 1, salvage_notes, known)
            if any(isinstance(item, dict) for item in items):
                values.append(items)
                add_note(notes, f"closed a truncated array (kept {len(items)} complete items)")
                for note in salvage_notes:
                    add_note(notes, note)
                break  # the text ended inside this array, so nothing after it is complete
        position = start + 1
    return values, notes


def find_value_end(text: str, start: int, known: dict) -> tuple[int, bool]:
    """Return (index after the balanced value at start, whether it closed); index -1 on mismatched brackets."""
    if start in known:
        return known[start]
    # Every bracket met on the way ends the same way when scanned on its own, so remembering them all in
    # `known` scans each bracket about once: bracket-heavy garbage stays linear instead of quadratic.
    open_at, quote, index = [], None, start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in CLOSERS:
            open_at.append(index)
        elif char in "]}":
            opener = open_at.pop()
            if char != CLOSERS[text[opener]]:
                known.update(dict.fromkeys([*open_at, opener], (-1, False)))
                return -1, False
            known[opener] = (index + 1, True)
            if not open_at:
                return index + 1, True
        index += 1
    known.update(dict.fromkeys(open_at, (len(text), False)))
    return len(text), False


def salvage_items(text: str, position: int, notes: list[str], known: dict) -> list:
    """Decode the complete bracketed items of an array from position on, stopping at the first incomplete one."""
    items = []
    while True:
        position = ITEM_GAP.match(text, position).end()
        if position >= len(text) or text[position] not in CLOSERS:
            return items
        end, complete = find_value_end(text, position, known)
        value = decode(text[position:end], notes) if complete else FAILED
        if value is FAILED:
            return items
        items.append(value)
        position = end


def decode(snippet: str, notes: list[str]) -> object:
    """Decode JSON, then JSON without trailing commas, then a Python literal; FAILED when none fits."""
    try:
        return json.loads(snippet)
    except (ValueError, RecursionError):
        pass
    fixed = TRAILING_COMMA.sub(r"\1", snippet)
    if fixed != snippet:
        try:
            value = json.loads(fixed)
        except (ValueError, RecursionError):
            pass
        else:
            add_note(notes, "removed trailing commas")
            return value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes like "\d" warn; the value is still right
            value = ast.literal_eval(fixed)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return FAILED
    add_note(notes, "read Python-style quoting (single quotes)")
    return value


def gather_items(values: list) -> tuple[list, list[str]]:
    """Flatten decoded values into candidate pair items, unwrapping {"pairs": [...]}-style objects."""
    items, notes, loose_objects, lists = [], [], 0, 0
    for value in values:
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            items.extend(value)
            lists += 1
        elif isinstance(value, dict):
            unwrapped = unwrap(value, notes, MAX_WRAPPER_DEPTH)
            if unwrapped is None:
                items.append(value)
                loose_objects += 1
            else:
                items.extend(unwrapped)
    if loose_objects > 1:
        notes.append("read one JSON object per line (JSON Lines)")
    elif loose_objects == 1 and not lists and len(items) == 1:
        notes.append("wrapped a single object in a list")
    return items, notes


def unwrap(value: dict, notes: list[str], depth: int) -> list | None:
    """Return the object lists inside a wrapper object, or None when the object is itself a pair."""
    if depth <= 0 or find_key(lower_keys(value), QUESTION_KEYS + ANSWER_KEYS):
        return None
    found = None
    for key, inner in value.items():
        if isinstance(inner, list) and any(isinstance(item, dict) for item in inner):
            found = (found or []) + inner
            add_note(notes, f"unwrapped the list under {str(key)!r}")
        elif isinstance(inner, dict):
            nested = unwrap(inner, notes, depth - 1)
            if nested is not None:
                found = (found or []) + nested
    return found


def read_pair(item: object, number: int) -> tuple[dict | None, str]:
    """Return ({"question", "answer"}, "") for a usable item, else (None, a reason naming the item)."""
    if not isinstance(item, dict):
        return None, f"item {number}: a {type(item).__name__}, expected an object with question and answer"
    fields = lower_keys(item)
    question, problem = read_text(fields, QUESTION_KEYS, "question")
    if not problem:
        answer, problem = read_text(fields, ANSWER_KEYS, "answer")
    if problem:
        return None, f"item {number}: {problem}"
    extra = fields.get(ALPACA_INPUT)
    if find_key(fields, QUESTION_KEYS) == ALPACA_INSTRUCTION and isinstance(extra, str) and extra.strip():
        question = f"{question}\n\n{extra.strip()}"  # Alpaca rows put the question's context in "input"
    return {"question": question, "answer": answer}, ""


def read_text(fields: dict, keys: tuple[str, ...], role: str) -> tuple[str, str]:
    """Return (stripped text, "") for the first of keys present, else ("", why it is unusable)."""
    key = find_key(fields, keys)
    if key is None:
        found = ", ".join(fields) or "none"
        return "", f"no {role} field (keys: {found}; expected one of {', '.join(keys)})"
    value = fields[key]
    if isinstance(value, bool) or value is None:
        return "", f"{role} is {json.dumps(value)}, expected text"
    if isinstance(value, (int, float)):
        try:
            value = str(value)
        except ValueError:  # ints past Python's digit limit refuse str()
            return "", f"{role} is a number too long to write out"
    if not isinstance(value, str):
        return "", f"{role} is a {type(value).__name__}, expected text"
    if not value.strip():
        return "", f"{role} is empty"
    return value.strip(), ""


def lower_keys(item: dict) -> dict:
    """Return the object with keys stripped and lower-cased, so "Q", " Question " and "q" all match."""
    return {str(key).strip().lower(): value for key, value in item.items()}


def find_key(fields: dict, keys: tuple[str, ...]) -> str | None:
    """Return the first of keys present in fields."""
    return next((key for key in keys if key in fields), None)


def add_note(notes: list[str], note: str) -> None:
    """Append a note once."""
    if note not in notes:
        notes.append(note)


def parse_plain_pairs(text: str) -> ParsedPairs:
    """Read numbered "Q: … A: …" plain text, the last resort when the reply holds no JSON."""
    found, current, target = [], None, None
    for line in text.splitlines():
        match = QA_LINE.match(line)
        if match and match.group(1).lower() in ("q", "question"):
            current = {"question": match.group(2), "answer": None}
            found.append(current)
            target = "question"
        elif match and current is not None and current["answer"] is None:
            current["answer"], target = match.group(2), "answer"
        elif match:
            found.append({"question": None, "answer": match.group(2)})
            current, target = None, None
        elif not line.strip():
            target = None  # a blank line ends a multi-line question or answer, so closing prose is not kept
        elif target:
            current[target] += "\n" + line
    result = ParsedPairs(repaired=["read plain-text Q:/A: lines (no JSON found)"] if found else [])
    for number, pair in enumerate(found, start=1):
        question, answer = (pair["question"] or "").strip(), (pair["answer"] or "").strip()
        if question and answer:
            result.pairs.append({"question": question, "answer": answer})
        else:
            result.skipped.append(f"pair {number}: {'no answer' if question else 'no question'} in Q:/A: text")
    return result


def describe_failure(skipped: list[str], body: str) -> str:
    """Say what the reply held instead of usable pairs, and what was expected."""
    if skipped:
        shown = "; ".join(skipped[:MAX_REASONS_SHOWN])
        more = f" (and {len(skipped) - MAX_REASONS_SHOWN} more)" if len(skipped) > MAX_REASONS_SHOWN else ""
        return f"no usable question/answer pairs: {shown}{more} — expected {EXPECTED}"
    preview = body.strip()[:PREVIEW_CHARS]
    return (f"found no JSON list or Q:/A: lines in the reply (it starts: {preview!r}) — expected {EXPECTED}; "
            "ask the model to answer with only the JSON list")
