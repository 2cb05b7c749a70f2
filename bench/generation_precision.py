"""Answering in bf16 vs fp32 on this CPU: the chat's panes and the scorecard, timed side by side, and what it
does to the answers (greedy text identical? the key-fact rate?).

Both precisions load the same finished run (its base and adapter) the way the app does: the chat with the
NF4 weights dequantized once to the dtype, the scorecard on the 4-bit model computing in the dtype. The
chat's variants are interleaved per question, so drift of this noisy machine hits both alike; the
scorecards run one after the other on all the run's held-out questions (or --questions of them). Prints
what `compute_dtype: auto` chooses for answering here (tuning/hardware/cpu_precision.py) and the ratios, last.

    HF_HUB_OFFLINE=1 python bench/generation_precision.py RUN_DIR [--questions N] [--chat-questions 6]
"""

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from chat_latency import FixedLength, timed  # a neighbour: bench/ is on sys.path when run as a script

from tuning.chat.scorecard import answer_budget, sample_examples, score_answer, summarize, verdict
from tuning.chat.side_by_side import GenerationSettings, SideBySideChat
from tuning.config import load_recipe
from tuning.data.examples import load_examples, reference_answers, user_prompts
from tuning.hardware.device import GENERATION, SHORT_DTYPE, compute_dtype, cpu_measurement, read_device
from tuning.hardware.machine_cache import cpu_name
from tuning.models.loading import resolve_model
from tuning.quiet import quiet_library_noise
from tuning.runs.files import ADAPTER_DIR, CONFIG_FILE, RUN_DATA_DIR, RUN_VALIDATION_FILE

DTYPES = ("float32", "bfloat16")


def load_chat(run_dir: Path, dtype: str, dequantize: bool) -> SideBySideChat:
    """The run's base model and adapter, computing in `dtype` (as the chat: dequantized; the scorecard: 4-bit)."""
    recipe = load_recipe(run_dir / CONFIG_FILE)
    model = resolve_model(recipe.model.name, recipe.model.revision)
    chat = SideBySideChat(model, replace(recipe.model, compute_dtype=dtype), recipe.data.system_prompt,
                          dequantize=dequantize)
    chat.use_adapter(run_dir / ADAPTER_DIR, label=run_dir.name)
    return chat


def chat_timings(run_dir: Path, questions: list[str], tokens: int) -> dict:
    """Per dtype: median seconds of one pane's and both panes' forced-length answers, and of the first token."""
    chats = {dtype: load_chat(run_dir, dtype, dequantize=True) for dtype in DTYPES}
    settings = FixedLength(max_new_tokens=tokens)
    samples = {dtype: {"one": [], "both": [], "first": []} for dtype in DTYPES}
    for chat in chats.values():  # warm-up: first-call allocations and lazy imports
        timed(chat.stream_both(questions[0], questions[0], settings))
    for question in questions:
        for dtype, chat in chats.items():
            first, one = timed(chat.stream(question, adapter_on=True, settings=settings))
            first_both, both = timed(chat.stream_both(question, question, settings))
            samples[dtype]["one"].append(one)
            samples[dtype]["both"].append(both)
            samples[dtype]["first"].append(first_both)
    return {dtype: {name: statistics.median(values) for name, values in seen.items()}
            for dtype, seen in samples.items()}


def scorecards(run_dir: Path, max_questions: int) -> dict:
    """Per dtype: the scorecard's seconds, its summary and the tuned model's answers, on the same questions."""
    examples = sample_examples(load_examples(run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE).examples,
                               max_questions, seed=42)
    questions, references = user_prompts(examples), reference_answers(examples)
    results = {}
    for dtype in DTYPES:
        chat = load_chat(run_dir, dtype, dequantize=False)
        settings = GenerationSettings(max_new_tokens=answer_budget(chat.tokenizer, references))
        started = time.perf_counter()
        base = chat.answer_many(questions, adapter_on=False, settings=settings)
        tuned = chat.answer_many(questions, adapter_on=True, settings=settings)
        seconds = time.perf_counter() - started
        rows = []
        for example, reference, base_answer, tuned_answer in zip(examples, references, base, tuned):
            facts = list(example.get("key_facts") or [])
            base_scores, tuned_scores = score_answer(base_answer, reference, facts), score_answer(tuned_answer,
                                                                                                  reference, facts)
            rows.append({"base_scores": base_scores, "tuned_scores": tuned_scores,
                         "verdict": verdict(base_scores, tuned_scores)})
        results[dtype] = {"seconds": seconds, "summary": summarize(rows), "tuned": tuned, "base": base}
        del chat
    return results


def key_facts(summary: dict, side: str) -> float:
    return summary["metrics"]["key_fact"][side]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run")
    parser.add_argument("--questions", type=int, default=0, help="scorecard questions (0: all held-out)")
    parser.add_argument("--chat-questions", type=int, default=6, help="questions timed in the chat")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per chat answer (forced)")
    parser.add_argument("--skip-chat", action="store_true", help="time only the scorecards")
    args = parser.parse_args()
    quiet_library_noise()

    recipe = load_recipe(args.run / CONFIG_FILE)
    model = resolve_model(recipe.model.name, recipe.model.revision)
    device = read_device()
    auto = compute_dtype(replace(recipe.model, compute_dtype="auto"), device, model.path, GENERATION)
    measured = cpu_measurement(replace(recipe.model, compute_dtype="auto"), device, model.path)
    asked = user_prompts(load_examples(args.run / RUN_DATA_DIR / RUN_VALIDATION_FILE).examples)
    chat = None if args.skip_chat else chat_timings(args.run, asked[: args.chat_questions], args.tokens)
    cards = scorecards(args.run, args.questions)

    print(f"{cpu_name()}, {device.name}; {measured.summary() if measured else 'no CPU measurement (a GPU)'}")
    if chat:
        print(f"chat: {args.tokens}-token answers, median of {args.chat_questions} held-out questions (seconds)")
        print(f"{'dtype':6} {'tuned alone':>12} {'both panes':>11} {'first token':>12}")
        for dtype in DTYPES:
            t = chat[dtype]
            print(f"{SHORT_DTYPE[dtype]:6} {t['one']:12.2f} {t['both']:11.2f} {t['first']:12.2f}")
    questions = cards[DTYPES[0]]["summary"]["questions"]
    print(f"scorecard: {questions} held-out questions, base and tuned, 4-bit batches")
    print(f"{'dtype':6} {'seconds':>8} {'key facts base':>15} {'key facts tuned':>16} {'learned':>8} {'regressed':>10}")
    for dtype in DTYPES:
        summary = cards[dtype]["summary"]
        print(f"{SHORT_DTYPE[dtype]:6} {cards[dtype]['seconds']:8.1f} {key_facts(summary, 'base'):15.1%} "
              f"{key_facts(summary, 'tuned'):16.1%} {summary['verdicts'].get('learned', 0):8d} "
              f"{summary['verdicts'].get('regressed', 0):10d}")
    same = {side: sum(a == b for a, b in zip(cards["float32"][side], cards["bfloat16"][side]))
            for side in ("base", "tuned")}
    print(f"greedy answers identical in both precisions: base {same['base']}/{questions}, "
          f"tuned {same['tuned']}/{questions}")
    print(f"auto answers in: {SHORT_DTYPE[auto]} here")
    if chat:
        print(f"chat, tuned alone fp32/bf16 = {chat['float32']['one'] / chat['bfloat16']['one']:.2f}")
        print(f"chat, both panes fp32/bf16 = {chat['float32']['both'] / chat['bfloat16']['both']:.2f}")
    print(f"scorecard fp32/bf16 = {cards['float32']['seconds'] / cards['bfloat16']['seconds']:.2f}")


if __name__ == "__main__":
    main()
