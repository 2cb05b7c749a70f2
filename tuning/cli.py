"""`python -m tuning {train,preview,answer,eval,generate,push,export,serve,deploy,bundle,import-adapter}`: everything
the app does, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tuning.cli_publish import add_publish_parsers
from tuning.runs.files import DEFAULT_RUNS_DIR


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    from tuning.chat.side_by_side import GenerationSettings

    defaults = GenerationSettings()
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)


def _settings(args):
    from tuning.chat.side_by_side import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )


def new_run_dir(config: Path, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """runs/<recipe>-<timestamp>: a fresh folder name for a run."""
    return runs_dir / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def command_train(args) -> int:
    """Train per a recipe into a run folder."""
    from tuning.config import apply_overrides, load_recipe
    from tuning.training.train import train

    output = Path(args.output) if args.output else new_run_dir(Path(args.config))
    if args.resume:
        from tuning.runs.files import CONFIG_FILE

        if not args.output:
            raise SystemExit("--resume needs --output RUN_DIR (the run to continue)")
        config = output / CONFIG_FILE if (output / CONFIG_FILE).is_file() else Path(args.config)
    else:
        config = Path(args.config)
    recipe = apply_overrides(load_recipe(config), args.set or [])
    adapter = train(recipe, output, resume=args.resume)
    print(f"adapter: {adapter}")
    return 0


def command_answer(args) -> int:
    """Answer questions with the adapter off and on; one JSON line per question."""
    from tuning.chat.side_by_side import SideBySideChat
    from tuning.data.examples import write_jsonl

    questions = _read_questions(Path(args.questions))
    chat = SideBySideChat.from_run(args.run)
    settings = _settings(args)
    base = chat.answer_many(questions, adapter_on=False, settings=settings)
    tuned = chat.answer_many(questions, adapter_on=True, settings=settings)
    rows = [{"question": q, "base": b, "tuned": t} for q, b, t in zip(questions, base, tuned)]
    if args.out:
        write_jsonl(rows, args.out)
        print(f"{len(rows)} answers written to {args.out}")
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _read_questions(path: Path) -> list[str]:
    """Questions from `{"question": ...}` lines, or the user turns of any supported data file."""
    from tuning.data.examples import DataError, load_examples, read_rows, user_prompts

    rows = read_rows(path)
    if rows and all({k.lower() for k in row} <= {"question", "id", "key_facts"} for _, row in rows):
        questions = []
        for number, row in rows:
            text = str(row.get("question") or row.get("Question") or "").strip()
            if not text:
                raise DataError(f"{path} row {number}: question: empty -- write the question to ask")
            questions.append(text)
        return questions
    return user_prompts(load_examples(path).examples)


def command_eval(args) -> int:
    """Score base vs tuned on held-out questions; print the table, write eval.json."""
    from tuning.chat.probes.run_probes import parse_probes
    from tuning.chat.scorecard import format_summary, score_run
    from tuning.training.curves import save_training_curves

    probes = parse_probes(args.probes)  # before any model loads: a misspelt probe fails at once
    report = score_run(args.run, args.data, settings=_settings(args), max_questions=args.sample, probes=probes,
                       probe_sample=args.probe_sample, unanswerable_file=args.unanswerable, sources=args.sources)
    save_training_curves(args.run)
    print(format_summary(report))
    return 0


def command_generate(args) -> int:
    """Generate validated QA pairs from documents into a JSONL file (with provenance) and print a summary."""
    import os

    from tuning.data.examples import read_jsonl, user_prompts, write_jsonl
    from tuning.qa.choices import GenerationChoices, prepare_generation
    from tuning.qa.generate import failure_rows, generate_qa, summarize
    from tuning.qa.sources import read_documents

    # The app's Generate panel builds its backend and settings with the same function: the same checks and caps,
    # all before any document is read.
    backend, settings = prepare_generation(GenerationChoices(
        backend=args.backend, model=args.model or "", base_url=args.base_url or "",
        api_key=os.environ.get(args.api_key_env, "") if args.api_key_env else "", in_flight=args.in_flight,
        pairs_per_batch=args.per_batch, batches=args.batches, off_topic=args.off_topic, topic=args.topic,
        judge=args.judge, temperature=args.temperature, seed=args.seed, max_reply_tokens=args.max_reply_tokens,
        duplicate_similarity=args.duplicate_threshold, min_grounding=args.min_grounding,
        min_judge_score=args.min_judge_score))
    # One request's caps over every document, as in the app; "-" reads the text from stdin.
    pasted = sys.stdin.read() if "-" in args.source else ""
    chunks = read_documents([source for source in args.source if source != "-"], pasted, args.chunk_chars,
                            args.overlap_chars)
    existing = [q for path in args.against or [] for q in user_prompts(read_jsonl(path))]
    print(f"{len(chunks)} chunks from {', '.join(args.source)}; backend: {backend.label}", file=sys.stderr)
    results = []
    for result in generate_qa(chunks, backend, settings, existing):
        results.append(result)
        where = f"chunk {result.chunk.chunk_id} of {result.chunk.source}" if result.chunk else "off-topic"
        status = f"FAILED after {result.attempts} attempts: {result.error}" if result.error else \
            f"{len(result.kept)} kept, {len(result.removed)} removed"
        print(f"batch {result.number} ({where}): {status}", file=sys.stderr, flush=True)
        for note in result.notes:
            print(f"    {note}", file=sys.stderr)
    out = Path(args.out)
    write_jsonl([pair.to_row() for result in results for pair in result.kept], out)
    failures = failure_rows(results)
    if failures:
        rejected = out.with_name(out.stem + ".rejected.jsonl")
        write_jsonl(failures, rejected)
        print(f"removed pairs and failed batches: {rejected}", file=sys.stderr)
    summary = summarize(results)
    print(f"{summary.as_text()}\nwritten: {out}")
    return 0 if summary.kept else 1


def command_preview(args) -> int:
    """Print a row's tokens as training masks them -- colours on a terminal, [[trained]] spans in a log -- with the
    counts. Only the tokenizer loads."""
    import os

    from tuning.config import apply_overrides, load_recipe
    from tuning.data.label_preview import format_preview, preview_row

    recipe = apply_overrides(load_recipe(Path(args.config)), args.set or [])
    preview = preview_row(recipe, args.row, file=args.file)
    print(format_preview(preview, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `python -m tuning` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m tuning", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune with LoRA/QLoRA per a recipe")
    train.add_argument("--config", default="configs/kalevala.yaml", help="recipe YAML")
    train.add_argument("--output", help="run folder (default: runs/<recipe>-<time>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a recipe value")
    train.set_defaults(func=command_train)

    answer = commands.add_parser("answer", help="answer questions with the base and the tuned model")
    answer.add_argument("--run", required=True, help="run folder with an adapter")
    answer.add_argument("--questions", required=True, help='JSONL of {"question": ...} or any data file')
    answer.add_argument("--out", help="output JSONL (default: print)")
    _add_generation_flags(answer)
    answer.set_defaults(func=command_answer)

    evaluate = commands.add_parser("eval", aliases=["scorecard"], help="base vs tuned scorecard on held-out questions")
    evaluate.add_argument("--run", required=True, help="run folder with an adapter")
    evaluate.add_argument("--data", help="questions with references (default: the run's validation split)")
    evaluate.add_argument("--sample", type=int, default=0, metavar="N",
                          help="score a seeded sample of N questions, kept in file order (default: all)")
    evaluate.add_argument("--probes", default="", metavar="NAMES",
                          help="also ask the probes named, comma-separated: forgetting (general skills kept), "
                               "limits (off-topic and unanswerable questions), memorised (asked as trained vs "
                               "paraphrased), retrieval (base and tuned with BM25 passages in the prompt)")
    evaluate.add_argument("--probe-sample", type=int, default=0, metavar="N",
                          help="ask a seeded sample of N questions of each probe (default: all)")
    evaluate.add_argument("--unanswerable", metavar="FILE",
                          help="in-domain questions the data never answers, one {\"question\": ...} a line "
                               "(default: the Kalevala's own, for a run on the Kalevala pairs)")
    evaluate.add_argument("--sources", nargs="+", metavar="FILE",
                          help="documents the retrieval probe searches (default: the Kalevala source, for a run on "
                               "the Kalevala pairs)")
    _add_generation_flags(evaluate)
    evaluate.set_defaults(func=command_eval)

    preview = commands.add_parser("preview", help="a data row's tokens as training masks them: trained on or context")
    preview.add_argument("--config", default="configs/kalevala.yaml", help="recipe YAML")
    preview.add_argument("--row", type=int, required=True, metavar="N",
                         help="the row's number in the data file, from 1 (as error messages number rows)")
    preview.add_argument("--file", help="which of data.train, by name or path, when it names several (default: the first)")
    preview.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a recipe value")
    preview.set_defaults(func=command_preview)

    _add_generate_parser(commands)
    add_publish_parsers(commands)
    return parser


def _add_generate_parser(commands) -> None:
    from tuning.qa.backends import DEFAULT_REMOTE_IN_FLIGHT
    from tuning.qa.sources import DEFAULT_CHUNK_CHARS, DEFAULT_OVERLAP_CHARS
    from tuning.qa.validate import ValidationSettings

    checks = ValidationSettings()
    generate = commands.add_parser("generate", help="generate validated QA pairs from documents")
    generate.add_argument("--source", required=True, nargs="+", help=".txt / .md / .pdf documents ('-': text from stdin)")
    generate.add_argument("--out", required=True, help="JSONL of kept pairs (messages + provenance + checks)")
    generate.add_argument("--per-batch", type=int, default=10, help="pairs asked per batch (10-20)")
    generate.add_argument("--batches", type=int, default=0, help="batches in all (default: one per chunk)")
    generate.add_argument("--backend", choices=["local", "remote"], default="local",
                          help="local: a transformers model in this process; remote: a chat-completions endpoint")
    generate.add_argument("--model", help="local: model id/folder (default: auto); remote: the served model id")
    generate.add_argument("--base-url", help="remote: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 "
                                             "(omit for Hugging Face Inference Providers)")
    generate.add_argument("--api-key-env", metavar="VAR", help="remote: environment variable holding the key "
                                                               "(a key is never taken on the command line)")
    generate.add_argument("--in-flight", type=int, default=DEFAULT_REMOTE_IN_FLIGHT, help="remote: requests at once")
    generate.add_argument("--chunk-chars", type=int, default=DEFAULT_CHUNK_CHARS)
    generate.add_argument("--overlap-chars", type=int, default=DEFAULT_OVERLAP_CHARS)
    generate.add_argument("--temperature", type=float, default=0.3, help="0 = greedy")
    generate.add_argument("--max-reply-tokens", type=int, default=0,
                          help="cap on each reply's tokens (default: enough for the pairs asked)")
    generate.add_argument("--seed", type=int, default=0, help="same seed, same source: the same pairs (local model)")
    generate.add_argument("--off-topic", type=int, default=0, help="add this many off-topic prompts with a redirect")
    generate.add_argument("--topic", default="", help="what off-topic answers steer back to, e.g. 'the Kalevala'")
    generate.add_argument("--judge", action="store_true", help="score each pair 1-10 with the same LLM")
    generate.add_argument("--min-judge-score", type=int, default=checks.min_judge_score)
    generate.add_argument("--duplicate-threshold", type=float, default=checks.duplicate_similarity,
                          help="question similarity (0-1) at which a pair counts as a near duplicate")
    generate.add_argument("--min-grounding", type=float, default=checks.min_grounding,
                          help="share of answer words found in the chunk below which a pair is flagged")
    generate.add_argument("--against", nargs="+", help="existing datasets (JSONL) to remove duplicates against")
    generate.set_defaults(func=command_generate)


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one clear line instead of a traceback."""
    from tuning.errors import KanteleError
    from tuning.quiet import quiet_library_noise

    args = build_parser().parse_args(argv)
    if args.func is command_train:
        from tuning.training.early_stop import remember_stop_signals

        remember_stop_signals()  # before any heavy import: a Stop pressed during them must not kill the run
    quiet_library_noise()
    try:
        return args.func(args)
    except (KanteleError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
