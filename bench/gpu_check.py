"""GPU check: train the TinyLlama Kalevala recipe on this machine's GPU and show that it learned, fast.

One command for any CUDA machine with the Hub reachable (or TinyLlama in the Hugging Face cache). It prints
the device, its compute capability and the precision chosen for it; trains configs/kalevala-tinyllama.yaml
as `python -m tuning train` (its own process, as the app runs it) into RUNS/gpu-check-<time>; then reports
tokens/s (metrics.jsonl), peak GPU memory, wall time, the scorecard's key-fact rate base -> tuned
(eval.json), and the side-by-side chat against one answer (median of a few held-out questions).

Target: all of it within 8 minutes on a T4. Exit status 1 when training ran on the CPU instead of the GPU,
or the tuned key-fact rate is under --min-key-facts (0.70 on a GPU); 2 when there is no CUDA device.
`--device cpu` runs the same path on the CPU with no key-fact gate (a few CPU steps learn nothing): the
test suite uses it so this script can't rot.

    python bench/gpu_check.py [--runs DIR] [--set section.key=value ...]
    python bench/gpu_check.py --device cpu --model embedded --steps 4 --min-key-facts 0
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]  # runs on a bare GPU machine too (no `pip install -e .`); chat_latency is a neighbour

RECIPE = REPO / "configs" / "kalevala-tinyllama.yaml"
TARGET_SECONDS = 8 * 60
GPU_MIN_KEY_FACTS = 0.70
NO_CUDA_EXIT = 2
FAILED_EXIT = 1
SAMPLE_SECONDS = 0.25  # how often the device's memory in use is read while the run trains


class DeviceMemorySampler:
    """Peak memory in use on GPU 0 (every process's, CUDA contexts and allocator caches included) above
    what was in use when it started: what a run asks of the card, sampled while it runs."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.baseline = self._in_use()
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _in_use(self) -> int:
        free, total = self.torch.cuda.mem_get_info(0)
        return total - free

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self._in_use() - self.baseline)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def train_command(args, run_dir: Path) -> list[str]:
    """`python -m tuning train` on the recipe with this check's overrides."""
    overrides = list(args.set)
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.steps:
        overrides.append(f"training.max_steps={args.steps}")
    command = [sys.executable, "-m", "tuning", "train", "--config", str(args.config), "--output", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    return command


def train(args, run_dir: Path) -> tuple[int, float, float | None]:
    """Run training in its own process; (exit status, wall seconds, sampled peak GB on the GPU or None)."""
    from tuning.runs.queue import child_environment

    env = child_environment()  # as the app starts its runs: pinned to one GPU where several are visible
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the child must not find a GPU either
    started = time.perf_counter()
    if args.device == "cpu":
        status = subprocess.run(train_command(args, run_dir), cwd=REPO, env=env).returncode
        return status, time.perf_counter() - started, None
    with DeviceMemorySampler() as sampler:
        status = subprocess.run(train_command(args, run_dir), cwd=REPO, env=env).returncode
    return status, time.perf_counter() - started, sampler.peak / 1e9


def chat_latency(run_dir: Path, questions: int, tokens: int) -> dict:
    """Median seconds of one tuned answer and of both panes (one batched generate), `tokens` tokens each,
    interleaved per held-out question after a warm-up."""
    from chat_latency import FixedLength, timed  # bench/chat_latency.py: same forced-length answers

    from tuning.chat.side_by_side import SideBySideChat
    from tuning.data.examples import load_examples, user_prompts
    from tuning.runs.files import RUN_DATA_DIR, RUN_VALIDATION_FILE

    chat = SideBySideChat.from_run(run_dir)
    settings = FixedLength(max_new_tokens=tokens)
    asked = user_prompts(load_examples(run_dir / RUN_DATA_DIR / RUN_VALIDATION_FILE).examples)[:questions]
    timed(chat.stream_both(asked[0], asked[0], settings))  # warm-up: first-call allocations, kernels
    single, both = [], []
    for question in asked:
        single.append(timed(chat.stream(question, adapter_on=True, settings=settings))[1])
        both.append(timed(chat.stream_both(question, question, settings))[1])
    return {"single": statistics.median(single), "both": statistics.median(both), "questions": len(asked)}


def recorded_device(environment: dict) -> tuple[str, bool]:
    """(what a run's environment.json says it trained on, whether that was a GPU): tuning.hardware.device's record
    ({"name", "capability", "dtype", ...}), or the bare name older runs wrote."""
    device = environment.get("device")
    if isinstance(device, dict):
        return f"{device.get('name')} ({device.get('dtype')})", device.get("capability") is not None
    return str(device or "an unrecorded device"), bool(device) and not str(device).lower().startswith("cpu")


def report_training(run_dir: Path, wall: float, sampled_gb: float | None, device: str, figures: dict) -> list[str]:
    """Print what training measured (into figures too); return the reasons the check fails on."""
    from tuning.runs.files import ENVIRONMENT_FILE, read_json, read_metrics, read_status

    ran_on, ran_on_gpu = recorded_device(read_json(run_dir / ENVIRONMENT_FILE, default={}) or {})
    steps = [m for m in read_metrics(run_dir) if "loss" in m]
    rates = [m["tokens_per_s"] for m in steps[1:] if m.get("tokens_per_s")]  # the first line is warm-up
    status = read_status(run_dir)  # the step it ended at (metrics.jsonl has every logging_steps-th)
    figures.update(ran_on=ran_on, steps=status.get("step", 0), train_s=max((m.get("elapsed_s", 0.0) for m in steps),
                   default=0.0), process_s=round(wall, 1), tokens_per_s=statistics.median(rates) if rates else None)
    rate = f"median {figures['tokens_per_s']:,.0f} tokens/s" if rates else "no tokens/s logged"
    print(f"trained on {ran_on}: {figures['steps']} of {status.get('total_steps', '?')} steps in "
          f"{figures['train_s']:.1f} s, {rate}; the process took {wall:.1f} s (model load and scorecard included)")
    if device == "cuda":
        peaks = [m["max_memory_gb"] for m in steps if m.get("max_memory_gb") is not None]
        figures.update(max_allocated_gb=max(peaks, default=None), device_peak_gb=round(sampled_gb, 2))
        allocated = f"{max(peaks):.2f} GB allocated by training (max_memory_allocated)" if peaks else "not recorded"
        print(f"peak GPU memory: {allocated}; {sampled_gb:.2f} GB in use on the device at most "
              f"(sampled: CUDA context and allocator cache included, the scorecard's too)")
        if not ran_on_gpu:
            return [f"training fell back to the CPU (environment.json says {ran_on}): the GPU was not used"]
    return []


def report_scorecard(run_dir: Path, min_key_facts: float, figures: dict) -> list[str]:
    """Print the scorecard's key-fact rate base -> tuned (into figures too); return the reasons the check fails on."""
    from tuning.chat.scorecard import questions_phrase
    from tuning.runs.files import EVAL_FILE, read_json

    report = read_json(run_dir / EVAL_FILE)
    if not report:
        return [f"no scorecard ({run_dir / EVAL_FILE}): see {run_dir / 'train.log'}"]
    summary = report["summary"]
    facts = summary["metrics"].get("key_fact")
    if facts is None:
        return ["the scorecard has no key-fact rate: its questions name no key facts"]
    figures.update(key_facts_base=facts["base"], key_facts_tuned=facts["tuned"], scored=summary["questions"])
    gate = f"tuned >= {min_key_facts:.0%}" if min_key_facts > 0 else "none"
    print(f"scorecard ({questions_phrase(summary)}): key facts base {facts['base']:.1%} -> tuned "
          f"{facts['tuned']:.1%} (gate: {gate})")
    if facts["tuned"] < min_key_facts:
        return [f"tuned key facts {facts['tuned']:.1%} < {min_key_facts:.0%}: the recipe under-trained here -- "
                "configs/kalevala-tinyllama.yaml says how to read its curves and what to change"]
    return []


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (default; exit 2 without one) or cpu: the same path, for tests")
    parser.add_argument("--config", type=Path, default=RECIPE, help="recipe (default: the TinyLlama Kalevala one)")
    parser.add_argument("--model", help="base model instead of the recipe's (a Hub id, folder or 'embedded')")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps instead of the recipe's epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--runs", type=Path, default=REPO / "runs", help="where the run folder goes")
    parser.add_argument("--questions", type=int, default=5, help="held-out questions the chat timing asks")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per chat answer (forced)")
    parser.add_argument("--min-key-facts", type=float, default=None,
                        help=f"fail under this tuned key-fact rate (default {GPU_MIN_KEY_FACTS} on cuda, none on cpu)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: the chat timing stays on the CPU too
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: torch sees no GPU here (driver, CUDA_VISIBLE_DEVICES or a CPU-only torch build). "
              "Run this on a GPU machine, or pass --device cpu to run the same path on the CPU.", file=sys.stderr)
        return NO_CUDA_EXIT
    from tuning.hardware.device import read_device
    from tuning.quiet import quiet_library_noise

    quiet_library_noise()
    min_key_facts = args.min_key_facts
    if min_key_facts is None:
        min_key_facts = GPU_MIN_KEY_FACTS if args.device == "cuda" else 0.0
    device = read_device().record()  # the precision every stage picks here: bf16 from compute capability 8.0
    print(f"device: {device['name']}, compute capability {device['capability'] or 'none'}, "
          f"precision {device['dtype']}", flush=True)

    run_dir = args.runs / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
    status, wall, sampled_gb = train(args, run_dir)
    if status != 0:
        from tuning.runs.files import read_log_tail

        print(f"training failed (exit status {status}); the log's end:\n{read_log_tail(run_dir)}", file=sys.stderr)
        return FAILED_EXIT
    figures: dict = {"device": device}
    failures = report_training(run_dir, wall, sampled_gb, args.device, figures)
    failures += report_scorecard(run_dir, min_key_facts, figures)

    latency = figures["chat"] = chat_latency(run_dir, args.questions, args.tokens)
    print(f"chat, {args.tokens}-token answers, median of {latency['questions']} held-out questions: one tuned answer "
          f"{latency['single']:.2f} s, both panes {latency['both']:.2f} s = {latency['both'] / latency['single']:.2f}x")
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(f"total {figures['total_s']:.0f} s (target <= {TARGET_SECONDS} s on a T4); run folder: {run_dir}")
    for reason in failures:
        print(f"FAIL: {reason}", file=sys.stderr)
    print(json.dumps({"passed": not failures, **figures}))
    return FAILED_EXIT if failures else 0


if __name__ == "__main__":
    sys.exit(main())
