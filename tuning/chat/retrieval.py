"""Retrieval as the baseline fine-tuning is measured against: a BM25 index (bm25s) over the run's source documents,
its top passages placed in the prompt. "Would retrieval have done it?" is then a column of the scorecard.

Passages are the QA generator's own chunks (tuning/qa/sources.py), so a retrieved passage names its file and
character span like a generated pair does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tuning.errors import UsageError
from tuning.qa.sources import Chunk, read_documents
from tuning.runs.files import RUN_DATA_DIR, RUN_SOURCES_DIR, RUN_TRAIN_FILE

PASSAGE_CHARS = 600  # ~150 tokens: the passages and a question fit a 2k context with room to answer
# Measured on the Kalevala run (58 held-out questions, AMD EPYC, 2 cores, one process, 2026-12-03): the best passage
# alone beats two -- base+retrieval 20/58 vs 16/58, tuned+retrieval 41/58 vs 39/58 -- in 62 s vs 86 s (the 135M model
# loses the fact in a longer prompt; the pass is mostly prefill). 300-character passages, top 2: 16 and 42 in 75 s;
# 400, top 1: 17 and 40 in 56 s; 600, top 3 (an earlier run): 17.2% and 63.8%, the slowest.
DEFAULT_TOP_K = 1
INDEXES_KEPT = 4  # runs whose index Chat keeps built (a few hundred KB each for a book-sized document)
KALEVALA_SOURCE = Path(__file__).resolve().parents[2] / "datasets" / "kalevala" / "source.md"
NO_SOURCES = ("retrieval needs the source documents the data was made from -- give them with --sources FILE "
              "(.txt, .md or .pdf)")


@dataclass
class RetrievalIndex:
    """BM25 over passages of the source documents."""

    passages: list[Chunk]
    _retriever: object

    @classmethod
    def from_documents(cls, paths: list[str | Path]) -> RetrievalIndex:
        """Index the documents' passages; UsageError naming the fix when there are none."""
        if not paths:
            raise UsageError(NO_SOURCES)
        import bm25s

        passages = read_documents(paths, target_chars=PASSAGE_CHARS, overlap_chars=0)
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize([p.text for p in passages], stopwords="en", show_progress=False),
                        show_progress=False)
        return cls(passages, retriever)

    def top(self, questions: list[str], k: int = DEFAULT_TOP_K) -> list[list[Chunk]]:
        """The k best passages for each question, best first (fewer when the documents have fewer)."""
        import bm25s

        k = min(k, len(self.passages))
        found, scores = self._retriever.retrieve(bm25s.tokenize(questions, stopwords="en", show_progress=False),
                                                 k=k, show_progress=False)
        return [[self.passages[int(i)] for i, score in zip(row, row_scores) if score > 0]
                for row, row_scores in zip(found, scores)]


def with_passages(question: str, passages: list[Chunk]) -> str:
    """The question with the retrieved passages before it, as the model is asked it."""
    if not passages:
        return question
    context = "\n\n".join(f"[{n}] {p.text.strip()}" for n, p in enumerate(passages, start=1))
    return f"Answer using these passages if they help.\n\n{context}\n\nQuestion: {question}"


def sources_for(train_questions: list[str], given: list[str | Path] | None = None) -> list[Path]:
    """The documents to retrieve from: those given, else the Kalevala source for a run on the Kalevala pairs."""
    if given:
        return [Path(p) for p in given]
    from tuning.chat.probes.run_probes import is_kalevala_run

    return [KALEVALA_SOURCE] if is_kalevala_run(train_questions) else []


def run_sources(run_dir: str | Path) -> list[Path]:
    """The documents a run's pairs were made from: the copies the trainer keeps in its folder (data.sources), else
    the Kalevala source for a run on the Kalevala pairs (runs trained before sources were kept); [] when neither."""
    kept = Path(run_dir) / RUN_DATA_DIR / RUN_SOURCES_DIR
    if kept.is_dir():
        found = sorted(p for p in kept.iterdir() if p.is_file())
        if found:
            return found
    from tuning.data.examples import load_examples, user_prompts

    train = Path(run_dir) / RUN_DATA_DIR / RUN_TRAIN_FILE
    if not train.is_file():
        return []
    return sources_for(user_prompts(load_examples(train).examples))


def index_for_run(run_dir: str | Path) -> RetrievalIndex | None:
    """The index over a run's source documents (run_sources), built once and kept for the last few runs asked;
    None when the run has none. Keyed by the documents' paths, sizes and modification times: a rebuilt run
    re-indexes."""
    paths = run_sources(run_dir)
    if not paths:
        return None
    return _index_of(tuple((str(path), (stat := path.stat()).st_size, stat.st_mtime_ns) for path in paths))


@lru_cache(maxsize=INDEXES_KEPT)
def _index_of(documents: tuple[tuple[str, int, int], ...]) -> RetrievalIndex:
    return RetrievalIndex.from_documents([path for path, _, _ in documents])
