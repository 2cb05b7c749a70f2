"""Answers side by side: one base model in memory, the LoRA adapter switched on (tuned) and off (base)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tuning.chat.context import FittedPrompt, fit_prompt, prompt_budget
from tuning.chat.fair_lock import FairLock
from tuning.chat.lora_scaling import masked_rows
from tuning.chat.pane_strategy import (
    CHAT_STRATEGIES,
    SCORECARD_STRATEGIES,
    THREADS,
    PaneTimings,
    can_run_side_by_side,
    choose_strategy,
    pane_timings,
)
from tuning.chat.row_streamer import MergedRows
from tuning.chat.side_threads import measure_strategies, run_sides_at_once
from tuning.config import ModelConfig
from tuning.data.chat_template import with_system_prompt
from tuning.errors import UsageError
from tuning.guards.caps import caps
from tuning.hardware.device import GENERATION, SHORT_DTYPE
from tuning.models.loading import (
    ResolvedModel,
    display_name,
    load_base_model,
    load_inference_model,
    load_tokenizer,
    resolve_model,
)
from tuning.runs.run import Run

TUNED_ADAPTER = "tuned"  # PEFT's name for the adapter in use


@dataclass
class GenerationSettings:
    """Decoding controls; temperature 0 means greedy (deterministic) decoding."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0  # > 0 forces answers this long (timing decode steps)

    def generate_kwargs(self, pad_token_id: int) -> dict:
        """The settings as `model.generate` keyword arguments."""
        kwargs = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "pad_token_id": pad_token_id,
        }
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        else:
            # Explicit so a model's generation_config that samples by default doesn't override greedy.
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        return kwargs


@dataclass(frozen=True)
class Pass:
    """Questions for one side (base, or tuned with adapter_on), answered in batches of batch_size."""

    questions: list
    adapter_on: bool
    settings: GenerationSettings
    batch_size: int = 8


@dataclass(frozen=True)
class PassAnswers:
    """A pass's answers and when (time.perf_counter) it started and ended."""

    answers: list[str]
    started: float
    ended: float


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
        self._timings: dict[int, PaneTimings] = {}  # rows a side -> the strategies' measured timings
        self.strategy_override: str | None = None  # a strategy to use instead of the measured one (benches)
        self._warm = False  # has a forward pass run on this model yet (see _warm_up)

    def _load_base(self):
        # Dequantized NF4 serves the chat's 1-2 rows on a CPU; the scorecard's left-padded batches of 8
        # were much slower that way (a Kalevala scorecard 2.0 min vs 52 s), so it keeps the 4-bit path.
        if self.dequantize:
            return load_inference_model(self.model_ref.path, self.model_cfg)
        return load_base_model(self.model_ref.path, self.model_cfg, work=GENERATION)

    @classmethod
    def from_run(cls, run_dir: str | Path, dequantize: bool = True) -> SideBySideChat:
        """Load the base model a run was trained on (never what 'auto' means now), in the same precision, with
        its adapter."""
        run = Run(run_dir)
        recipe, base = run.recipe(), run.base_model()
        model_cfg = dataclasses.replace(recipe.model, name=base.name, revision=base.revision)
        chat = cls(resolve_model(base.name, base.revision), model_cfg, recipe.data.system_prompt, dequantize=dequantize)
        chat.use_adapter(run.adapter_dir, label=run.id)
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
            self._warm = False
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
            raise UsageError("no adapter loaded: pick a finished run or a Hub adapter first")
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
        settings = settings or GenerationSettings()
        prompts = [self.fit(q, settings).ids for q in questions]
        with self._generation_context(adapter_on, adapter):
            return self._answer_batches(prompts, settings, batch_size)

    def answer_both_many(self, questions: list, settings: GenerationSettings | None = None,
                         batch_size: int = 8) -> tuple[list[str], list[str]]:
        """(base answers, tuned answers) to many questions, by the strategy measured fastest here for batches
        (pane_strategy: one side after the other on all cores, or both at once on a core each)."""
        settings = settings or GenerationSettings()
        if self.adapter_dir is None:
            raise UsageError("no adapter loaded: pick a finished run or a Hub adapter first")
        prompts = [self.fit(q, settings).ids for q in questions]
        with self._lock:
            strategy = self._strategy(min(batch_size, len(prompts)), SCORECARD_STRATEGIES)
            if strategy == THREADS:
                self._warm_up()
                answers: list[list[str]] = [[], []]

                def side(index: int) -> Callable[[], None]:
                    return lambda: answers[index].extend(self._answer_batches(prompts, settings, batch_size))

                run_sides_at_once(self.model, TUNED_ADAPTER, [side(0), side(1)], [False, True])
                return answers[0], answers[1]
            with self._adapter_context(adapter_on=False):
                base = self._answer_batches(prompts, settings, batch_size)
            return base, self._answer_batches(prompts, settings, batch_size)

    def answer_passes(self, passes: list[Pass]) -> list[PassAnswers]:
        """Each pass's answers (in order), with when it started and ended. Where both sides at once measured faster
        (pane_strategy, for the scorecard's batches), the base passes run in order on one core and the tuned
        passes on the other: a side that finishes a pass early goes on to its next one instead of waiting for
        the other side's; else every pass runs in turn on all cores."""
        if self.adapter_dir is None and any(p.adapter_on for p in passes):
            raise UsageError("no adapter loaded: pick a finished run or a Hub adapter first")
        import torch

        prompts = [[self.fit(q, p.settings).ids for q in p.questions] for p in passes]
        done: list[PassAnswers | None] = [None] * len(passes)
        cores = torch.get_num_threads()
        finished = {False: threading.Event(), True: threading.Event()}

        def take_free_cores(adapter_on: bool) -> Callable[[], None]:
            # Two sides rarely have the same work (the base model rambles to the limit, the tuned one answers in a
            # line): once the other side is done, this one takes every core for its remaining batches.
            def check() -> None:
                if finished[not adapter_on].is_set() and torch.get_num_threads() != cores:
                    torch.set_num_threads(cores)
            return check

        def side(adapter_on: bool) -> Callable[[], None]:
            def run() -> None:
                for index, one in enumerate(passes):
                    if one.adapter_on == adapter_on:
                        started = time.perf_counter()
                        answers = self._answer_batches(prompts[index], one.settings, one.batch_size,
                                                       take_free_cores(adapter_on))
                        done[index] = PassAnswers(answers, started, time.perf_counter())
                finished[adapter_on].set()
            return run

        with self._lock:
            both = {p.adapter_on for p in passes} == {False, True}
            if both and self._strategy(8, SCORECARD_STRATEGIES) == THREADS:
                self._warm_up()
                run_sides_at_once(self.model, TUNED_ADAPTER, [side(False), side(True)], [False, True])
            else:
                for adapter_on in (False, True):
                    with self._adapter_context(adapter_on) if any(p.adapter_on == adapter_on for p in passes) \
                            else contextlib.nullcontext():
                        side(adapter_on)()
        return done

    def _answer_batches(self, prompts: list[list[int]], settings: GenerationSettings, batch_size: int,
                        before_batch: Callable[[], None] | None = None) -> list[str]:
        """Greedy/sampled answers to tokenized prompts in left-padded batches (the caller holds the lock);
        before_batch runs before each."""
        import torch

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
        answers: list[str] = [""] * len(prompts)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                if before_batch is not None:
                    before_batch()
                batch = order[start : start + batch_size]
                out, width = self._generate([prompts[i] for i in batch], settings)
                for row, index in enumerate(batch):
                    answers[index] = self.tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        return answers

    def _generate(self, prompts: list[list[int]], settings: GenerationSettings, streamer=None):
        """One left-padded `generate` of these prompts: (output ids, prompt width). The caller holds the lock."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer,
                                  **settings.generate_kwargs(pad))
        return out, width

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
        """Yield (base text, tuned text) as both grow, from one model in memory, by the strategy measured
        fastest here (pane_strategy): one batched generate with the adapter's update scaled by 0 on the base
        row, or one generate per pane at once, each on its own core, the adapter off on the base pane's. Either
        way both panes grow together."""
        if adapter is None and self.adapter_dir is None:
            raise UsageError("no adapter loaded: pick a finished run or a Hub adapter first")
        yield from self._stream_rows([base_question, tuned_question], [False, True], settings, adapter,
                                     adapter_on=True)

    def pane_strategy(self) -> PaneTimings | None:
        """How both panes are answered on this machine, measured (on a CPU) the first time it is asked."""
        if not self._measurable():
            return None
        with self._lock:
            self._strategy(1, CHAT_STRATEGIES)
            return self._timings.get(1)

    def _stream_rows(self, questions: list, rows_with_adapter: list, settings: GenerationSettings | None,
                     adapter: Path | None, adapter_on: bool) -> Iterator[tuple[str, ...]]:
        """Generate the rows on worker threads (one batch, or one generate per row at once, as measured
        fastest); yield every row's text as it grows."""
        import torch

        settings = settings or GenerationSettings()
        prompts = [self.fit(q, settings).ids for q in questions]
        merged = MergedRows(self.tokenizer, len(prompts), self._end_ids())
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._generation_context(adapter_on, adapter), torch.inference_mode():
                    mixed = len(prompts) > 1 and not all(rows_with_adapter)
                    if mixed and self._strategy(1, CHAT_STRATEGIES) == THREADS:
                        self._warm_up()
                        jobs = [lambda row=row: self._generate([prompts[row]], settings, merged.streamer(row))
                                for row in range(len(prompts))]
                        run_sides_at_once(self.model, TUNED_ADAPTER, jobs, rows_with_adapter)
                    else:
                        with masked_rows(self.model, TUNED_ADAPTER, rows_with_adapter):
                            self._generate(prompts, settings, merged.streamer(None))
            except BaseException as exc:  # noqa: BLE001 -- surfaced to the caller below, not lost in the thread
                failure.append(exc)
            finally:
                merged.close()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from merged
        worker.join()
        if failure:
            raise failure[0]

    def _warm_up(self) -> None:
        """One token through the model on this thread before two threads share it: bitsandbytes repacks a 4-bit
        layer's weights for the CPU on its first forward, in place, and two threads doing that at once fail
        ("'QuantState' object has no attribute 'state2'"). The caller holds the lock."""
        import torch

        if self._warm:
            return
        with torch.inference_mode():
            self._generate([self.fit("Hi").ids], GenerationSettings(max_new_tokens=1))
        self._warm = True

    def _measurable(self) -> bool:
        return self.adapter_dir is not None and can_run_side_by_side(self.model.device.type == "cuda")

    def _strategy(self, rows: int, strategies: tuple[str, ...]) -> str:
        """The strategy measured fastest for `rows` rows a side (measured now if it never was; lock held)."""
        if self.strategy_override in strategies:
            return self.strategy_override
        if not self._measurable():
            return strategies[0]
        if rows not in self._timings:
            self._timings[rows] = pane_timings(self._model_key(), rows,
                                               lambda: measure_strategies(self, rows, strategies))
        timings = self._timings[rows]
        return choose_strategy(timings) if set(timings.both) == set(strategies) else strategies[0]

    def _model_key(self) -> str:
        """What the strategies' timings hold for: the model's shapes, how its weights are held, its dtype."""
        from tuning.hardware.cpu_precision import ModelShapes

        held = "4-bit" if getattr(self.model, "is_loaded_in_4bit", False) else "dense"
        return f"{ModelShapes.from_folder(self.model_ref.path).key()} | {held} | {self._compute_dtype()}"

    def _end_ids(self) -> set[int]:
        """Token ids that end an answer (the generation config's eos ids and the tokenizer's)."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        return ids | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())


def describe_settings(settings: GenerationSettings) -> dict:
    """Settings as a plain dict (for output files)."""
    return asdict(settings)
