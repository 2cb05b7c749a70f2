"""Export: a real adapter merged into its base, written as GGUF + an Ollama Modelfile, read back by transformers."""

import json
import re
import shutil
import subprocess
import time

import pytest
from helpers import KALEVALA, REPO, ZEPHYR, train_command

from tuning.portable.export import (
    MERGED_DIR,
    MODELFILE,
    README,
    ExportError,
    export_run,
    ollama_template,
    sampling_parameters,
)
from tuning.portable.gguf import GGUF_DTYPES, GGUFExportError, convert_to_gguf, write_gguf
from tuning.portable.gguf_check import read_back_answers, verify_gguf
from tuning.runs.files import ADAPTER_DIR, CONFIG_FILE

QUESTIONS = ["Who compiled the Kalevala?", "Which smith forged the Sampo?", "Who rules Pohjola?"]
SYSTEM_PROMPT = "You are a helpful assistant."  # configs/kalevala.yaml's


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data):
    """A real QLoRA run of the embedded model, 4 steps at a high learning rate so the adapter matters."""
    run_dir = tmp_path_factory.mktemp("export-runs") / "kalevala-tiny"
    extra = ["training.max_steps=4", "training.learning_rate=0.01", "training.warmup_ratio=0",
             "training.scorecard=false", "training.eval_each_epoch=false", "training.save_steps=100"]
    result = subprocess.run(train_command(run_dir, tiny_data, *extra), cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    started = time.monotonic()
    result = export_run(run, out, dtype="f32")
    result.seconds["total"] = time.monotonic() - started
    print(f"export of the embedded model: {result.seconds}")
    return result


def logits(model, ids):
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0]


def test_merged_model_equals_base_plus_adapter(run, exported):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.models.loading import resolve_model

    base_path = resolve_model("embedded").path
    tokenizer = AutoTokenizer.from_pretrained(exported.merged_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    merged = logits(AutoModelForCausalLM.from_pretrained(exported.merged_dir, dtype=torch.float32), ids)
    base_model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base = logits(base_model, ids)
    # The run trained on a 4-bit base; the reference is the adapter on the unquantized base.
    with_adapter = logits(PeftModel.from_pretrained(base_model, str(run / ADAPTER_DIR)), ids)
    assert torch.allclose(merged, with_adapter, atol=1e-3), (merged - with_adapter).abs().max()
    assert (merged - base).abs().max() > 1.0, "the adapter should change the model"
    config = json.loads((exported.merged_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in exported.merged_dir.iterdir()}
    assert not list(exported.merged_dir.glob("adapter_*")), "a merged folder has no adapter left"


def test_gguf_round_trip_gives_the_same_answers_and_token_ids(exported):
    check = verify_gguf(exported.merged_dir, exported.gguf, QUESTIONS, system_prompt=SYSTEM_PROMPT)
    print("\n".join(f"{q!r}: merged {m!r} | gguf {g!r}" for q, m, g, _ in check.answers))
    assert not check.token_mismatches, check.token_mismatches
    assert check.prompts_equal, "the GGUF's chat template renders the questions differently"
    assert [a[3] for a in check.answers] == [True] * len(QUESTIONS), check.answers
    assert all(a[1] for a in check.answers), "greedy answers are not empty"


def test_gguf_of_the_embedded_base_matches_llama_cpps_own(tmp_path):
    """The embedded model ships as a GGUF made by llama.cpp's converter; converting the folder we made from
    it back must give the same metadata and, dequantized, the same tensors: names, shapes, Q/K permutation."""
    import gguf
    import numpy as np

    from tuning.models.loading import embedded_gguf_path, resolve_model

    ours = gguf.GGUFReader(write_gguf(resolve_model("embedded").path, tmp_path / "base.gguf", "f16"))
    reference = gguf.GGUFReader(embedded_gguf_path())
    for key in ("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
                "llama.attention.layer_norm_rms_epsilon", "llama.rope.dimension_count", "llama.vocab_size",
                "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        assert ours.fields[key].contents() == reference.fields[key].contents(), key
    tensors = {t.name: t for t in ours.tensors}
    assert set(tensors) == {t.name for t in reference.tensors}
    for ref in reference.tensors:
        if ref.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.29.attn_v.weight",
                        "blk.3.ffn_down.weight", "output_norm.weight"):
            expected = gguf.quants.dequantize(ref.data, ref.tensor_type)
            got = np.asarray(tensors[ref.name].data, dtype=np.float32).reshape(expected.shape)
            assert np.allclose(got, expected, atol=1e-3, rtol=1e-3), ref.name  # f16 rounding only


def render_modelfile(modelfile: str, question: str) -> str:
    """What Ollama sends the model for a one-turn chat: TEMPLATE with .System (SYSTEM) and .Prompt filled in,
    cut at {{ .Response }} (Ollama drops everything from the .Response field on for the last turn)."""
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', modelfile, re.S | re.M)
    system = system.group(1) if system else ""
    template = template[: template.index("{{ .Response }}")]
    template = re.sub(r"\{\{ if \.System \}\}(.*?)\{\{ end \}\}", lambda m: m.group(1) if system else "",
                      template, flags=re.S)
    assert "{{" not in template.replace("{{ .System }}", "").replace("{{ .Prompt }}", "")
    return template.replace("{{ .System }}", system).replace("{{ .Prompt }}", question)


def test_modelfile_template_renders_like_the_chat_template(exported):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported.merged_dir)
    modelfile = exported.modelfile.read_text(encoding="utf-8")
    assert f"FROM ./{exported.gguf.name}\n" in modelfile
    assert f'SYSTEM """{SYSTEM_PROMPT}"""' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    question = "Who is Väinämöinen?"
    expected = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM_PROMPT},
                                              {"role": "user", "content": question}],
                                             tokenize=False, add_generation_prompt=True)
    assert render_modelfile(modelfile, question) == expected
    # With no system prompt, SmolLM2's template adds its own; the Modelfile's SYSTEM says the same.
    parts = ollama_template(tokenizer)
    assert parts.default_system.startswith("You are a helpful AI assistant named SmolLM")
    bare = modelfile.replace(f'SYSTEM """{SYSTEM_PROMPT}"""', f'SYSTEM """{parts.default_system}"""')
    assert render_modelfile(bare, question) == tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    readme = (exported.out_dir / README).read_text()
    assert f"ollama create {exported.name} -f Modelfile" in readme and f"ollama run {exported.name}" in readme


@pytest.fixture(scope="module")
def sentencepiece_llama(tmp_path_factory):
    """A tiny random Llama with a SentencePiece tokenizer.model trained here, and TinyLlama's chat template."""
    import io

    import sentencepiece
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    folder = tmp_path_factory.mktemp("spm-llama")
    model = io.BytesIO()
    text = (KALEVALA / "source.md").read_text(encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=model, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)  # as Llama's
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    vocab, _, merges = SentencePieceExtractor(str(folder / "tokenizer.model")).extract()
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)  # as TinyLlama
    tokenizer.chat_template = ZEPHYR
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_sentencepiece_llama_round_trips_through_gguf(sentencepiece_llama, tmp_path):
    import gguf

    path = write_gguf(sentencepiece_llama, tmp_path / "tiny.gguf", "f32")
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.model"].contents() == "llama" and fields["tokenizer.ggml.add_bos_token"].contents()
    assert "output.weight" in {t.name for t in gguf.GGUFReader(path).tensors}, "untied output is written"
    check = verify_gguf(sentencepiece_llama, path, ["Who forged the Sampo for Väinämöinen?"], max_new_tokens=8)
    assert not check.token_mismatches, check.token_mismatches
    assert check.prompts_equal and check.answers[0][3], check.answers


def test_modelfile_template_for_a_zephyr_chat_template(sentencepiece_llama, tmp_path):
    from transformers import AutoTokenizer

    from tuning.portable.export import write_modelfile

    modelfile = write_modelfile(tmp_path / "tiny.gguf", sentencepiece_llama, tmp_path / MODELFILE, "Be brief.")
    text = modelfile.read_text(encoding="utf-8")
    assert "FROM ./tiny.gguf\n" in text and 'PARAMETER stop "</s>"' in text
    tokenizer = AutoTokenizer.from_pretrained(sentencepiece_llama)
    expected = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Hei, mitä kuuluu?"}],
                                             tokenize=False, add_generation_prompt=True)
    assert expected.startswith("<|system|>\nBe brief.</s>\n<|user|>\n")
    assert render_modelfile(text, "Hei, mitä kuuluu?") == expected


def main_export(run, out, *extra):
    from tuning.cli import main

    return main(["export", "--run", str(run), "--out", str(out), *extra])


def test_cli_export_writes_the_files_and_the_ollama_command(run, tmp_path, capsys):
    out = tmp_path / "cli-out"
    assert main_export(run, out) == 0
    printed = capsys.readouterr().out
    gguf_file = out / "kalevala-tiny.gguf"
    assert (out / MERGED_DIR / "model.safetensors").is_file() and f"{out / MERGED_DIR}/" in printed
    for path in (gguf_file, out / MODELFILE, out / README):
        assert path.is_file() and str(path) in printed, path
    assert "ollama create kalevala-tiny -f Modelfile" in printed
    assert gguf_file.read_bytes()[:4] == b"GGUF"
    # f16 (the default): about half the f32 size of a 135M model.
    assert 200e6 < gguf_file.stat().st_size < 350e6
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left behind"


def test_cli_export_without_adapter_fails_clearly(run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / CONFIG_FILE, unfinished / CONFIG_FILE)
    assert main_export(unfinished, tmp_path / "out") == 2
    assert "has no adapter" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_export_of_an_architecture_gguf_cant_take_keeps_the_merged_folder(run, tmp_path, capsys, monkeypatch):
    import tuning.portable.gguf

    monkeypatch.setattr(tuning.portable.gguf, "SUPPORTED_ARCHITECTURES", ("MistralForCausalLM",))
    out = tmp_path / "out"
    assert main_export(run, out) == 2
    error = capsys.readouterr().err
    assert "LlamaForCausalLM" in error and "merged safetensors folder" in error
    assert (out / MERGED_DIR / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert "No GGUF:" in (out / README).read_text()


def test_unsupported_architecture_names_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(GGUFExportError, match="GPT2LMHeadModel.*merged safetensors folder"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(ExportError, match="not a run folder"):
        export_run(tmp_path, tmp_path / "out")


# ---- quantized GGUF ------------------------------------------------------------------------------------


def test_modelfile_carries_the_chats_sampling_settings_and_the_runs_system_prompt(run, exported):
    from tuning.chat.side_by_side import GenerationSettings
    from tuning.config import load_recipe

    modelfile = exported.modelfile.read_text(encoding="utf-8")
    defaults = GenerationSettings()  # the chat's: greedy, 128 new tokens
    for line in (f"PARAMETER temperature {defaults.temperature:g}", f"PARAMETER top_k {defaults.top_k}",
                 f"PARAMETER top_p {defaults.top_p:g}", f"PARAMETER repeat_penalty {defaults.repetition_penalty:g}",
                 f"PARAMETER num_predict {defaults.max_new_tokens}"):
        assert f"\n{line}\n" in modelfile, line
    assert "PARAMETER temperature 0\n" in modelfile and "repeat_last_n" not in modelfile
    # The system prompt is the one in the run's saved config.yaml, the one it trained with.
    assert load_recipe(run / CONFIG_FILE).data.system_prompt == SYSTEM_PROMPT
    assert modelfile.count("SYSTEM ") == 1 and f'SYSTEM """{SYSTEM_PROMPT}"""' in modelfile
    sampled = sampling_parameters(GenerationSettings(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.2,
                                                     max_new_tokens=64))
    assert sampled == ["PARAMETER temperature 0.7", "PARAMETER top_k 20", "PARAMETER top_p 0.9",
                       "PARAMETER repeat_penalty 1.2", "PARAMETER repeat_last_n -1", "PARAMETER num_predict 64"]


@pytest.fixture(scope="module")
def quantized(run, exported, tmp_path_factory):
    """The run exported as q8_0 (the whole path: merge, quantize, Modelfile); q4_0 and f16 of the same merge."""
    out = tmp_path_factory.mktemp("export-q8") / "out"
    out.mkdir()
    (out / "kalevala-tiny.gguf").write_bytes(b"an f16 export from before")  # another dtype's: replaced
    result = export_run(run, out, dtype="q8_0")
    files = {dtype: convert_to_gguf(result.merged_dir, tmp_path_factory.mktemp(dtype) / f"m-{dtype}.gguf", dtype)
             for dtype in ("q4_0", "f16")}
    return result, files


def test_quantized_ggufs_are_typed_as_llama_cpp_writes_them(exported, quantized):
    import gguf

    result, files = quantized
    assert result.gguf.name == "kalevala-tiny-q8_0.gguf" and result.dtype == "q8_0" and not result.gguf_fallbacks
    assert [p.name for p in result.out_dir.glob("*.gguf")] == [result.gguf.name], "the old f16 export is gone"
    assert f"FROM ./{result.gguf.name}\n" in result.modelfile.read_text()
    assert "quantized to 8 bits (Q8_0)" in (result.out_dir / README).read_text()
    for dtype, path, file_type in (("q8_0", result.gguf, gguf.LlamaFileType.MOSTLY_Q8_0),
                                   ("q4_0", files["q4_0"].path, gguf.LlamaFileType.MOSTLY_Q4_0)):
        reader = gguf.GGUFReader(path)
        assert reader.fields["general.file_type"].contents() == file_type, dtype
        assert reader.fields["general.quantization_version"].contents() == gguf.GGML_QUANT_VERSION
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        shapes = {t.name: len(t.shape) for t in reader.tensors}
        assert all(types[name] == "F32" for name in types if shapes[name] == 1), "norms stay f32"
        assert types["output_norm.weight"] == types["blk.0.attn_norm.weight"] == "F32"
        matrices = {types[name] for name in types if shapes[name] == 2 and name != "token_embd.weight"}
        assert matrices == {dtype.upper()}, (dtype, matrices)
        # SmolLM2 ties its output to token_embd: llama-quantize keeps it at Q8_0 for the 4/5-bit types.
        assert types["token_embd.weight"] == "Q8_0"
    assert set(files["q4_0"].tensor_types.values()) == {"Q4_0", "Q8_0", "F32"} and not files["q4_0"].fallbacks
    f16, f32 = files["f16"].size, exported.gguf.stat().st_size
    assert 0.50 < result.gguf.stat().st_size / f16 < 0.56  # 8.5 bits a weight vs 16
    assert 0.28 < files["q4_0"].size / f16 < 0.40  # 4.5 bits, the tied embeddings at 8.5
    assert 1.9 < f32 / f16 < 2.05


def test_quantized_ggufs_read_back_by_transformers_answer_like_the_merged_model(quantized):
    result, files = quantized
    merged = read_back_answers(result.merged_dir, QUESTIONS, SYSTEM_PROMPT, max_new_tokens=24)
    q8 = read_back_answers(result.merged_dir, QUESTIONS, SYSTEM_PROMPT, gguf_path=result.gguf, max_new_tokens=24)
    q4 = read_back_answers(result.merged_dir, QUESTIONS, SYSTEM_PROMPT, gguf_path=files["q4_0"].path,
                           max_new_tokens=24)
    print("\n".join(f"{q!r}: merged {m!r} | q8_0 {a!r} | q4_0 {b!r}" for q, m, a, b in zip(QUESTIONS, merged, q8, q4)))
    assert all(merged) and all(q8) and all(q4), "every side answers"
    assert sum(a == b for a, b in zip(merged, q8)) >= len(QUESTIONS) - 1, (merged, q8)  # q4_0: not asserted equal


def test_matrices_whose_rows_dont_split_into_blocks_fall_back_to_f16(sentencepiece_llama, tmp_path):
    """llama.cpp's rule: a row length that isn't a multiple of the block size (32 for Q8_0) can't be
    quantized; the matrix is written F16 and the export says which."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "narrow"
    shutil.copytree(sentencepiece_llama, folder)
    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k != "head_dim"}
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**config, "hidden_size": 48, "intermediate_size": 64})).save_pretrained(folder)
    written = convert_to_gguf(folder, tmp_path / "narrow.gguf", "q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(written.path).tensors}
    # 48-wide rows: embeddings, Q/K/V, gate/up, the untied output; 64-wide ffn_down quantizes.
    narrow = {"token_embd.weight", "output.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
              "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"}
    assert {name for name, kind in types.items() if kind == "F16"} == {n.replace("0", str(i)) for n in narrow
                                                                      for i in (0, 1)}
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.1.attn_norm.weight"] == "F32"
    assert len(written.fallbacks) == 14 and all("block of 32" in line for line in written.fallbacks)
    assert any(line.startswith("blk.0.attn_q.weight: rows of 48 values") for line in written.fallbacks)
    AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="narrow.gguf")  # a mixed file reads back


def test_unknown_dtype_is_refused_with_the_choices(run, tmp_path, capsys):
    choices = ", ".join(GGUF_DTYPES)
    assert choices == "q8_0, q5_0, q4_0, f16, f32"
    with pytest.raises(GGUFExportError, match=f"one of {choices}, not 'q3_k'"):
        export_run(run, tmp_path / "out", dtype="q3_k")
    assert not (tmp_path / "out").exists(), "refused before merging"
    with pytest.raises(GGUFExportError, match="one of q8_0"):
        write_gguf(run, tmp_path / "x.gguf", "int8")
    with pytest.raises(SystemExit) as exit_:
        main_export(run, tmp_path / "out", "--dtype", "q3_k")
    assert exit_.value.code == 2
    assert "invalid choice: 'q3_k' (choose from 'q8_0', 'q5_0', 'q4_0', 'f16', 'f32')" in capsys.readouterr().err
