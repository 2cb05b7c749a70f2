"""One run folder as an object: what a run is, asked of the folder, with every file name in one place.

The trainer writes a run folder; everyone else reads it through `Run` -- its status, the base model it was
trained on (resolved: never `auto`, which means another model on another machine), its metrics, its
scorecard (a typed `Scorecard`, not string keys), its adapter and its owner. The file names themselves are
in `tuning/runs/files.py`, which only this module and the writers import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tuning.runs.files import (
    ADAPTER_DIR,
    CONFIG_FILE,
    DATA_FILE,
    ENVIRONMENT_FILE,
    EVAL_FILE,
    LINEAGE_FILE,
    RUN_DATA_DIR,
    RUN_PREFERENCES_FILE,
    RUN_TRAIN_FILE,
    RUN_VALIDATION_FILE,
    has_adapter,
    read_json,
    read_metrics,
    read_status,
)


@dataclass(frozen=True)
class BaseModel:
    """The base model a run trained on: the name to load it by (a Hub id, a folder or 'embedded'), and the Hub
    id and commit it resolved to when it ran (None where it had none: a local folder, an older run)."""

    name: str
    hub_id: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class ScoredQuestion:
    """One held-out question of a scorecard: the reference, both answers, their scores and the verdict."""

    question: str
    reference: str
    base: str
    tuned: str
    verdict: str
    key_facts: list[str] = field(default_factory=list)
    base_scores: dict[str, float] = field(default_factory=dict)
    tuned_scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scorecard:
    """eval.json, typed: base vs tuned per metric ({metric: {"base", "tuned", "delta"}}), the verdict counts,
    and every question."""

    questions_scored: int
    held_out: int
    metrics: dict[str, dict[str, float]]
    verdicts: dict[str, int]
    questions: list[ScoredQuestion]
    data_file: str = ""
    base_model: str = ""
    probes: dict = field(default_factory=dict)  # the probes' reports, as eval.json holds them (tuning/chat/probes)
    parent: dict = field(default_factory=dict)  # a child run: its parent's key facts and each question's change

    @classmethod
    def from_report(cls, report: dict) -> Scorecard:
        """The scorecard of an eval.json report (KeyError/TypeError/ValueError when it is damaged)."""
        summary = report["summary"]
        rows = [ScoredQuestion(question=str(r["question"]), reference=str(r["reference"]), base=str(r["base"]),
                               tuned=str(r["tuned"]), verdict=str(r["verdict"]),
                               key_facts=list(r.get("key_facts") or []), base_scores=dict(r.get("base_scores") or {}),
                               tuned_scores=dict(r.get("tuned_scores") or {}))
                for r in report["questions"]]
        metrics = {str(name): {k: float(values[k]) for k in ("base", "tuned", "delta")}
                   for name, values in summary["metrics"].items()}
        return cls(questions_scored=int(summary["questions"]), held_out=int(summary.get("held_out", summary["questions"])),
                   metrics=metrics, verdicts={str(k): int(v) for k, v in summary["verdicts"].items()}, questions=rows,
                   data_file=str(report.get("data_file", "")), base_model=str(report.get("base_model", "")),
                   probes=_mapping(report.get("probes")), parent=_mapping(report.get("parent")))

    def probe_lines(self) -> list[str]:
        """A line per probe, as a person reads it ([] when none ran, or an imported report's probes are damaged)."""
        from tuning.chat.scorecard import probe_lines

        try:
            return probe_lines(self.probes)
        except (KeyError, TypeError, ValueError, AttributeError):
            return []

    def probe_details(self) -> list[list[str]]:
        """What the probes caught, a row each ([] when nothing, or an imported report's probes are damaged)."""
        from tuning.chat.scorecard import probe_detail_rows

        try:
            return [[str(cell) for cell in row] for row in probe_detail_rows(self.probes)]
        except (KeyError, TypeError, ValueError, AttributeError):
            return []

    def questions_phrase(self) -> str:
        """'58 held-out questions', or '8 of 58 held-out questions' for a sampled scorecard."""
        return questions_phrase(self.questions_scored, self.held_out)


def _mapping(value) -> dict:
    """A JSON object as read, or {} for anything else (a missing file, a damaged one)."""
    return value if isinstance(value, dict) else {}


def questions_phrase(scored: int, held_out: int) -> str:
    """'58 held-out questions', or '8 of 58 held-out questions' when the scorecard sampled them."""
    return f"{scored} held-out questions" if scored == held_out else f"{scored} of {held_out} held-out questions"


class Run:
    """A run folder. Cheap to make: every answer is read from the folder when asked (the trainer may be
    writing it meanwhile)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({self.path.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def id(self) -> str:
        return self.path.name

    # Where things are: the only paths into a run folder anyone outside the writers needs.
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def train_file(self) -> Path:
        return self.path / RUN_DATA_DIR / RUN_TRAIN_FILE

    @property
    def validation_file(self) -> Path:
        return self.path / RUN_DATA_DIR / RUN_VALIDATION_FILE

    @property
    def preferences_file(self) -> Path:
        return self.path / RUN_DATA_DIR / RUN_PREFERENCES_FILE

    def has_adapter(self) -> bool:
        """True once the run saved its final adapter."""
        return has_adapter(self.path)

    def status(self) -> dict:
        """The last recorded status ({} before the trainer wrote one)."""
        return read_status(self.path)

    def state(self) -> str | None:
        """queued, running, completed, stopped or failed (None before any status)."""
        return self.status().get("state")

    def recipe(self):
        """The recipe the run trained with (config.yaml; ConfigError when it is damaged)."""
        from tuning.config import load_recipe

        return load_recipe(self.config_file)

    def environment(self) -> dict:
        """environment.json: where it ran, the libraries, the base model it resolved ({} when missing)."""
        return _mapping(read_json(self.path / ENVIRONMENT_FILE))

    def data_summary(self) -> dict:
        """data.json: the files, fingerprints and counts of the data it trained on ({} when missing)."""
        return _mapping(read_json(self.path / DATA_FILE))

    def recorded_base_model(self) -> dict:
        """The base model as environment.json recorded it ({} when it has none)."""
        return _mapping(self.environment().get("base_model"))

    def base_model(self) -> BaseModel:
        """The base model the run trained on, never 'auto': chat, export and publish load this one even when
        'auto' now means another model. The recipe's name (at the commit the run recorded, when the same
        model), else what 'auto' resolved to when it ran, else -- a run that recorded nothing -- what 'auto'
        means here."""
        from tuning.config import AUTO_MODEL

        model = self.recipe().model
        recorded = self.recorded_base_model()
        used = recorded.get("name") if isinstance(recorded.get("name"), str) and recorded.get("name").strip() else None
        name = model.name
        if name == AUTO_MODEL:
            if used is None:
                from tuning.models.loading import default_model_name

                return BaseModel(default_model_name())
            name = used
        same = used == name
        revision = model.revision or (recorded.get("revision") if same and recorded.get("hub_id") else None)
        return BaseModel(name, hub_id=recorded.get("hub_id") if same else None, revision=revision)

    def lineage(self) -> dict:
        """lineage.json: the method and the parent run whose adapter this one continued ({} for a fresh adapter)."""
        return _mapping(read_json(self.path / LINEAGE_FILE))

    def parent(self) -> Run | None:
        """The run whose adapter this one continued (DPO, or an SFT top-up); None for a fresh adapter."""
        path = _mapping(self.lineage().get("parent")).get("path")
        return Run(path) if isinstance(path, str) and path else None

    def metrics(self) -> list[dict]:
        """Every logged metrics record (loss, eval_loss, learning rate, tokens/s ... by step)."""
        return read_metrics(self.path)

    def scorecard(self) -> Scorecard | None:
        """The base-vs-tuned scorecard, once the run has one (None before, or when eval.json is damaged)."""
        report = read_json(self.path / EVAL_FILE)
        if not isinstance(report, dict):
            return None
        try:
            return Scorecard.from_report(report)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def owner_digest(self) -> str | None:
        """The digest of who owns it (None: trained from the shell, open to everyone)."""
        from tuning.runs.owner import read_owner

        return read_owner(self.path)
