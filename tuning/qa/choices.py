"""What a person chose for one generation -> the backend that writes the pairs and the settings that check them.

The app's Generate panel and `python -m tuning generate` both go through prepare_generation, so a setting
refused by one is refused by the other with the same words, and the shared-app guards (caps, public
addresses only, Hub-id model names, the visitor's own token) can't be skipped by picking the other door.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuning.qa.backends import DEFAULT_REMOTE_IN_FLIGHT, LOCAL, REMOTE, BackendError, LocalBackend, RemoteBackend
from tuning.qa.generate import QASettings
from tuning.qa.validate import ValidationSettings

OPENAI_COMPATIBLE = "openai-compatible"  # any server with the OpenAI chat-completions API, at a base URL
PROVIDERS = "providers"  # Hugging Face Inference Providers: a Hub model id, no base URL
# LOCAL (a transformers model in this process) and REMOTE (the CLI's --backend remote: OpenAI-compatible when a
# base URL is given, else Inference Providers) come from tuning.qa.backends.
BACKEND_KINDS = (LOCAL, OPENAI_COMPATIBLE, PROVIDERS, REMOTE)
MISSING_BASE_URL = "give the endpoint's base URL, e.g. http://127.0.0.1:8000/v1"


@dataclass
class GenerationChoices:
    """One generation as a person asked for it. Numbers may arrive as floats or None (a UI's sliders and
    empty number boxes); prepare_generation makes them whole."""

    backend: str = LOCAL  # one of BACKEND_KINDS
    model: str = ""  # local: a model name ('' = auto); remote: the model id the endpoint serves
    base_url: str = ""  # OpenAI-compatible only
    # Keys are used for the requests only: never kept in the settings, never in a repr (a traceback would show it).
    api_key: str = field(default="", repr=False)
    signed_in_token: str | None = field(default=None, repr=False)  # Providers: a visitor's Hugging Face sign-in
    in_flight: int = DEFAULT_REMOTE_IN_FLIGHT  # remote: requests at once
    pairs_per_batch: int = QASettings.pairs_per_batch
    batches: int = QASettings.batches
    off_topic: int = QASettings.off_topic
    topic: str = QASettings.topic
    judge: bool = QASettings.judge
    temperature: float = QASettings.temperature
    seed: int = QASettings.seed
    max_reply_tokens: int = QASettings.max_reply_tokens
    duplicate_similarity: float = ValidationSettings.duplicate_similarity
    min_grounding: float = ValidationSettings.min_grounding
    min_judge_score: int = ValidationSettings.min_judge_score


def prepare_generation(choices: GenerationChoices):
    """(backend, QASettings) for the choices, every check done before anything is read or sent: the settings'
    ranges and this app's caps first (reading a PDF can take its whole budget), then the backend's own
    (model name, base URL, public address, token). ConfigError / BackendError name the fix."""
    settings = qa_settings(choices)
    settings.check()  # the plan's cap against the passages comes once they are read: settings.check(len(chunks))
    return qa_backend(choices), settings


def qa_settings(choices: GenerationChoices) -> QASettings:
    """The generation settings of the choices (unchecked: prepare_generation checks them)."""
    return QASettings(pairs_per_batch=_whole(choices.pairs_per_batch), batches=_whole(choices.batches),
                      off_topic=_whole(choices.off_topic), topic=choices.topic or "", judge=bool(choices.judge),
                      temperature=float(choices.temperature), seed=_whole(choices.seed),
                      max_reply_tokens=_whole(choices.max_reply_tokens),
                      validation=ValidationSettings(duplicate_similarity=float(choices.duplicate_similarity),
                                                    min_grounding=float(choices.min_grounding),
                                                    min_judge_score=_whole(choices.min_judge_score)))


def qa_backend(choices: GenerationChoices):
    """The backend the choices name; BackendError / ConfigError naming the fix when it can't be used here."""
    kind = _kind(choices)
    if kind == LOCAL:
        from tuning.models.names import check_model_name

        # Checked now, before any document is read: on a shared app a visitor names Hub models only.
        return LocalBackend(check_model_name(choices.model))
    in_flight = _whole(choices.in_flight)
    if kind == OPENAI_COMPATIBLE:
        if not (choices.base_url or "").strip():
            raise BackendError(MISSING_BASE_URL)
        # Never the Hugging Face sign-in token here: it would go to whatever server the URL names.
        return RemoteBackend(choices.model, base_url=choices.base_url, token=choices.api_key, max_in_flight=in_flight)
    # Inference Providers: the key typed in, else the visitor's sign-in; with neither, RemoteBackend takes this
    # machine's own token, or refuses on a shared app (where that token is the owner's).
    token = (choices.api_key or "").strip() or choices.signed_in_token
    return RemoteBackend(choices.model, token=token, max_in_flight=in_flight)


def _kind(choices: GenerationChoices) -> str:
    if choices.backend not in BACKEND_KINDS:
        raise BackendError(f"unknown backend '{choices.backend}' -- use one of {', '.join(BACKEND_KINDS)}")
    if choices.backend == REMOTE:
        return OPENAI_COMPATIBLE if (choices.base_url or "").strip() else PROVIDERS
    return choices.backend


def _whole(value) -> int:
    """A count from a front end: an empty number box counts as 0."""
    return int(value or 0)
