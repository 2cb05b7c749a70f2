"""Source documents for QA generation: read .txt / .md / .pdf, cut into overlapping chunks with provenance.

What one request may read is capped (tuning/guards/caps.py): each document's size before it is read,
the pasted text's size, the characters of all of them together, and a PDF's pages and extraction time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from tuning.config import ConfigError
from tuning.data.examples import DataError
from tuning.data.files import MB
from tuning.guards.caps import CAP_ENV_PREFIX, CapError, caps, check_cap
from tuning.qa.pdf_text import extract_pdf_text

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
PDF_SUFFIX = ".pdf"
DEFAULT_CHUNK_CHARS = 1500  # ~400 tokens: room for the text, the rules and 10–20 answers in a 2k context
DEFAULT_OVERLAP_CHARS = 150  # about one sentence, so a fact cut at a boundary is whole in one chunk
MIN_SECTION_SHARE = 4  # a heading starts a new chunk once the current one holds a quarter of the target
PASTED_SOURCE = "pasted text"
PASTED_FILE = f"{PASTED_SOURCE}.txt"  # pasted text kept as a document (a workspace's, a run's sources)
PASTED_FILE_NAME = re.compile(rf"(\d{{2,}}-)?{re.escape(PASTED_FILE)}")  # numbered when names clash
SPLIT_IT = "split it into smaller documents, or paste the part you need"

PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
HEADING = re.compile(r"^#{1,6}\s|^[^\n]+\n[=-]{3,}\s*$", re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    """A piece of one source, with where it came from: file name, chunk number, character span."""

    source: str
    chunk_id: int
    start: int
    end: int
    text: str

    def provenance(self) -> dict:
        """What a generated pair records about its origin."""
        fields = asdict(self)
        fields.pop("text")
        return fields


@dataclass
class ReadBudget:
    """What one request may still spend reading its sources: characters in all, seconds of PDF extraction."""

    max_chars: int | None = None
    pdf_seconds: float | None = None
    chars: int = 0  # read so far
    deadline: float | None = None  # time.monotonic() by which PDF extraction must be done; set by the first PDF

    @classmethod
    def from_caps(cls) -> ReadBudget:
        """The budget caps() allows one request."""
        limits = caps()
        return cls(max_chars=limits.source_chars, pdf_seconds=limits.pdf_seconds)

    def chars_left(self) -> int | None:
        """Characters a document may still add; None: no cap."""
        return None if self.max_chars is None else max(0, self.max_chars - self.chars)

    def seconds_left(self) -> float | None:
        """Seconds PDF extraction may still take (the clock starts at the first PDF); None: no cap."""
        if self.pdf_seconds is None:
            return None
        if self.deadline is None:
            self.deadline = time.monotonic() + self.pdf_seconds
        return max(0.0, self.deadline - time.monotonic())

    def spend(self, chars: int, name: str) -> None:
        """Count a source's characters; CapError once the request's total is over the cap."""
        self.chars += chars
        check_cap(self.chars, self.max_chars, f"{name}: the characters of text in this request so far",
                  f"generate from fewer or shorter documents, or paste just the part you need{_raise_hint('source_chars')}")


def read_documents(paths: Iterable[str | Path], pasted: str = "", target_chars: int = DEFAULT_CHUNK_CHARS,
                   overlap_chars: int = DEFAULT_OVERLAP_CHARS) -> list[Chunk]:
    """Chunks of every document and of the pasted text, within one request's caps (sizes checked first)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.is_file():
            check_source_size(path)
    if pasted.strip():
        check_pasted_size(pasted)
    budget = ReadBudget.from_caps()
    chunks = []
    for path in paths:
        chunks += chunk_text(read_source(path, budget), source_name(path), target_chars, overlap_chars)
    if pasted.strip():
        budget.spend(len(pasted), PASTED_SOURCE)
        chunks += chunk_text(pasted, PASTED_SOURCE, target_chars, overlap_chars)
    if not chunks:
        raise DataError("no source text: upload a .txt, .md or .pdf document or paste some text")
    return chunks


def source_name(path: str | Path) -> str:
    """What a document's chunks name it: its file name, or PASTED_SOURCE for pasted text kept as a file (numbered
    or not), so a passage retrieved from it names it as the pairs generated from the pasted text do."""
    name = Path(path).name
    return PASTED_SOURCE if PASTED_FILE_NAME.fullmatch(name) else name


def read_source(path: str | Path, budget: ReadBudget | None = None) -> str:
    """The text of a .txt/.md file (UTF-8, BOM tolerated) or a PDF (text layer, via pypdf), within the caps."""
    path = Path(path)
    budget = budget or ReadBudget.from_caps()
    if not path.is_file():
        raise DataError(f"{path}: no such file -- give a .txt, .md or .pdf document")
    suffix = path.suffix.lower()
    if suffix != PDF_SUFFIX and suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path.name}: can't read '{suffix}' -- give a .txt, .md or .pdf document")
    check_source_size(path)
    text = _read_pdf(path, budget) if suffix == PDF_SUFFIX else _read_text(path)
    budget.spend(len(text), path.name)
    return text


def check_source_size(path: Path) -> None:
    """CapError when a document is over caps().source_mb, before any of it is read."""
    _check_megabytes(path.name, path.stat().st_size, SPLIT_IT)


def check_pasted_size(text: str) -> None:
    """CapError when the pasted text is over caps().source_mb."""
    _check_megabytes(PASTED_SOURCE, len(text.encode("utf-8", "surrogatepass")),
                     "paste a shorter part, or upload it as documents")


def _check_megabytes(name: str, size: int, fix: str) -> None:
    limit = caps().source_mb
    if limit is not None and size > limit * MB:
        raise CapError(f"{name}: {size / MB:,.1f} MB, over this app's limit of {limit:g} MB per document -- "
                       f"{fix}{_raise_hint('source_mb')}")


def _raise_hint(cap: str) -> str:
    return f" (whoever runs the app can raise {CAP_ENV_PREFIX}{cap.upper()})"


def _read_text(path: Path) -> str:
    limit = caps().source_mb
    with path.open("rb") as handle:
        # one byte past the limit: a file that grew after the size check is still caught
        data = handle.read() if limit is None else handle.read(int(limit * MB) + 1)
    _check_megabytes(path.name, len(data), SPLIT_IT)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: byte {exc.start} is not UTF-8 -- save the file as UTF-8 and try again") from None
    if not text.strip():
        raise DataError(f"{path.name}: the file is empty -- give a document with some text in it")
    return text.replace("\r\n", "\n")


def _read_pdf(path: Path, budget: ReadBudget) -> str:
    seconds = budget.seconds_left()
    if seconds == 0:  # earlier PDFs of this request spent the budget
        raise _out_of_time(path, budget)
    result = extract_pdf_text(path, caps().pdf_pages, budget.chars_left(), seconds)
    if result.timed_out:
        raise _out_of_time(path, budget)
    if result.pages is not None:
        check_cap(result.pages, caps().pdf_pages, f"{path.name}: the page count",
                  f"split the PDF into smaller parts, or paste the pages you need{_raise_hint('pdf_pages')}")
    if result.chars is not None:
        budget.spend(result.chars, path.name)  # over the cap: raises with the total
    if result.error:
        raise DataError(f"{path.name}: not a readable PDF ({result.error}) -- export it again or paste the text")
    if not result.text:
        raise DataError(f"{path.name}: the PDF has no text layer (a scan?) -- run OCR first or paste the text")
    return result.text


def _out_of_time(path: Path, budget: ReadBudget) -> CapError:
    return CapError(f"{path.name}: reading the PDFs of this request took over {budget.pdf_seconds:g} s, this app's "
                    "limit -- the PDF may be damaged or built to be slow to read: print it to a new PDF, or paste "
                    f"its text{_raise_hint('pdf_seconds')}")


def chunk_text(text: str, source: str = PASTED_SOURCE, target_chars: int = DEFAULT_CHUNK_CHARS,
               overlap_chars: int = DEFAULT_OVERLAP_CHARS) -> list[Chunk]:
    """Cut text at headings and paragraph breaks into chunks of about target_chars, each starting with
    up to overlap_chars of the previous chunk's end; spans index into `text`."""
    if target_chars < 200:
        raise ConfigError("chunk size must be at least 200 characters -- smaller chunks hold too little to ask about")
    overlap_chars = max(0, min(overlap_chars, target_chars // 2))
    spans = _pieces(text, target_chars)
    chunks: list[Chunk] = []
    start = end = None
    for piece_start, piece_end, is_heading in spans:
        if start is None:
            start, end = piece_start, piece_end
            continue
        too_big = piece_end - start > target_chars
        new_section = is_heading and end - start >= target_chars // MIN_SECTION_SHARE
        if too_big or new_section:
            chunks.append(_make_chunk(text, source, len(chunks), start, end))
            start = _overlap_start(text, piece_start, end, overlap_chars) if not new_section else piece_start
        end = piece_end
    if start is not None:
        chunks.append(_make_chunk(text, source, len(chunks), start, end))
    return chunks


def _make_chunk(text: str, source: str, number: int, start: int, end: int) -> Chunk:
    return Chunk(source=source, chunk_id=number, start=start, end=end, text=text[start:end])


def _overlap_start(text: str, next_start: int, previous_end: int, overlap_chars: int) -> int:
    """Where the next chunk starts so it repeats the previous one's last sentence(s), within overlap_chars."""
    if overlap_chars == 0:
        return next_start
    window_start = max(0, previous_end - overlap_chars)
    window = text[window_start:previous_end]
    boundary = SENTENCE_END.search(window)
    return window_start + boundary.end() if boundary else next_start


def _pieces(text: str, target_chars: int) -> list[tuple[int, int, bool]]:
    """(start, end, starts_with_heading) for each paragraph; paragraphs over target are cut at sentences."""
    pieces = []
    position = 0
    for gap in [*PARAGRAPH_BREAK.finditer(text), None]:
        stop = gap.start() if gap else len(text)
        raw = text[position:stop]
        if raw.strip():
            lead = len(raw) - len(raw.lstrip())
            start, end = position + lead, position + len(raw.rstrip())
            pieces += _split_long(text, start, end, target_chars, bool(HEADING.match(text, start)))
        position = gap.end() if gap else len(text)
    return pieces


def _split_long(text: str, start: int, end: int, target_chars: int, is_heading: bool) -> list[tuple[int, int, bool]]:
    parts, part_start = [], start
    while end - part_start > target_chars:
        # Cut at the last sentence end that fits; one sentence longer than a chunk is cut hard.
        cut = _last_boundary_before(text, part_start, part_start + target_chars) or part_start + target_chars
        parts.append((part_start, cut))
        part_start = cut
        while part_start < end and text[part_start].isspace():
            part_start += 1
    parts.append((part_start, end))
    return [(s, e, is_heading and i == 0) for i, (s, e) in enumerate(parts)]


def _last_boundary_before(text: str, start: int, limit: int) -> int | None:
    last = None
    for boundary in SENTENCE_END.finditer(text, start, limit):
        last = boundary.start()
    return last if last and last > start else None
