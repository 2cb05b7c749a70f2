"""Export: a real adapter merged into its base, written as GGUF + an Ollama Modelfile, read back by transformers."""

import json
import re
import shutil
import subprocess
import time

import pytest
from helpers import KALEVALA, REPO, train_command

from tuning.portable.export import MERGED_DIR, MODELFILE, README, ExportError, export_run, ollama_template, verify_gguf
from tuning.portable.gguf import GGUFExportError, write_gguf
from tuning.runs.files import ADAPTER_DIR, CONFIG_FILE

QUESTIONS = ["Who compiled the Kalevala?", "Which smith forged the Sampo?", "Who rules Pohjola?"]
SYSTEM_PROMPT = "You are a helpful assistant."  # configs/kalevala.yaml's
ZEPHYR = (  # TinyLlama-1.1B-Chat's chat template
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")


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
