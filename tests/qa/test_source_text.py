"""Reading documents and cutting them into chunks with provenance."""

import pytest
from helpers import KALEVALA

from tuning.config import ConfigError
from tuning.data.examples import DataError
from tuning.qa.sources import chunk_text, read_source

SOURCE = KALEVALA / "source.md"


def test_chunks_cover_the_whole_source_with_exact_spans():
    text = read_source(SOURCE)
    chunks = chunk_text(text, "source.md", target_chars=1500, overlap_chars=150)
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end], "the span must point at the chunk's own text"
        assert len(chunk.text) <= 1500
        assert chunk.provenance() == {"source": "source.md", "chunk_id": chunk.chunk_id,
                                      "start": chunk.start, "end": chunk.end}
    assert [c.chunk_id for c in chunks] == list(range(len(chunks)))
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    missing = [i for i in range(len(text)) if i not in covered and not text[i].isspace()]
    assert not missing, f"text not in any chunk, e.g. at {missing[:3]}"


def test_headings_start_new_chunks():
    text = read_source(SOURCE)
    chunks = chunk_text(text, "source.md")
    starts = [c.text.split("\n", 1)[0] for c in chunks]
    assert sum(line.startswith("## ") for line in starts) >= len(chunks) // 2
    assert any(c.text.startswith("## Elias Lönnrot") for c in chunks)


def test_long_paragraphs_are_cut_at_sentences_with_overlap():
    sentences = [f"Sentence number {i} tells one fact about Väinämöinen and the Sampo." for i in range(60)]
    text = " ".join(sentences)
    chunks = chunk_text(text, "one.txt", target_chars=400, overlap_chars=120)
    assert len(chunks) > 5
    for first, second in zip(chunks, chunks[1:]):
        assert first.text.endswith("."), "cut at a sentence end"
        assert second.start < first.end, "the next chunk repeats the end of the previous one"
        assert first.end - second.start <= 120


def test_one_giant_sentence_is_still_cut():
    text = "word " * 2000
    chunks = chunk_text(text, target_chars=500, overlap_chars=0)
    assert all(len(c.text) <= 500 for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) == 2000


def test_chunk_size_too_small_is_a_clear_error():
    with pytest.raises(ConfigError, match="at least 200"):
        chunk_text("text", target_chars=50)


@pytest.mark.parametrize("name, content, message", [
    ("empty.md", b"  \n", "empty"),
    ("latin1.txt", "Lönnrot".encode("latin-1"), "not UTF-8"),
    ("data.docx", b"PK..", "can't read '.docx'"),
    ("broken.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
])
def test_unreadable_sources_name_the_file_and_the_fix(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_source(path)
    assert name in str(error.value)


def test_bom_and_windows_newlines_are_read(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffLine one.\r\n\r\nLine two.".encode("utf-8"))
    assert read_source(path) == "Line one.\n\nLine two."


def test_pdf_text_layer_is_read(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType: a real text layer
    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.text(0.1, 0.5, "Elias Lonnrot compiled the Kalevala in 1835.")
    figure.savefig(tmp_path / "guide.pdf")
    plt.close(figure)
    assert "Lonnrot compiled the Kalevala" in read_source(tmp_path / "guide.pdf")
