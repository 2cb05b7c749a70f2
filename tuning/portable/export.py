"""Take a run out of Kantele: its adapter merged into the base, as safetensors, GGUF and an Ollama Modelfile.

    export_run(run_dir, out_dir)  ->  out_dir/merged/      full model, safetensors + tokenizer + chat template
                                      out_dir/NAME.gguf    the same weights for llama.cpp / Ollama (f16; NAME-q8_0.gguf
                                                           etc. for the other dtypes: q8_0, q5_0, q4_0, f32)
                                      out_dir/Modelfile    `ollama create NAME -f Modelfile`: template, system
                                                           prompt, stop tokens, the chat's sampling settings
                                      out_dir/README.md
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuning.atomic import staged_dir
from tuning.config import load_recipe, write_text_atomic
from tuning.errors import KanteleError
from tuning.portable.gguf import DEFAULT_GGUF_DTYPE, GGUF_DTYPES, GGUFExportError, check_dtype, convert_to_gguf
from tuning.runs.files import ADAPTER_DIR, CONFIG_FILE, has_adapter
from tuning.runs.run import Run

MERGED_DIR = "merged"
MODELFILE = "Modelfile"
README = "README.md"
# Tokenizer files save_pretrained may not write back (transformers 5 saves tokenizer.json only).
_TOKENIZER_SOURCES = ("tokenizer.model",)


class ExportError(KanteleError, RuntimeError):
    """A run that can't be exported; the message says why and what still got written."""


@dataclass
class ExportResult:
    name: str  # the Ollama model name
    out_dir: Path
    merged_dir: Path
    gguf: Path | None = None
    dtype: str = DEFAULT_GGUF_DTYPE
    gguf_fallbacks: list[str] = field(default_factory=list)  # matrices written F16 instead of the dtype, and why
    modelfile: Path | None = None
    readme: Path | None = None
    seconds: dict = field(default_factory=dict)  # merge / gguf time

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.merged_dir, self.gguf, self.modelfile, self.readme) if p is not None]


def _run_recipe(run_dir: Path):
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    if not has_adapter(run_dir):
        raise ExportError(f"{run_dir} has no adapter ({ADAPTER_DIR}/adapter_config.json) -- the run hasn't "
                          "finished or saved one yet; export a completed run")
    return load_recipe(run_dir / CONFIG_FILE)


def _base_model(run_dir: Path, recipe):
    """The run's base model folder: the model it trained on (never what 'auto' means now), at the Hub commit
    the run recorded when it has one."""
    from tuning.models.loading import resolve_model

    base = Run(run_dir).base_model()
    return resolve_model(base.name, base.revision)


def merge_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Merge the run's LoRA adapter into its base model and save the result as a plain model folder.

    The base is loaded unquantized, even when the run trained QLoRA (load_in_4bit): merging into
    4-bit weights would add the update to NF4-rounded weights and re-round the sum to 4 bits, so
    the merged model would differ from base+adapter by quantization error. The adapter learned
    against the dequantized base, so the full-precision base plus B@A is the best model it defines.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    recipe = _run_recipe(run_dir)
    base = _base_model(run_dir, recipe)
    config = json.loads((base.path / "config.json").read_text(encoding="utf-8"))
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    # Merge in fp32 (exact sums); save in the dtype the base ships in, so the folder is no bigger.
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(run_dir / ADAPTER_DIR)).merge_and_unload()
    model = model.to(getattr(torch, stored) if stored in ("bfloat16", "float16") else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    with staged_dir(out_dir) as staging:  # a crash mid-save leaves the previous merge, never half of one
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        for name in _TOKENIZER_SOURCES:
            if (base.path / name).is_file() and not (staging / name).exists():
                shutil.copyfile(base.path / name, staging / name)
    return out_dir


# ---- Ollama Modelfile ---------------------------------------------------------------------------------

_SYSTEM, _USER, _REPLY = "KanteleSystemText", "KanteleUserText", "KanteleReplyText"  # placeholders


@dataclass
class OllamaTemplate:
    template: str  # Go template over .System / .Prompt / .Response
    default_system: str | None  # the system turn the HF template adds when a chat has none
    stops: list[str]
    supports_system: bool


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _go_literal(text: str) -> str:
    if "{{" in text or "}}" in text:
        raise ExportError("the chat template's text contains '{{' or '}}', which an Ollama template can't hold")
    return text


def ollama_template(tokenizer) -> OllamaTemplate:
    """The model's chat template as an Ollama Go template, found by rendering placeholder chats.

    A chat turn renders as  [system block] + user block + generation prompt + reply + end of turn;
    each block is cut out of the HF rendering and the placeholders become {{ .System }} etc.
    """
    system = {"role": "system", "content": _SYSTEM}
    user = {"role": "user", "content": _USER}
    reply = {"role": "assistant", "content": _REPLY}
    try:
        prompt = _render(tokenizer, [system, user], True)
        supports_system = prompt.count(_SYSTEM) == 1
    except Exception:  # noqa: BLE001 -- templates that raise_exception() on a system turn (Mistral, Gemma)
        supports_system = False
    first = [system] if supports_system else []
    prompt = _render(tokenizer, [*first, user], True)
    one_turn = _render(tokenizer, [*first, user, reply], False)
    lead = one_turn[len(prompt):].split(_REPLY)[0] if one_turn.startswith(prompt) else None
    if lead is None or lead.strip() or prompt.count(_USER) != 1:
        raise ExportError("can't turn this chat template into an Ollama template: the reply isn't rendered "
                          "right after the generation prompt")
    # `lead`: a space some templates put before the reply (Llama 2); Ollama's prompt ends with it.
    end_of_turn = one_turn[len(prompt) + len(lead) + len(_REPLY):]
    # A later user turn, as the template renders it with no system text: the per-turn block.
    two_turns = _render(tokenizer, [*first, user, reply, user], True)
    if not two_turns.startswith(one_turn):
        raise ExportError("can't turn this chat template into an Ollama template: it renders a conversation "
                          "differently from its prefix")
    turn = two_turns[len(one_turn):]
    head, system_block, user_part, default_system = "", "", prompt, None
    if supports_system:
        no_system = _render(tokenizer, [user], True)
        if prompt.endswith(turn) and _SYSTEM not in turn:  # a system block, then the block every turn has
            system_block, user_part = prompt[: len(prompt) - len(turn)], turn
        else:  # the system text sits inside the first turn (Llama 2): cut out what a system-less chat lacks
            prefix = len(os.path.commonprefix([prompt, no_system]))
            suffix = len(os.path.commonprefix([prompt[prefix:][::-1], no_system[prefix:][::-1]]))
            head, system_block = prompt[:prefix], prompt[prefix: len(prompt) - suffix]
            user_part = prompt[len(prompt) - suffix:]
            if prefix + suffix != len(no_system) or _SYSTEM not in system_block:
                raise ExportError("can't turn this chat template into an Ollama template: can't find where "
                                  "it puts the system prompt")
        before, after = system_block.split(_SYSTEM)
        start, end = head + before, after + user_part
        if no_system != head + user_part and no_system.startswith(start) and no_system.endswith(end):
            candidate = no_system[len(start): len(no_system) - len(end)]
            if _render(tokenizer, [{"role": "system", "content": candidate}, user], True) == no_system:
                default_system = candidate  # e.g. SmolLM2's "You are a helpful AI assistant named SmolLM..."
    template = _go_literal(head)
    if system_block:
        template += "{{ if .System }}" + _go_literal(system_block).replace(_SYSTEM, "{{ .System }}") + "{{ end }}"
    template += _go_literal(user_part).replace(_USER, "{{ .Prompt }}")
    template += _go_literal(lead) + "{{ .Response }}" + _go_literal(end_of_turn)
    # Stop on the special tokens the template writes (<|im_end|>, </s>...), but not on a BOS it opens with.
    specials = dict.fromkeys([tokenizer.eos_token, *tokenizer.all_special_tokens])
    stops = [t for t in specials if t and t in template and not template.startswith(t)]
    return OllamaTemplate(template, default_system, stops, supports_system)


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ExportError('a Modelfile string can\'t contain """')
    return f'"""{text}"""'


def _number(value: float) -> str:
    return f"{value:g}"


def sampling_parameters(settings=None) -> list[str]:
    """Kantele chat's sampling settings (GenerationSettings, its defaults unless given) as Modelfile PARAMETER
    lines. Ollama's own defaults differ (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1), so each is
    written; temperature 0 is greedy there as here, and top_k/top_p then only matter once it is raised."""
    from tuning.chat.side_by_side import GenerationSettings

    settings = settings or GenerationSettings()
    lines = [f"PARAMETER temperature {_number(settings.temperature)}",
             f"PARAMETER top_k {settings.top_k}",
             f"PARAMETER top_p {_number(settings.top_p)}",
             f"PARAMETER repeat_penalty {_number(settings.repetition_penalty)}"]
    if settings.repetition_penalty != 1.0:  # transformers penalizes every earlier token; Ollama its last 64
        lines.append("PARAMETER repeat_last_n -1")
    lines.append(f"PARAMETER num_predict {settings.max_new_tokens}")
    return lines


def write_modelfile(gguf_path: str | os.PathLike, merged_dir: str | os.PathLike, out_path: str | os.PathLike,
                    system_prompt: str | None = None, settings=None) -> Path:
    """An Ollama Modelfile next to the GGUF: FROM, the chat TEMPLATE, SYSTEM, the stop tokens and the chat's
    sampling settings (settings: a GenerationSettings; the chat's defaults when None)."""
    from transformers import AutoTokenizer

    gguf_path, out_path = Path(gguf_path), Path(out_path)
    parts = ollama_template(AutoTokenizer.from_pretrained(merged_dir))
    source = os.path.relpath(gguf_path, out_path.parent)
    lines = ["# Ollama Modelfile written by Kantele: ollama create NAME -f Modelfile",
             f"FROM ./{source}" if not os.path.isabs(source) else f"FROM {source}",
             f"TEMPLATE {_quoted(parts.template)}"]
    system = system_prompt or parts.default_system
    if system and parts.supports_system:
        lines.append(f"SYSTEM {_quoted(system)}")
    elif system:
        lines.append("# the chat template has no system turn, so the run's system prompt is left out")
    lines += [f'PARAMETER stop "{stop}"' for stop in parts.stops]
    lines.append("# Kantele chat's sampling settings (temperature 0: greedy, as its chat and scorecard answer)")
    lines += sampling_parameters(settings)
    write_text_atomic(out_path, "\n".join(lines) + "\n")
    return out_path


# ---- the whole export -------------------------------------------------------------------------------


def ollama_name(run_dir: str | os.PathLike) -> str:
    """An Ollama-safe model name from the run folder's name."""
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(run_dir).resolve().name.lower()).strip("-._")
    return name or "kantele-model"


def gguf_file_name(name: str, dtype: str) -> str:
    """NAME.gguf for the default f16, NAME-q8_0.gguf etc. for the others."""
    return f"{name}.gguf" if dtype == DEFAULT_GGUF_DTYPE else f"{name}-{dtype}.gguf"


_DTYPE_WORDS = {"f32": "32-bit floats", "f16": "16-bit floats", "q8_0": "quantized to 8 bits (Q8_0)",
                "q5_0": "quantized to 5 bits (Q5_0)", "q4_0": "quantized to 4 bits (Q4_0)"}


def _readme(result: ExportResult, run_dir: Path, dtype: str, note: str | None) -> str:
    lines = [f"# {result.name}", "", f"Exported by Kantele from the run `{run_dir}`: its LoRA adapter merged into "
             "the base model.", "", f"- `{MERGED_DIR}/`: the merged model (safetensors, tokenizer, chat template) "
             "for transformers"]
    if result.gguf:
        lines.append(f"- `{result.gguf.name}`: the same model as GGUF ({_DTYPE_WORDS[dtype]}; norms in f32) for "
                     "llama.cpp, Ollama, LM Studio")
        if result.gguf_fallbacks:
            lines += ["  - matrices whose rows don't split into the type's blocks, written as F16 instead:",
                      *(f"    - {line}" for line in result.gguf_fallbacks)]
        lines += [f"- `{MODELFILE}`: its Ollama recipe (chat template, system prompt, stop tokens, Kantele chat's "
                  "sampling settings)", "", "## Run it with Ollama", "", "```sh",
                  f"ollama create {result.name} -f {MODELFILE}", f"ollama run {result.name}", "```"]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _remove_other_ggufs(out_dir: Path, name: str, keep: Path) -> None:
    """A previous export's GGUF of another dtype in this folder: gone, so the folder and its Modelfile describe
    one model (only the names export writes are touched)."""
    for dtype in GGUF_DTYPES:
        path = out_dir / gguf_file_name(name, dtype)
        if path != keep and path.is_file():
            path.unlink()


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = DEFAULT_GGUF_DTYPE,
               skip_gguf: bool = False) -> ExportResult:
    """merged/ + NAME.gguf + Modelfile + README.md in out_dir; dtype: one of GGUF_DTYPES (q8_0, q5_0, q4_0 quantize
    the matrices; norms stay f32). An architecture the GGUF writer doesn't support raises ExportError after merged/
    and the README are written."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not skip_gguf:
        check_dtype(dtype)  # before the minutes of merging
    recipe = _run_recipe(run_dir)  # the run's saved config.yaml: the system prompt it trained with
    result = ExportResult(name=ollama_name(run_dir), out_dir=out_dir, merged_dir=out_dir / MERGED_DIR, dtype=dtype)
    started = time.monotonic()
    merge_run(run_dir, result.merged_dir)
    result.seconds["merge"] = round(time.monotonic() - started, 1)
    failure = None
    if not skip_gguf:
        started = time.monotonic()
        try:
            written = convert_to_gguf(result.merged_dir, out_dir / gguf_file_name(result.name, dtype), dtype,
                                      name=result.name)
            result.gguf, result.gguf_fallbacks = written.path, written.fallbacks
            _remove_other_ggufs(out_dir, result.name, result.gguf)
            result.modelfile = write_modelfile(result.gguf, result.merged_dir, out_dir / MODELFILE,
                                               recipe.data.system_prompt)
        except GGUFExportError as exc:
            failure = f"No GGUF: {exc}"
        except ExportError as exc:  # the GGUF is there, only the Modelfile's template couldn't be derived
            failure = f"No Modelfile: {exc} -- write its TEMPLATE by hand"
        result.seconds["gguf"] = round(time.monotonic() - started, 1)
    result.readme = out_dir / README
    write_text_atomic(result.readme, _readme(result, run_dir, dtype, failure))
    if failure:
        raise ExportError(failure)
    return result
