"""What a shared app lets a visitor spend: one place for every cap on a size, count, length or duration
that a visitor controls, and the one test of whether this app is shared.

A Hugging Face Space is shared (anyone with the link is a visitor); so is any machine where whoever runs
the app sets KANTELE_SHARED=1. On your own machine the caps that only make sense for strangers are off
(None), and the few that guard the app against itself (a PDF bomb, a prompt longer than the model's
context) stay on with generous values. The owner sets any cap with KANTELE_CAP_<NAME>, e.g.
KANTELE_CAP_TRAINING_STEPS=5000.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from tuning.config import ConfigError
from tuning.hub.auth import on_space

SHARED_ENV = "KANTELE_SHARED"
CAP_ENV_PREFIX = "KANTELE_CAP_"
MAX_NAME_CHARS = 200  # a model / adapter name: Hub ids are at most 96 + 1 + 96; longer is not a name


class CapError(ConfigError):
    """A visitor asked for more than this app allows; the message names the cap and what to ask for.
    A ConfigError, so every front end that reports a bad setting reports this too."""


def is_shared() -> bool:
    """True where visitors are strangers: on a Space, or with KANTELE_SHARED=1."""
    return on_space() or os.environ.get(SHARED_ENV, "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Caps:
    """The most a visitor may ask for in one request; None: no cap."""

    # QA generation: a plan is arithmetic, but every batch is an LLM call on a shared backend.
    generate_batches: int | None = None
    endpoint_reply_mb: float | None = None  # one reply of a visitor's OpenAI-compatible endpoint
    source_mb: float | None = 50.0  # one document or the pasted text, before reading it
    source_chars: int | None = None  # text extracted from all documents of one request
    pdf_pages: int | None = 2_000
    pdf_seconds: float | None = 60.0  # text extraction budget per request (a PDF bomb costs hours)
    # Training: one slot serves everyone, so a run's size is capped before it is queued.
    training_steps: int | None = None
    training_epochs: float | None = None
    batch_size: int | None = None
    max_length: int | None = None
    run_minutes: float | None = None  # the pre-flight estimate may not exceed this
    lora_rank: int | None = None  # lora.r: the adapter's size, its optimizer state and its step time grow with it
    scorecard_questions: int | None = None  # each one is answered twice (base and tuned) while the slot is held
    runs_per_visitor: int | None = None  # queued or running at once
    # Chat: one model answers everyone, one question at a time.
    chats_per_visitor: int | None = None  # questions one visitor may have in flight at once
    chat_prompt_tokens: int | None = None  # the conversation a question sends (the model's context cuts it too)
    queue_size: int | None = None  # requests waiting in the app's queue before new ones are turned away
    # Data: rows and bytes one request may load, and a workspace may hold.
    request_rows: int | None = None
    request_mb: float | None = None
    workspace_mb: float | None = None
    # Chat feedback (votes and corrections under the side-by-side answers), kept in the visitor's workspace.
    feedback_items: int | None = None  # items one workspace may hold
    feedback_chars: int | None = None  # one question, answer or correction
    # Hub downloads a visitor names (a base model, a Hub adapter): the Space's disk holds them, the owner's pick aside.
    model_gb: float | None = None  # a base model's files (GB, 1e9 bytes), asked of the Hub before downloading
    adapter_mb: float | None = None  # a Hub adapter's files (MB, 1e6 bytes), likewise
    # A model a visitor picks to run in the app process (a Hub adapter's base, the local QA generator), counted
    # from its config.json before its weights load: the app holds it beside the training run's memory.
    model_params: int | None = None
    # Uploads: Gradio keeps a copy of every upload in its cache; on a shared app copies older than this go.
    upload_cache_minutes: float | None = None
    workspace_hours: float | None = None  # a visitor's workspace left idle this long is deleted


# On a shared app: sized for the Space's hardware (a T4 or cpu-basic) and a queue of strangers.
SHARED_CAPS = Caps(
    generate_batches=200,  # 200 batches x 20 pairs = 4,000 pairs: more than a demo needs
    endpoint_reply_mb=8.0,  # 20 pairs of JSON are a few KB; a judge's reply less
    source_mb=20.0,
    source_chars=2_000_000,  # ~1,300 chunks of 1,500 characters
    pdf_pages=300,
    pdf_seconds=20.0,
    training_steps=2_000,  # the Kalevala GPU recipe takes 408
    training_epochs=20.0,
    batch_size=32,
    max_length=2_048,  # TinyLlama's context
    run_minutes=60.0,
    lora_rank=256,  # the usual trade-off is 4-32; past 256 a small dataset gains nothing but a bigger adapter
    scorecard_questions=500,  # x2 answers each; the Kalevala validation set has 58
    runs_per_visitor=1,
    chats_per_visitor=1,
    chat_prompt_tokens=2_048,  # TinyLlama's whole context; prefill of more holds the one chat model too long
    queue_size=64,  # every visitor's page polls its run every 2 s: room for them, not for a flood
    request_rows=100_000,
    request_mb=100.0,
    workspace_mb=200.0,
    feedback_items=500,  # a vote every minute of an 8-hour day is 480
    # 16,000: a 2,048-token question or answer is ~8,000 characters (~4 a token); twice that for slack.
    # 500 items x 4 texts x 16,000 = 32 MB at most, well inside workspace_mb
    feedback_chars=16_000,
    model_gb=5.0,  # TinyLlama 1.1B in safetensors is ~2.2 GB; 5 GB takes up to ~2B parameters in bf16
    model_params=2_000_000_000,  # TinyLlama has 1.1B; 2B: ~1.5 GB in 4 bits on a T4, 8 GB fp32 on a 16 GB CPU Space
    adapter_mb=1_000.0,  # rank 256 on all of TinyLlama's linear layers: 22 x 35,840 x 256 = 202M fp32 params = 0.8 GB
    workspace_hours=24.0,  # runs keep their own copy of the data they trained on
    upload_cache_minutes=60.0,  # time enough to pick files, then press Load (the app copies them on Load)
)


def caps() -> Caps:
    """The caps in force now: SHARED_CAPS on a shared app, the local ones elsewhere, each overridable by
    KANTELE_CAP_<NAME> (a number; 0 or 'none' lifts the cap)."""
    base = SHARED_CAPS if is_shared() else Caps()
    overrides = {}
    for field in dataclasses.fields(Caps):
        text = os.environ.get(CAP_ENV_PREFIX + field.name.upper(), "").strip()
        if text:
            overrides[field.name] = _cap_value(field.name, text, int if "int" in str(field.type) else float)
    return dataclasses.replace(base, **overrides)


def _cap_value(name: str, text: str, kind):
    if text.lower() in {"0", "none", "off"}:
        return None
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise CapError(f"{CAP_ENV_PREFIX}{name.upper()}={text!r} is not a positive number -- set a number, "
                       "or 'none' to lift the cap")
    return value


def check_cap(value: float, cap: float | None, what: str, fix: str) -> None:
    """CapError when value is over cap; the message says the cap, the value and what to do instead."""
    if cap is not None and value > cap:
        shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
        limit = f"{cap:,}" if isinstance(cap, int) else f"{cap:,.4g}"
        raise CapError(f"{what} is {shown}, over this app's limit of {limit} -- {fix}")
