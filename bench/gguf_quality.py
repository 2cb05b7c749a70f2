"""What each GGUF weight type costs: a run merged once, written as every dtype, each file read back by transformers.

Target (issue 21): q8_0 gives >= 95% of the greedy answers the merged model gives, word for word, at about half
the f16 size. For each dtype: the file's size, its share of greedy answers identical to the merged model's on the
run's held-out questions, and its key-fact rate (the scorecard's own has_key_facts). All answers come from
tuning.portable.gguf_check.read_back_answers: the chat's prompts (with the run's system prompt) in the scorecard's
left-padded batches of 8, fp32 compute, the scorecard's answer budget -- so only the weights differ. Prints a
markdown table.

--with-chat adds a row for the model the visitor chatted with (the 4-bit QLoRA base + adapter, as Chat and the
scorecard answer): how far the merged model itself already is from it, word for word.

    python bench/gguf_quality.py RUN [--dtypes q8_0 q5_0 q4_0 f16 f32] [--sample N] [--out DIR] [--with-chat]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tuning.chat.scorecard import answer_budget, has_key_facts, sample_examples
from tuning.data.examples import load_examples, reference_answers, user_prompts
from tuning.models.loading import load_tokenizer
from tuning.portable.export import gguf_file_name, merge_run, ollama_name
from tuning.portable.gguf import GGUF_DTYPES, convert_to_gguf
from tuning.portable.gguf_check import read_back_answers
from tuning.quiet import quiet_library_noise
from tuning.runs.run import Run


def key_fact_rate(answers: list[str], facts: list[list[str]]) -> str:
    """'41/58 (70.7%)' over the questions that have key facts."""
    verdicts = [v for v in (has_key_facts(a, f) for a, f in zip(answers, facts)) if v is not None]
    return f"{sum(verdicts)}/{len(verdicts)} ({sum(verdicts) / len(verdicts):.1%})" if verdicts else "--"


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run folder (its adapter, config and validation split)")
    parser.add_argument("--dtypes", nargs="+", choices=GGUF_DTYPES, default=list(GGUF_DTYPES))
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="a seeded sample of N held-out questions, as the scorecard samples (0: all)")
    parser.add_argument("--out", type=Path, help="keep the merged folder and the GGUFs here (default: a temp "
                                                 "folder, removed)")
    parser.add_argument("--with-chat", action="store_true",
                        help="also the run's own chat model (base as trained, 4-bit for QLoRA, + adapter)")
    args = parser.parse_args()
    quiet_library_noise()

    run = Run(args.run)
    held_out = load_examples(run.validation_file).examples
    examples = sample_examples(held_out, args.sample, seed=42)
    questions, references = user_prompts(examples), reference_answers(examples)
    facts = [list(example.get("key_facts") or []) for example in examples]
    system_prompt = run.recipe().data.system_prompt
    out = args.out or Path(tempfile.mkdtemp(prefix="gguf-quality-"))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        merged = merge_run(args.run, out / "merged")
        timings["merge"] = time.perf_counter() - started
        merged_size = folder_bytes(merged)
        budget = answer_budget(load_tokenizer(merged), references)
        started = time.perf_counter()
        reference = read_back_answers(merged, questions, system_prompt, max_new_tokens=budget)
        timings["answers merged"] = time.perf_counter() - started

        name, files, sizes, rows = ollama_name(args.run), {}, {}, []
        if args.with_chat:
            from tuning.chat.side_by_side import GenerationSettings, SideBySideChat

            started = time.perf_counter()
            chat = SideBySideChat.from_run(args.run)
            answers = chat.answer_many(questions, True, GenerationSettings(max_new_tokens=budget))
            timings["answers chat"] = time.perf_counter() - started
            same = sum(a == b for a, b in zip(answers, reference))
            chat_row = (f"| chat model ({chat.precision}, + adapter) | -- | -- | "
                        f"{same}/{len(questions)} ({same / len(questions):.1%}) | {key_fact_rate(answers, facts)} |")
            del chat
        for dtype in dict.fromkeys([*args.dtypes, "f16"]):  # f16 is the size yardstick, written even if not asked
            started = time.perf_counter()
            files[dtype] = convert_to_gguf(merged, out / gguf_file_name(name, dtype), dtype, name=name)
            timings[f"write {dtype}"] = time.perf_counter() - started
            sizes[dtype] = files[dtype].size
        for dtype in args.dtypes:
            started = time.perf_counter()
            answers = read_back_answers(merged, questions, system_prompt, gguf_path=files[dtype].path,
                                        max_new_tokens=budget)
            timings[f"answers {dtype}"] = time.perf_counter() - started
            same = sum(a == b for a, b in zip(answers, reference))
            rows.append((dtype, sizes[dtype], f"{same}/{len(questions)} ({same / len(questions):.1%})",
                         key_fact_rate(answers, facts)))
            for question, merged_answer, answer in zip(questions, reference, answers):
                if answer != merged_answer:
                    print(f"[{dtype}] {question}\n    merged: {merged_answer!r}\n    {dtype}: {answer!r}")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)

    f16 = sizes["f16"]
    asked = len(questions), len(held_out)
    print(f"\n{asked[0]} of {asked[1]} held-out questions of {args.run}, greedy, up to {budget} new tokens, "
          f"system prompt {system_prompt!r}; answers read back by transformers (gguf_file=), fp32 compute\n")
    print("| dtype | size (MB) | size vs f16 | identical answers | key facts |")
    print("|---|---:|---:|---:|---:|")
    print(f"| merged (safetensors) | {merged_size / 1e6:.1f} | {merged_size / f16:.2f} | (reference) | "
          f"{key_fact_rate(reference, facts)} |")
    for dtype, size, same, key_facts in rows:
        print(f"| {dtype} | {size / 1e6:.1f} | {size / f16:.2f} | {same} | {key_facts} |")
    if args.with_chat:
        print(chat_row)
    for dtype in args.dtypes:
        for fallback in files[dtype].fallbacks:
            print(f"{dtype}: F16 instead: {fallback}")
    print("\ntimes: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items()))


if __name__ == "__main__":
    main()
