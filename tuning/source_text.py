"""Source documents for QA generation: read .txt / .md / .pdf, cut into overlapping chunks with provenance."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tuning.config import ConfigError
from tuning.data import DataError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
PDF_SUFFIX = ".pdf"
DEFAULT_CHUNK_CHARS = 1500  # ~400 tokens: room for the text, the rules and 10–20 answers in a 2k context
DEFAULT_OVERLAP_CHARS = 150  # about one sentence, so a fact cut at a boundary is whole in one chunk
MIN_SECTION_SHARE = 4  # a heading starts a new chunk once the current one holds a quarter of the target
PASTED_SOURCE = "pasted text"

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


def read_source(path: str | Path) -> str:
    """The text of a .txt/.md file (UTF-8, BOM tolerated) or a PDF (text layer, via pypdf)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file -- give a .txt, .md or .pdf document")
    suffix = path.suffix.lower()
    if suffix == PDF_SUFFIX:
        return _read_pdf(path)
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"{path.name}: can't read '{suffix}' -- give a .txt, .md or .pdf document")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: byte {exc.start} is not UTF-8 -- save the file as UTF-8 and try again") from None
    if not text.strip():
        raise DataError(f"{path.name}: the file is empty -- give a document with some text in it")
    return text.replace("\r\n", "\n")


def _read_pdf(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - pypdf is in requirements.txt
        raise DataError(f"{path.name}: reading PDFs needs pypdf -- `pip install pypdf`, or paste the text") from None
    try:
        pages = [page.extract_text() or "" for page in PdfReader(path).pages]
    except (PdfReadError, ValueError, OSError) as exc:
        raise DataError(f"{path.name}: not a readable PDF ({exc}) -- export it again or paste the text") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise DataError(f"{path.name}: the PDF has no text layer (a scan?) -- run OCR first or paste the text")
    return text


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
