"""Bad-input fuzzing shared by tests/data/test_fuzz_input.py and bench/reliability_input.py: hypothesis strategies
for data files and model replies, the rules every outcome must keep, and runners that count the cases.

The rules: the importer returns clean examples or raises DataError, each line of which names the file or
a row and gives a fix after " — "; the QA parser returns usable pairs or raises QAParseError with a fix.
"""

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuning.data.examples import DataError, load_examples, write_jsonl
from tuning.qa.parse import ANSWER_KEYS, QUESTION_KEYS, ParsedPairs, QAParseError, parse_qa_reply

CASES = 10_000  # the issue asks for at least this many generated cases per parser
SUFFIXES = (".jsonl", ".json", ".csv")
MORE_LINE = re.compile(r"\.\.\. and \d+ more")
ROW_MENTION = re.compile(r"\brow \d+\b")
SHAPE_FIELDS = ["prompt", "response", "question", "answer", "instruction", "input", "output", "completion",
                "conversations", "messages", "system", "key_facts", "source", "id"]
TURN_FIELDS = ["role", "content", "from", "value"]
ROLES = ["user", "assistant", "system", "human", "gpt", "bot", " User ", ""]
# Characters that break naive readers: quotes, separators, line ends of every kind, a BOM, NUL, escapes.
# "\ud800" is a lone surrogate: JSON can carry it as an escape, though no UTF-8 text can hold it.
TRICKY = list('"\',;\t\n\r\\{}[]: aQ?') + ["\ufeff", "\x00", "\u2028", "\u00e4", "\U0001f600", "\ud800"]
TRICKY_PIECES = ["\\udfff", " — ", '""', "\r\n", "[{", "}]", '{"role": "user"}']


def fuzz_settings(cases: int):
    """Deterministic settings for a fuzz run of `cases` generated inputs (same cases on every machine)."""
    return settings(max_examples=cases, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# --- data files ----------------------------------------------------------------------------------

# text of one draw each (per-character draws made generating a case cost more than checking it)
tricky_text = st.one_of(st.text(st.sampled_from(TRICKY), max_size=10), st.text(max_size=8),
                        st.sampled_from(TRICKY_PIECES))
field_names = st.one_of(st.sampled_from(SHAPE_FIELDS + TURN_FIELDS), st.sampled_from(SHAPE_FIELDS).map(str.upper),
                        st.sampled_from(SHAPE_FIELDS).map(lambda k: f" {k.title()} "), tricky_text)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from(ROLES),
                    st.sampled_from(["", "  ", "Who forged the Sampo?", "Ilmarinen."]), tricky_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(field_names, inner, max_size=4)),
                           max_leaves=6)
turns = st.dictionaries(st.sampled_from(TURN_FIELDS + ["Role", " content "]),
                        st.one_of(st.sampled_from(ROLES), scalars), max_size=3)
# a field of a real shape: good text, blank, the wrong type, or turns (right or wrong for the field)
field_values = st.one_of(st.sampled_from(["Who forged the Sampo?", "Ilmarinen.", "", "   "]), scalars,
                         st.lists(st.one_of(turns, scalars), max_size=4), json_values)


@st.composite
def shaped_rows(draw) -> dict:
    """A row holding a real shape's fields (some wrong-typed, blank or missing) plus random extras."""
    shape = draw(st.sampled_from([("prompt", "response"), ("question", "answer"), ("instruction", "output"),
                                  ("prompt", "completion"), ("messages",), ("conversations",)]))
    row = {key: draw(field_values) for key in shape if draw(st.integers(0, 9))}  # a field left out 1 time in 10
    extras = draw(st.dictionaries(field_names, field_values, max_size=3))
    return {**extras, **row}


rows = st.one_of(shaped_rows(), st.dictionaries(field_names, json_values, max_size=5))
good_text = st.tuples(st.sampled_from(["Who forged the Sampo?", "Ilmarinen", "Louhi", "Väinämöinen"]),
                      tricky_text).map("".join)


@st.composite
def good_rows(draw) -> dict:
    """A row of a real shape with text in every field (the text itself may still be odd)."""
    question, answer = draw(good_text), draw(good_text)
    shape = draw(st.sampled_from(["pair", "messages", "sharegpt"]))
    if shape == "messages":
        row = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    elif shape == "sharegpt":
        row = {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    else:
        keys = draw(st.sampled_from([("prompt", "response"), ("Question", "ANSWER"), ("instruction", "output")]))
        row = dict(zip(keys, (question, answer)))
    extras = {"system": good_text, "key_facts": st.one_of(tricky_text, st.lists(good_text, max_size=2)),
              "source": good_text, "id": st.integers()}
    row.update(draw(st.fixed_dictionaries({}, optional=extras)))
    return row


@st.composite
def good_files(draw) -> tuple[str, bytes]:
    """One to three good rows as .jsonl, .json or .csv (chat turns as JSON text in a cell, as exports do)."""
    items = draw(st.lists(good_rows(), min_size=1, max_size=3))
    suffix = draw(st.sampled_from(SUFFIXES))
    if suffix == ".jsonl":
        text = "".join(json.dumps(item) + "\n" for item in items)
    elif suffix == ".json":
        text = json.dumps(items, ensure_ascii=False)
    else:
        columns = list(dict.fromkeys(key for item in items for key in item))
        out = io.StringIO()
        csv.writer(out).writerows([columns, *[[_cell(item.get(key)) for key in columns] for item in items]])
        text = out.getvalue()
    return suffix, text.encode("utf-8", "surrogatepass")


def _json_document(items: list, wrapper: str) -> object:
    return {"array": items, "data": {"data": items}, "by_id": {f"q{i}": r for i, r in enumerate(items)},
            "one": items[0] if items else {}}[wrapper]


json_files = st.tuples(st.lists(st.one_of(rows, json_values), max_size=4),
                       st.sampled_from(["array", "data", "by_id", "one"]), st.booleans()).map(
    lambda t: (".json", json.dumps(_json_document(t[0], t[1]), ensure_ascii=t[2]).encode("utf-8", "surrogatepass")))
any_json_file = json_values.map(lambda v: (".json", json.dumps(v).encode("utf-8", "surrogatepass")))
jsonl_lines = st.one_of(rows.map(json.dumps), json_values.map(json.dumps), tricky_text)
jsonl_files = st.tuples(st.lists(jsonl_lines, max_size=5), st.sampled_from(["\n", "\r\n"])).map(
    lambda t: (".jsonl", t[1].join(t[0]).encode("utf-8", "surrogatepass")))


def _cell(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else "" if value is None else str(value)


@st.composite
def csv_files(draw) -> tuple[str, bytes]:
    """A CSV table: quoted properly or naively joined, cells with quotes, commas and line breaks."""
    header = draw(st.lists(field_names, min_size=1, max_size=4))
    table = [[_cell(draw(field_values)) if draw(st.booleans()) else draw(tricky_text) for _ in header]
             for _ in range(draw(st.integers(0, 5)))]
    table = [row[: draw(st.integers(0, len(row) + 1))] + draw(st.lists(tricky_text, max_size=1)) for row in table]
    if draw(st.booleans()):
        out = io.StringIO()
        csv.writer(out).writerows([header, *table])
        text = out.getvalue()
    else:
        text = "\n".join(",".join(row) for row in [header, *table])
    return ".csv", text.encode("utf-8", "surrogatepass")


random_bytes = st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=200))


@st.composite
def mutated(draw, files) -> tuple[str, bytes]:
    """A file, then maybe a BOM in front, cut short, a stray byte, or its lines repeated (duplicate-only)."""
    suffix, data = draw(files)
    kind = draw(st.sampled_from(["none", "none", "bom", "cut", "byte", "repeat"]))
    if kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "byte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at:]
    elif kind == "repeat":
        lines = data.split(b"\n")
        data = b"\n".join(lines[:1] + lines[1:2] * draw(st.integers(2, 5)))
    return suffix, data


# good files twice: one in about five cases then loads, so the checks on loaded data run often too
data_files = mutated(st.one_of(good_files(), good_files(), jsonl_files, json_files, csv_files(), any_json_file,
                               random_bytes))


def check_rejection(error: DataError, name: str) -> None:
    """Every line of the message names the file or a row and gives a fix after the dash; it can be shown."""
    text = str(error)
    text.encode("utf-8")  # a lone surrogate in a message would crash the page that shows it
    for line in text.split("\n"):
        if MORE_LINE.fullmatch(line):
            continue
        assert name in line or ROW_MENTION.search(line), f"names neither the file nor a row: {line!r}"
        assert " — " in line and line.split(" — ", 1)[1].strip(), f"no fix after ' — ': {line!r}"
    for row_error in error.errors:
        assert isinstance(row_error.row, int) and row_error.row >= 1 and row_error.field, row_error
        assert " — " in row_error.message, row_error


def check_loaded(loaded, folder: Path) -> None:
    """Loaded examples are clean chats that can be written, and what is written loads back the same."""
    report = loaded.report
    assert loaded.examples and report.kept == len(loaded.examples)
    "\n".join([report.summary(), *report.notes]).encode("utf-8")  # the Data tab and the train log show these
    assert report.rows_read == report.kept + report.empty + report.duplicates_removed
    for example in loaded.examples:
        roles = [m["role"] for m in example["messages"]]
        assert roles[-1] == "assistant" and "user" in roles and set(roles) <= {"system", "user", "assistant"}
        assert all(isinstance(m["content"], str) and m["content"] == m["content"].strip() and m["content"]
                   for m in example["messages"])
    cleaned = folder / "cleaned.jsonl"
    write_jsonl(loaded.examples, cleaned)
    def canonical(examples):  # compared as JSON text: a NaN id never equals itself
        return json.dumps(examples, sort_keys=True, ensure_ascii=False)

    assert canonical(load_examples(cleaned).examples) == canonical(loaded.examples)


def check_import(folder: Path, suffix: str, data: bytes) -> str:
    """Load one file: 'loaded', 'rejected: rows' or 'rejected: file'; else AssertionError or the exception."""
    path = folder / f"upload{suffix}"
    path.write_bytes(data)
    try:
        loaded = load_examples(path, max_tokens=64, count_tokens=lambda messages: len(str(messages)) // 4)
    except DataError as error:
        check_rejection(error, path.name)
        return "rejected: rows" if error.errors else "rejected: file"
    check_loaded(loaded, folder)
    return "loaded"


# --- model replies -------------------------------------------------------------------------------

REPLY_FRAGMENTS = ['[', ']', '{', '}', '"q"', ':', ',', '"a"', "'x'", '```json', '```', '<think>', '</think>',
                   ' ', 'Q:', 'A:', '1.', '**', '\n', '“', '”', '"question"', '"answer"', 'null', '0x1f']
pair_keys = st.one_of(st.sampled_from(QUESTION_KEYS + ANSWER_KEYS), st.sampled_from(QUESTION_KEYS).map(str.title),
                      tricky_text)
pair_items = st.one_of(st.dictionaries(pair_keys, json_values, max_size=4), json_values)


@st.composite
def structured_replies(draw) -> str:
    """A reply like a model's: pairs as JSON or Python, maybe wrapped, fenced, thought about, cut or prosy."""
    items = draw(st.lists(pair_items, max_size=5))
    wrapped = draw(st.sampled_from([items, {"pairs": items}, {"data": {"qa": items}}, items[:1]]))
    body = draw(st.sampled_from([json.dumps, repr]))(wrapped)
    if draw(st.booleans()):
        body = body.replace(", ", ",\n ").replace("}", ",}").replace("]", ",]")  # trailing commas
    if draw(st.booleans()):
        body = f"```json\n{body}\n```"
    if draw(st.booleans()):
        body = f"<think>{draw(tricky_text)}</think>\n{body}"
    if draw(st.booleans()):
        body = body.replace('"', draw(st.sampled_from(['“', '”'])))
    if draw(st.booleans()) and body:
        body = body[: draw(st.integers(0, len(body)))]
    return f"{draw(tricky_text)}{body}{draw(tricky_text)}"


plain_replies = st.lists(st.tuples(st.sampled_from(["Q:", "A:", "Question 1:", "**A:**", "1. Q:", "- A:"]),
                                   tricky_text), max_size=6).map(lambda t: "\n".join(f"{m} {x}" for m, x in t))
replies = st.one_of(st.text(), st.lists(st.sampled_from(REPLY_FRAGMENTS)).map("".join), structured_replies(),
                    plain_replies)


def check_reply(text: str) -> str:
    """Parse one reply: 'pairs' or 'rejected', or AssertionError / the unexpected exception."""
    try:
        result = parse_qa_reply(text)
    except QAParseError as error:
        assert " — " in str(error), f"no fix in {str(error)!r}"
        return "rejected"
    assert isinstance(result, ParsedPairs) and result.pairs
    for pair in result.pairs:
        assert set(pair) == {"question", "answer"}
        assert all(isinstance(v, str) and v and v == v.strip() for v in pair.values()), pair
    assert all(isinstance(reason, str) for reason in result.skipped + result.repaired)
    return "pairs"


# --- runners -------------------------------------------------------------------------------------


def run_fuzz(strategy, check, cases: int = CASES, count_failures: bool = False) -> tuple[Counter, list[str]]:
    """Run `check` on `cases` generated inputs; return the outcome counts and, when counting, the failures.

    count_failures=False lets a failure raise (hypothesis then shrinks it to a minimal input for the test
    report); True records it as 'broke a rule' (AssertionError) or 'unhandled: <exception>' and goes on.
    """
    outcomes, failures = Counter(), []

    @fuzz_settings(cases)
    @given(strategy)
    def case(value):
        try:
            outcomes[check(value)] += 1
        except Exception as exc:
            if not count_failures:
                raise
            broke = isinstance(exc, AssertionError)
            outcomes["broke a rule" if broke else f"unhandled: {type(exc).__name__}"] += 1
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]} for {value!r:.200}")

    case()
    return outcomes, failures


def run_importer_fuzz(folder: Path, cases: int = CASES, count_failures: bool = False):
    """The data importer on `cases` generated files in folder; see run_fuzz."""
    return run_fuzz(data_files, lambda content: check_import(folder, *content), cases, count_failures)


def run_parser_fuzz(cases: int = CASES, count_failures: bool = False):
    """The QA reply parser on `cases` generated replies; see run_fuzz."""
    return run_fuzz(replies, check_reply, cases, count_failures)


# --- by hand: the cases issue 8 names, each with the outcome it must have ------------------------

_PAIR = '{"prompt": "Who forged the Sampo?", "response": "Ilmarinen."}'
HAND_CASES = [
    ("empty file", ".jsonl", b"", "rejected: file"),
    ("BOM before the header", ".csv", b"\xef\xbb\xbfprompt,response\nWho forged the Sampo?,Ilmarinen.\n", "loaded"),
    ("non-UTF-8 (Latin-1) CSV", ".csv", "prompt,response\nMikä on Sampo?,mylly\n".encode("latin-1"), "rejected: file"),
    ("UTF-16 file", ".jsonl", _PAIR.encode("utf-16"), "rejected: file"),
    ("CSV with embedded newlines and quotes", ".csv",
     b'prompt,response\n"Quote the ""first"" line,\nplease","Vaka vanha,\n""tieta\xc3\xa4ja"""\n', "loaded"),
    ("a JSON object instead of rows", ".json", b'{"title": "Kalevala", "runes": 50}', "rejected: file"),
    ("JSON Lines saved as .json", ".json", f"{_PAIR}\n{_PAIR}\n".encode(), "rejected: file"),
    ("1 MB single field", ".jsonl", json.dumps({"prompt": "Tell all.", "response": "Sampo " * 174_763}).encode(),
     "loaded"),
    ("mixed shapes in one file", ".jsonl", (_PAIR + "\n" + '{"question": "Who is Louhi?", "answer": "Mistress."}\n'
                                             + '{"messages": [{"role": "user", "content": "Q?"}, '
                                               '{"role": "assistant", "content": "A."}]}\n').encode(), "loaded"),
    ("duplicate-only file", ".jsonl", (_PAIR + "\n").encode() * 500, "loaded"),
    ("JSON nested 100,000 deep", ".json", b"[" * 100_000 + b"]" * 100_000, "rejected: file"),
    ("lone surrogate escape in an answer", ".jsonl", b'{"prompt": "Q?", "response": "A \\ud800"}\n', "rejected: rows"),
]
