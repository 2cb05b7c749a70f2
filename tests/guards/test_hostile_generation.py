"""Generate from documents survives hostile visitors: a huge batch count costs nothing to plan and is refused on a
shared app, documents are size-checked before they are read, and a PDF bomb is refused in bounded time with a
message naming the file and the fix (tuning/qa/generate.py, tuning/qa/sources.py, tuning/qa/pdf_text.py)."""

import json
import tracemalloc
import zlib

import pytest

from tuning.data.examples import DataError
from tuning.data.files import MB
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_CAPS, SHARED_ENV, CapError, Caps
from tuning.qa.generate import QASettings, count_batches, generate_qa, plan_batches
from tuning.qa.sources import PASTED_SOURCE, Chunk, read_documents, read_source

ONE_CHUNK = [Chunk(source="pasted text", chunk_id=0, start=0, end=40, text="Lönnrot compiled the Kalevala in 1835.")]
PASSAGE = "Elias Lönnrot compiled the Kalevala from folk poems he collected in Karelia. " * 4
HUGE_BATCHES = 3_000_000  # what the reported attack asked for


@pytest.fixture(autouse=True)
def no_cap_settings(monkeypatch):
    """Each test starts as a local app with the default caps, whatever the machine's environment says."""
    for name in (SHARED_ENV, "SYSTEM", "SPACE_ID", *[CAP_ENV_PREFIX + f.upper() for f in Caps.__dataclass_fields__]):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def shared(monkeypatch):
    """A shared app: SHARED_CAPS are in force."""
    monkeypatch.setenv(SHARED_ENV, "1")


def write_pdf(path, pages: int, operators: int, extra: bytes = b"") -> None:
    """A real PDF whose pages all share one content stream of `operators` short text-showing operators (compressed,
    so a few kilobytes); `extra` is appended to that stream."""
    from pypdf import PdfWriter
    from pypdf.generic import DictionaryObject, EncodedStreamObject, NameObject

    writer = PdfWriter()
    compressor = zlib.compressobj(9)
    data = compressor.compress(b"BT /F1 1 Tf " + b"(a) Tj " * operators + b"ET ")
    for start in range(0, len(extra), MB):  # a piece at a time: `extra` may be large
        data += compressor.compress(extra[start:start + MB])
    content = EncodedStreamObject()
    content[NameObject("/Filter")] = NameObject("/FlateDecode")
    content._data = data + compressor.flush()  # already compressed: set_data would compress it again
    shared_content = writer._add_object(content)
    font = writer._add_object(DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"):
                                                NameObject("/Type1"), NameObject("/BaseFont"): NameObject("/Helvetica")}))
    for _ in range(pages):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        page[NameObject("/Contents")] = shared_content
    with open(path, "wb") as handle:
        writer.write(handle)


# --- The batch count -----------------------------------------------------------------------------------------


def test_planning_a_billion_batches_allocates_almost_nothing():
    tracemalloc.start()
    try:
        planned = count_batches(len(ONE_CHUNK), 10**9)
        rounds = plan_batches(ONE_CHUNK, 10**9)
        first, second = next(rounds), next(rounds)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert planned == 10**9
    assert first == second == ONE_CHUNK
    assert peak < MB, f"planning allocated {peak:,} bytes: the plan must be made lazily"


def test_the_count_is_the_plans_size():
    chunks = ONE_CHUNK * 5
    for available in range(6):
        for batches in range(13):
            rounds = list(plan_batches(chunks[:available], batches))
            assert count_batches(available, batches) == sum(len(r) for r in rounds), (available, batches)


def test_a_local_app_lets_its_owner_ask_for_any_number_of_batches():
    QASettings(batches=10**9).check(chunk_count=1)


def test_a_shared_app_refuses_batches_over_its_cap_with_the_fix(shared):
    cap = SHARED_CAPS.generate_batches
    with pytest.raises(CapError) as refused:
        QASettings(batches=HUGE_BATCHES).check()
    assert str(refused.value).startswith(f"batches is {HUGE_BATCHES:,}, over this app's limit of {cap:,} -- "
                                         f"ask for {cap} or fewer"), refused.value
    # 0 means one batch per passage: a long source is as many batches
    with pytest.raises(CapError, match=f"one per passage.*is 1,300, over this app's limit of {cap}.*set Batches to {cap}"):
        QASettings(batches=0).check(chunk_count=1_300)
    QASettings(batches=cap).check(chunk_count=1_300)


def test_generate_refuses_before_asking_the_backend(shared):
    class Untouchable:
        max_in_flight = 1
        label = "untouchable"

        def complete(self, request):
            raise AssertionError("the backend was asked")

    with pytest.raises(CapError, match="batches is 3,000,000"):
        next(generate_qa(ONE_CHUNK, Untouchable(), QASettings(batches=HUGE_BATCHES)))


def generate_endpoint(client) -> tuple[str, list[str]]:
    """The Generate button's api_name and its parameter names (found by label, not by position)."""
    api = client.view_api(print_info=False, return_format="dict")
    for name, info in api["named_endpoints"].items():
        labels = [parameter.get("label", "") for parameter in info["parameters"]]
        if any("Which LLM" in label for label in labels) and any("Batches" in label for label in labels):
            return name, [parameter["parameter_name"] for parameter in info["parameters"]]
    raise AssertionError(f"no Generate endpoint in {list(api['named_endpoints'])}")


def press_generate(url: str, **values) -> str:
    """Press Generate as a fresh visitor (the local backend, pasted text unless told otherwise); the page it shows."""
    from gradio_client import Client

    from ui.generate_panel import LOCAL_CHOICE

    client = Client(url, verbose=False)
    client.predict(None, api_name="/identify")
    endpoint, names = generate_endpoint(client)
    values = {"files": None, "pasted": PASSAGE, "choice": LOCAL_CHOICE, "base_url": "", "model": "", "api_key": "",
              "in_flight": 1, "per_batch": 10, "batches": 0, "off_topic": 0, "topic": "", "judge": False,
              "min_judge": 5, "duplicate_threshold": 0.9, **values}
    shown = json.dumps(client.predict(*[values.get(name) for name in names], api_name=endpoint), default=str)
    assert client.predict(None, api_name="/identify") is not None  # and the app still answers
    return shown.replace("&#x27;", "'")


def test_the_shared_app_refuses_three_million_batches(shared_app):
    shown = press_generate(shared_app[0], batches=HUGE_BATCHES)
    assert "Nothing generated" in shown and f"batches is {HUGE_BATCHES:,}, over this app's limit of 200" in shown, shown


def test_the_shared_app_refuses_a_thousand_page_pdf_bomb(shared_app, tmp_path):
    from gradio_client import handle_file

    bomb = tmp_path / "thousand.pdf"
    write_pdf(bomb, pages=1_000, operators=400_000)
    shown = press_generate(shared_app[0], files=[handle_file(str(bomb))], pasted="")
    assert "Nothing generated: thousand.pdf: the page count is 1,000, over this app's limit of 300" in shown, shown


# --- Document sizes and characters ---------------------------------------------------------------------------


def test_a_document_over_the_size_cap_is_refused_without_reading_it(shared, tmp_path, monkeypatch):
    big = tmp_path / "whole-library.txt"
    with open(big, "wb") as handle:
        handle.truncate(60 * MB)  # sparse: 60 MB on paper, nothing on disk

    def no_reading(*args, **kwargs):
        raise AssertionError("the document was read before its size was checked")

    monkeypatch.setattr(type(big), "open", no_reading)
    monkeypatch.setattr(type(big), "read_bytes", no_reading)
    for read in (lambda: read_documents([big]), lambda: read_source(big)):
        with pytest.raises(CapError) as refused:
            read()
        message = str(refused.value)
        assert message.startswith("whole-library.txt: 60.0 MB, over this app's limit of 20 MB per document -- "
                                  "split it into smaller documents"), message
        assert f"{CAP_ENV_PREFIX}SOURCE_MB" in message


def test_a_local_app_guards_itself_with_a_generous_size_cap(tmp_path):
    big = tmp_path / "dump.txt"
    with open(big, "wb") as handle:
        handle.truncate(60 * MB)
    with pytest.raises(CapError, match="dump.txt: 60.0 MB, over this app's limit of 50 MB"):
        read_documents([big])


def test_pasted_text_over_the_size_cap_is_refused(monkeypatch):
    monkeypatch.setenv(CAP_ENV_PREFIX + "SOURCE_MB", "1")
    with pytest.raises(CapError, match=f"{PASTED_SOURCE}: 2.0 MB, over this app's limit of 1 MB.*paste a shorter part"):
        read_documents([], "x" * (2 * MB))


def test_the_characters_of_one_request_are_capped_across_its_documents(tmp_path, monkeypatch):
    monkeypatch.setenv(CAP_ENV_PREFIX + "SOURCE_CHARS", "1000")
    first, second = tmp_path / "first.txt", tmp_path / "second.md"
    first.write_text((PASSAGE * 2)[:600])
    second.write_text((PASSAGE * 2)[:600])
    assert read_documents([first])
    with pytest.raises(CapError, match="second.md: the characters of text in this request so far is 1,200, over this "
                                       "app's limit of 1,000 -- generate from fewer or shorter documents"):
        read_documents([first, second])
    with pytest.raises(CapError, match="pasted text: the characters"):
        read_documents([first], (PASSAGE * 2)[:600])


# --- PDF bombs ------------------------------------------------------------------------------------------------


def test_a_pdf_bomb_is_refused_at_the_time_budget(tmp_path, monkeypatch):
    # 10 pages sharing one stream of 400,000 operators: ~6 KB that pypdf reads for a minute, each page for seconds
    monkeypatch.setenv(CAP_ENV_PREFIX + "PDF_SECONDS", "1")
    bomb = tmp_path / "brochure.pdf"
    write_pdf(bomb, pages=10, operators=400_000)
    assert bomb.stat().st_size < 20_000
    with pytest.raises(CapError) as refused:
        read_documents([bomb])
    message = str(refused.value)
    assert message.startswith("brochure.pdf: reading the PDFs of this request took over 1 s"), message
    assert "print it to a new PDF, or paste its text" in message and f"{CAP_ENV_PREFIX}PDF_SECONDS" in message


def test_a_pdf_over_the_page_cap_is_refused_before_extracting(shared, tmp_path):
    bomb = tmp_path / "thousand.pdf"
    write_pdf(bomb, pages=1_000, operators=400_000)  # hours of extraction, were it attempted
    with pytest.raises(CapError) as refused:
        read_source(bomb)
    assert str(refused.value).startswith(f"thousand.pdf: the page count is 1,000, over this app's limit of "
                                         f"{SHARED_CAPS.pdf_pages} -- split the PDF into smaller parts"), refused.value


def test_a_stream_over_the_pdf_readers_limit_is_a_clear_error(tmp_path):
    bomb = tmp_path / "inflated.pdf"
    write_pdf(bomb, pages=1, operators=1, extra=b" " * 80_000_000)  # pypdf refuses to inflate past 75 MB
    with pytest.raises(DataError) as refused:
        read_source(bomb)
    message = str(refused.value)
    assert message.startswith("inflated.pdf: not a readable PDF (LimitReachedError"), message
    assert message.endswith("-- export it again or paste the text")


def test_pdf_text_over_the_character_cap_stops_extraction(tmp_path, monkeypatch):
    monkeypatch.setenv(CAP_ENV_PREFIX + "SOURCE_CHARS", "5000")
    pdf = tmp_path / "long.pdf"
    write_pdf(pdf, pages=3, operators=2_000)
    with pytest.raises(CapError, match="long.pdf: the characters of text in this request so far is [0-9,]+, over this "
                                       "app's limit of 5,000"):
        read_source(pdf)
    monkeypatch.delenv(CAP_ENV_PREFIX + "SOURCE_CHARS")
    assert read_source(pdf).count("a") == 6_000
