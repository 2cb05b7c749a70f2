"""`python -m tuning generate` with the local backend (the embedded 135M model) on the Kalevala source,
offline. The model's pairs are weak; the pipeline must still deliver validated pairs with provenance
and account for every batch."""

import json
import subprocess
import sys

from helpers import KALEVALA, REPO

from tuning.data.examples import load_examples, read_jsonl
from tuning.qa.sources import chunk_text, read_source

SOURCE = KALEVALA / "source.md"


def test_local_generation_from_the_kalevala_source(tmp_path):
    out = tmp_path / "kalevala-generated.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "tuning", "generate", "--source", str(SOURCE), "--out", str(out), "--batches", "1",
         "--per-batch", "10", "--off-topic", "2", "--topic", "the Kalevala", "--temperature", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stdout.splitlines()[0]
    assert summary.startswith("2 batches") and all(word in summary for word in ("made", "kept", "flagged",
                                                                                  "duplicates removed"))
    assert result.stderr.count("\nbatch ") + result.stderr.startswith("batch ") >= 2, "a line per batch"

    spans = {(c.chunk_id, c.start, c.end) for c in chunk_text(read_source(SOURCE), SOURCE.name)}
    rows = read_jsonl(out)
    facts = [r for r in rows if r["provenance"]["kind"] == "fact"]
    assert len(rows) - len(facts) == 2, "the off-topic redirects"
    for row in facts:
        where = row["provenance"]
        assert where["source"] == "source.md" and (where["chunk_id"], where["start"], where["end"]) in spans
        assert 0.0 <= row["checks"]["grounding"] <= 1.0
    assert load_examples(out).report.kept == len(rows), "the output is a valid training file as it is"

    rejected = out.with_name("kalevala-generated.rejected.jsonl")
    if "failed" in summary or "duplicates removed 0" not in summary:
        assert rejected.is_file(), "removed pairs and failed batches are written, never dropped"
        assert all("removed" in row or "failed_batch" in row for row in map(json.loads, rejected.open()))
