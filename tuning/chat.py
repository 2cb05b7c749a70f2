"""Answers side by side: one base model in memory, the LoRA adapter switched on (tuned) and off (base)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from tuning.chat_context import FittedPrompt, fit_prompt, prompt_budget
from tuning.config import ModelConfig, load_recipe
from tuning.device import GENERATION, SHORT_DTYPE
from tuning.fair_lock import FairLock
from tuning.formatting import with_system_prompt
from tuning.models import (
    ResolvedModel,
    display_name,
    load_base_model,
    load_inference_model,
    load_tokenizer,
    resolve_model,
)
from tuning.row_streamer import RowsStreamer
from tuning.run_files import ADAPTER_DIR, CONFIG_FILE
from tuning.shared_space import caps

TUNED_ADAPTER = "tuned"  # PEFT's name for the adapter in use


@dataclass
class GenerationSettings:
    """Decoding controls; temperature 0 means greedy (deterministic) decoding."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def generate_kwargs(self, pad_token_id: int) -> dict:
        """The settings as `model.generate` keyword arguments."""
        kwargs = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "pad_token_id": pad_token_id,
        }
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        else:
            # Explicit so a model's generation_config that samples by default doesn't override greedy.
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        return kwargs


def _as_messages(question: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": question}] if isinstance(question, str) else list(question)


class SideBySideChat:
    """A base model plus an optional LoRA adapter that answers with the adapter on or off."""

    def __init__(self, model: ResolvedModel, model_cfg: ModelConfig, system_prompt: str | None = None,
                 dequantize: bool = True) -> None:
        self.model_ref = model
        self.system_prompt = system_prompt
        self.tokenizer = load_tokenizer(model.path)
        self.model_cfg = model_cfg
        self.dequantize = dequantize
        self.model = self._load_base()
        self.model.eval()
        self.adapter_dir: Path | None = None
        self.adapter_label: str | None = None  # run id or Hub id, for people
        # One generate at a time (the adapter switch is model-wide state), in the order visitors asked.
        self._lock = FairLock()

    def _load_base(self):
        # Dequantized NF4 serves the chat's 1-2 rows on a CPU; the scorecard's left-padded batches of 8
        # were much slower that way (a Kalevala scorecard 2.0 min vs 52 s), so it keeps the 4-bit path.
        if self.dequantize:
            return load_inference_model(self.model_ref.path, self.model_cfg)
        return load_base_model(self.model_ref.path, self.model_cfg, work=GENERATION)

    @classmethod
    def from_run(cls, run_dir: str | Path, dequantize: bool = True) -> "SideBySideChat":
        """Load the base model a run was trained on, in the same precision, with its adapter."""
        recipe = load_recipe(Path(run_dir) / CONFIG_FILE)
        chat = cls(resolve_model(recipe.model.name, recipe.model.revision), recipe.model, recipe.data.system_prompt,
                   dequantize=dequantize)
        chat.use_adapter(Path(run_dir) / ADAPTER_DIR, label=Path(run_dir).name)
        return chat

    @property
    def precision(self) -> str:
        """How the base weights are held and computed with, for people."""
        dtype = SHORT_DTYPE.get(str(self._compute_dtype()).removeprefix("torch."), "")
        if getattr(self.model, "is_loaded_in_4bit", False):
            return f"4-bit NF4, computing in {dtype}"
        return f"NF4 weights, dequantized to {dtype} for the CPU" if self.model_cfg.load_in_4bit else f"{dtype} weights"

    def _compute_dtype(self):
        """The dtype the base model computes in (bitsandbytes' compute dtype for a 4-bit model)."""
        quantization = getattr(self.model.config, "quantization_config", None)
        if getattr(self.model, "is_loaded_in_4bit", False) and quantization is not None:
            return getattr(quantization, "bnb_4bit_compute_dtype", self.model.dtype)
        return self.model.dtype

    @property
    def base_name(self) -> str:
        """Human name of the base model."""
        return display_name(self.model_ref)

    def use_adapter(self, adapter_dir: str | Path | None, label: str | None = None) -> None:
        """Attach a LoRA adapter (replacing the previous one); None answers with the base alone."""
        if adapter_dir is not None and Path(adapter_dir) == self.adapter_dir:
            # Already attached: return without queueing for the lock behind every waiting answer (a visitor
            # picking a run would otherwise wait a whole turn before their question even queues). Each
            # generation re-checks its adapter under the lock, so a switch in between can't answer for us.
            return
        with self._lock:
            self._swap_adapter(adapter_dir, label)

    def _swap_adapter(self, adapter_dir: str | Path | None, label: str | None = None) -> None:
        """Make adapter_dir the adapter of the tuned side, on pristine base weights."""
        from peft import PeftModel

        if adapter_dir is not None and Path(adapter_dir) == self.adapter_dir:
            return
        if isinstance(self.model, PeftModel):
            # Measured: after attaching a second adapter to the 4-bit base (PEFT unload or
            # load_adapter/set_adapter alike), the first one's logits moved by ~0.1. Until that is
            # understood, a switch reloads the base (about 1.5 s for the embedded model on a CPU).
            self.model = self._load_base()
            self.model.eval()
        self.adapter_dir, self.adapter_label = None, None
        if adapter_dir is not None:
            self.model = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=TUNED_ADAPTER)
            self.model.eval()
            self.adapter_dir = Path(adapter_dir)
            self.adapter_label = label or self.adapter_dir.name

    @contextlib.contextmanager
    def _generation_context(self, adapter_on: bool, adapter: Path | None):
        """Held for one generate: the wanted adapter is put in place under the same lock, so another
        visitor switching adapters between 'select' and 'generate' can't answer for us."""
        with self._lock:
            if adapter is not None:
                self._swap_adapter(adapter)  # a no-op when it is already attached
            with self._adapter_context(adapter_on):
                yield

    def _adapter_context(self, adapter_on: bool):
        if adapter_on and self.adapter_dir is None:
            raise ValueError("no adapter loaded: pick a finished run or a Hub adapter first")
        if not adapter_on and self.adapter_dir is not None:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def fit(self, question: str | list[dict], settings: GenerationSettings | None = None) -> FittedPrompt:
        """The prompt the model will read for this question (or conversation), cut to fit its context."""
        settings = settings or GenerationSettings()
        budget = prompt_budget(self.model, settings.max_new_tokens, caps().chat_prompt_tokens)
        return fit_prompt(self.tokenizer, with_system_prompt(_as_messages(question), self.system_prompt), budget)

    def answer_many(
        self, questions: list, adapter_on: bool, settings: GenerationSettings | None = None, batch_size: int = 8,
        adapter: Path | None = None,
    ) -> list[str]:
        """Answers to many questions, generated in left-padded batches (`adapter` pins the tuned side's adapter)."""
        import torch

        settings = settings or GenerationSettings()
        prompts = [self.fit(q, settings).ids for q in questions]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
        answers: list[str] = [""] * len(prompts)
        pad = self.tokenizer.pad_token_id
        with self._generation_context(adapter_on, adapter), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(prompts[i]) for i in batch)
                ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch])
                mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch])
                out = self.model.generate(
                    input_ids=ids.to(self.model.device),
                    attention_mask=mask.to(self.model.device),
                    **settings.generate_kwargs(pad),
                )
                for row, index in enumerate(batch):
                    answers[index] = self.tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        return answers

    def answer(self, question, adapter_on: bool, settings: GenerationSettings | None = None,
               adapter: Path | None = None) -> str:
        """One answer, with the adapter on (tuned) or off (base)."""
        return self.answer_many([question], adapter_on, settings, adapter=adapter)[0]

    def answer_both(self, question, settings: GenerationSettings | None = None) -> dict:
        """The base and the tuned answer to the same question."""
        return {"base": self.answer(question, False, settings), "tuned": self.answer(question, True, settings)}

    def stream(self, question, adapter_on: bool, settings: GenerationSettings | None = None,
               adapter: Path | None = None) -> Iterator[str]:
        """Yield the answer as it grows, token by token; `adapter` pins which adapter the tuned side uses."""
        for (text,) in self._stream_rows([question], [True], settings, adapter, adapter_on):
            yield text

    def stream_both(self, base_question, tuned_question, settings: GenerationSettings | None = None,
                    adapter: Path | None = None) -> Iterator[tuple[str, str]]:
        """Yield (base text, tuned text) as both grow, from ONE batched generate on one model: the adapter's
        update is scaled by 0 on the base row and as trained on the tuned row, so the pair costs about one
        tuned answer's time (bench/chat_latency.py)."""
        if adapter is None and self.adapter_dir is None:
            raise ValueError("no adapter loaded: pick a finished run or a Hub adapter first")
        yield from self._stream_rows([base_question, tuned_question], [False, True], settings, adapter,
                                     adapter_on=True)

    def _stream_rows(self, questions: list, rows_with_adapter: list, settings: GenerationSettings | None,
                     adapter: Path | None, adapter_on: bool) -> Iterator[tuple[str, ...]]:
        """Generate all rows in one left-padded batch on a worker thread; yield every row's text as it grows."""
        import torch

        settings = settings or GenerationSettings()
        prompts = [self.fit(q, settings).ids for q in questions]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        streamer = RowsStreamer(self.tokenizer, len(prompts), self._end_ids())
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._generation_context(adapter_on, adapter), self._adapter_rows(rows_with_adapter), \
                        torch.inference_mode():
                    self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer,
                                        **settings.generate_kwargs(pad))
            except BaseException as exc:  # surfaced to the caller below, not lost in the thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if failure:
            raise failure[0]

    @contextlib.contextmanager
    def _adapter_rows(self, rows_with_adapter: list[bool]):
        """While held, each LoRA layer adds its update only to the rows marked True: its scaling becomes a
        per-row (batch, 1, 1) factor. PEFT's own mixed-adapter batches (adapter_names) do the same by
        splitting every layer's input by row: a 64-token pair took 10.96 s that way vs 7.43 s masked like
        this (bench/chat_latency.py, this CPU). Held under the generation lock (the scaling is shared)."""
        import torch

        if all(rows_with_adapter):
            yield
            return
        layers = [m for m in self.model.modules() if isinstance(getattr(m, "scaling", None), dict)
                  and TUNED_ADAPTER in m.scaling]
        saved = [layer.scaling[TUNED_ADAPTER] for layer in layers]
        mask = torch.tensor(rows_with_adapter, dtype=torch.float32, device=self.model.device).view(-1, 1, 1)
        try:
            for layer, scale in zip(layers, saved):
                layer.scaling[TUNED_ADAPTER] = mask * scale
            yield
        finally:
            for layer, scale in zip(layers, saved):
                layer.scaling[TUNED_ADAPTER] = scale

    def _end_ids(self) -> set[int]:
        """Token ids that end an answer (the generation config's eos ids and the tokenizer's)."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        return ids | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())


def describe_settings(settings: GenerationSettings) -> dict:
    """Settings as a plain dict (for output files)."""
    return asdict(settings)
