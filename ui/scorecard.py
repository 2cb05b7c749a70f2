"""The before/after scorecard under the Train tab: totals, a bar chart, and a table filterable by verdict."""

from __future__ import annotations

import hashlib

import gradio as gr

from tuning.chat.scorecard import LEARNED, PROBE_DETAIL_COLUMNS, REGRESSED, UNCHANGED_RIGHT, UNCHANGED_WRONG
from tuning.runs.owner import Owner
from tuning.runs.run import Scorecard
from ui.plots import metrics_bar_chart
from ui.state import RUNS
from ui.untrusted import inert_markdown

ALL_VERDICTS = "all"
VERDICT_CHOICES = [ALL_VERDICTS, LEARNED, REGRESSED, UNCHANGED_RIGHT, UNCHANGED_WRONG]
TABLE_COLUMNS = ["verdict", "question", "base", "tuned", "reference"]


def read_scorecard(run_id: str | None, owner: Owner | None) -> Scorecard | None:
    """The asker's run's scorecard, when it has one."""
    if not run_id:
        return None
    try:
        return RUNS.run(run_id, owner).scorecard()
    except ValueError:  # not theirs (or gone): the progress line already says so
        return None


def summary_markdown(card: Scorecard) -> str:
    """Totals per metric and the verdict counts (an imported run's eval.json names them: shown inert)."""
    lines = [f"### Scorecard: {card.questions_phrase()}, base vs tuned", "",
             "| metric | base | tuned | change |", "|---|---|---|---|"]
    for metric, values in card.metrics.items():
        lines.append(f"| {inert_markdown(str(metric).replace('_', ' '))} | {values['base']:.2f} | {values['tuned']:.2f} | "
                     f"{values['delta']:+.2f} |")
    counts = ", ".join(f"**{inert_markdown(str(v))}** {inert_markdown(str(k))}" for k, v in card.verdicts.items())
    lines += ["", f"Verdicts: {counts}. Click a question to ask it again in Chat."]
    lines += parent_lines(card.parent)
    probes = card.probe_lines()
    if probes:  # the next questions: forgotten skills, limits, memorised vs generalised, retrieval
        lines += ["", "**Beyond the held-out questions**", "", *(f"- {inert_markdown(line)}" for line in probes)]
    return "\n".join(lines)


def parent_lines(parent: dict) -> list[str]:
    """A child run's comparison with the run it continued (eval.json's "parent" block; [] for a fresh adapter or a
    damaged block): its key facts then and now, and how many questions it learned or lost on the way."""
    try:
        rates, changes = parent["key_fact"], parent["changes"]
        then, now = (f"{rates[k]:.0%}" if isinstance(rates[k], (int, float)) else "–" for k in ("parent", "tuned"))
        counts = ", ".join(f"{int(v)} {inert_markdown(str(k))}" for k, v in changes.items())
        return ["", f"**Against the run it continued** (`{inert_markdown(str(parent['run']))}`): key facts {then} → "
                    f"{now}; {counts}."]
    except (KeyError, TypeError, ValueError, AttributeError):
        return []


def table_rows(card: Scorecard | None, verdict: str) -> list[list]:
    """Per-question rows, optionally only one verdict."""
    if not card:
        return []
    return [[q.verdict, q.question, q.base, q.tuned, q.reference] for q in card.questions
            if verdict in (None, ALL_VERDICTS) or q.verdict == verdict]


def refresh_scorecard(run_id: str | None, owner: Owner | None, shown: str | None, verdict: str):
    """Show the scorecard once the run has one, and again whenever it changes (only then: the timer asks every few
    seconds). A child run's eval.json is written twice -- the scorecard, then its parent block -- so "already shown
    for this run" would miss the second."""
    card = read_scorecard(run_id, owner)
    if not card:
        return (gr.skip(),) * 6
    summary = summary_markdown(card)
    key = f"{run_id}:{hashlib.sha256(summary.encode()).hexdigest()[:16]}"
    if key == shown:
        return (gr.skip(),) * 6
    details = card.probe_details()  # a Dataframe shows its cells as text: nothing in them renders
    return (key, gr.update(value=summary, visible=True),
            gr.update(value=metrics_bar_chart(card.metrics), visible=True),
            gr.update(value=table_rows(card, verdict), visible=True), gr.update(visible=True),
            gr.update(value=details, visible=bool(details)))


def filter_rows(run_id: str | None, owner: Owner | None, verdict: str):
    """The table for one verdict."""
    return table_rows(read_scorecard(run_id, owner), verdict)


def picked_question(event: gr.SelectData) -> str:
    """The question of the clicked table row."""
    return event.row_value[1]


def build_scorecard(run_state, owner_state) -> dict:
    """Scorecard components (hidden until a scorecard exists)."""
    shown = gr.State(None)  # run id and a digest of the summary on show (refresh_scorecard)
    summary = gr.Markdown(visible=False, elem_id="scorecard-summary")
    chart = gr.Plot(visible=False, label="Base vs tuned")
    verdict = gr.Dropdown(VERDICT_CHOICES, value=ALL_VERDICTS, label="Show verdict", visible=False)
    table = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, wrap=True, visible=False,
                         elem_id="scorecard-table")
    probe_table = gr.Dataframe(headers=PROBE_DETAIL_COLUMNS, interactive=False, wrap=True, visible=False,
                               label="What the probes caught: skills lost, off-topic and unanswerable questions "
                                     "answered badly, and the rule that decided", elem_id="probe-details")
    verdict.change(filter_rows, [run_state, owner_state, verdict], table)
    return {"shown": shown, "summary": summary, "chart": chart, "verdict": verdict, "table": table,
            "outputs": [shown, summary, chart, table, verdict, probe_table]}
