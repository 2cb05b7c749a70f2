"""The device decides, visibly: one precision choice (bf16 only where the GPU has it natively, or where the CPU
measured it faster) used by model loading, bitsandbytes, the Trainer and the run's record; the app says what
hardware serves it, and a Space that asked for a GPU it can't use says so. Every GPU here is faked: torch.cuda
answers as that card would; so is the CPU's bf16 measurement (tests/hardware/test_cpu_precision.py times the real one)."""

import json
import sys
from types import SimpleNamespace

import pytest
import torch

import tuning.hub.space
import tuning.models.loading
from tuning.config import ModelConfig, RecipeConfig
from tuning.hardware.device import (
    SPACE_ID_ENV,
    ZEROGPU_ENV,
    compute_dtype,
    read_device,
    space_gpu_warning,
    startup_line,
    trainer_precision,
)
from tuning.hub.space import SpaceSettings
from tuning.models.loading import GPU_DEFAULT_MODEL, bnb_config, load_base_model, torch_dtype
from tuning.runs.files import ENVIRONMENT_FILE
from tuning.training.distributed import Placement

GPUS = {  # compute capability -> a card that has it
    (7, 0): ("Tesla V100-SXM2-16GB", 16.9),
    (7, 5): ("Tesla T4", 15.6),
    (8, 0): ("NVIDIA A100-SXM4-40GB", 42.4),
    (8, 6): ("NVIDIA A10G", 23.7),
    (8, 9): ("NVIDIA L4", 23.7),
    (9, 0): ("NVIDIA H100 80GB HBM3", 85.0),
}


def fake_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    """torch.cuda as on a machine with this one GPU -- including torch's own bf16 answer, which counts emulation."""
    name, memory_gb = GPUS[capability]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: SimpleNamespace(
        name=name, major=capability[0], minor=capability[1], total_memory=int(memory_gb * 1e9)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: capability >= (8, 0) or including_emulation)


def no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(("capability", "expected"), [
    ((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((8, 9), torch.bfloat16),
    ((9, 0), torch.bfloat16), (None, torch.float32)])
def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch, cpu_measures, capability, expected):
    cpu_measures(training=0.6)  # a CPU whose bf16 is slower (it isn't asked on a GPU)
    fake_gpu(monkeypatch, capability) if capability else no_gpu(monkeypatch)
    auto = ModelConfig()
    assert torch_dtype(auto) == expected  # model load, chat and scorecard
    assert compute_dtype(auto) == str(expected).removeprefix("torch.")
    assert bnb_config(auto).bnb_4bit_compute_dtype == expected  # bitsandbytes' compute dtype
    device = read_device()
    assert device.is_gpu == (capability is not None)
    assert device.name == GPUS[capability][0] if capability else device.name.startswith("CPU (")


def test_a_recipes_explicit_dtype_wins(monkeypatch):
    fake_gpu(monkeypatch, (7, 5))
    assert torch_dtype(ModelConfig(compute_dtype="bfloat16")) == torch.bfloat16
    assert trainer_precision(ModelConfig(compute_dtype="bfloat16")) == {"bf16": True, "fp16": False}
    fake_gpu(monkeypatch, (8, 0))
    assert torch_dtype(ModelConfig(compute_dtype="float32")) == torch.float32
    assert trainer_precision(ModelConfig(compute_dtype="float32")) == {"bf16": False, "fp16": False}


@pytest.mark.parametrize(("capability", "bf16", "fp16"), [((7, 5), False, True), ((8, 6), True, False),
                                                         (None, False, False)])
@pytest.mark.parametrize("cpu_bf16_speedup", [0.6, 4.4])
def test_trainer_flags_follow_the_same_choice(monkeypatch, tmp_path, cpu_measures, capability, bf16, fp16,
                                              cpu_bf16_speedup):
    import transformers

    cpu_measures(training=cpu_bf16_speedup)  # a CPU's bf16 comes from the weights' dtype: no autocast either way
    from tuning.training.train import training_arguments

    transformers.TrainingArguments  # noqa: B018 -- loads it (on the real CPU); transformers then swaps its module
    monkeypatch.setattr(sys.modules["transformers"], "TrainingArguments", lambda **kwargs: kwargs)
    fake_gpu(monkeypatch, capability) if capability else no_gpu(monkeypatch)
    args = training_arguments(RecipeConfig(), tmp_path, has_validation=True)
    assert (args["bf16"], args["fp16"], args["use_cpu"]) == (bf16, fp16, capability is None)


def test_the_model_loads_in_fp16_on_a_t4(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    fake_gpu(monkeypatch, (7, 5))
    seen = {}
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kwargs: seen.update(kwargs))
    load_base_model(tmp_path, ModelConfig())
    assert seen["dtype"] == torch.float16
    assert seen["quantization_config"].bnb_4bit_compute_dtype == torch.float16


def test_the_run_records_its_device_and_dtype(monkeypatch, tmp_path):
    import tuning.training.callbacks
    import tuning.training.train

    class LoadedEnough(Exception):  # noqa: N818 -- a signal that the test saw enough, not an error
        pass

    def stop(path):
        raise LoadedEnough

    fake_gpu(monkeypatch, (7, 5))
    monkeypatch.setattr(tuning.training.train, "resolve_model",
                        lambda name, revision: tuning.models.loading.ResolvedModel(name="some/model", path=tmp_path))
    monkeypatch.setattr(tuning.training.train, "load_tokenizer", stop)  # the first step after environment.json
    monkeypatch.setattr(tuning.training.callbacks, "GracefulStop", lambda: None)  # leave pytest's signal handlers be
    with pytest.raises(LoadedEnough):
        tuning.training.train._train(RecipeConfig(), tmp_path / "run", resume=False, placement=Placement())
    environment = json.loads((tmp_path / "run" / ENVIRONMENT_FILE).read_text())
    assert environment["device"] == {"name": "Tesla T4", "capability": "7.5", "total_memory_gb": 15.6,
                                     "dtype": "float16"}


def test_the_app_says_what_hardware_serves_it(monkeypatch, cpu_measures):
    monkeypatch.delenv(SPACE_ID_ENV, raising=False)
    monkeypatch.delenv(ZEROGPU_ENV, raising=False)
    monkeypatch.delenv(tuning.models.loading.DEFAULT_MODEL_ENV, raising=False)
    monkeypatch.setattr(tuning.models.loading, "hub_is_offline", lambda: False)
    fake_gpu(monkeypatch, (7, 5))
    assert startup_line() == (f"Kantele: Tesla T4 (compute capability 7.5, 15.6 GB), computing in fp16; "
                              f"default model {GPU_DEFAULT_MODEL}")
    no_gpu(monkeypatch)
    cpu_measures(training=0.6, generation=0.9)
    line = startup_line()
    assert line.startswith("Kantele: CPU (") and "cores), computing in fp32 (bf16 matmuls 0.6x fp32 for " in line
    assert line.endswith("default model embedded") and "WARNING" not in line
    cpu_measures(training=4.4, generation=1.6)
    assert ("training in bf16, answering in fp32 (bf16 matmuls 4.4x fp32 for training, 1.6x for answers, "
            "measured here") in startup_line()


def on_space(monkeypatch, hardware: str) -> None:
    monkeypatch.setenv(SPACE_ID_ENV, "alice/kantele")
    monkeypatch.delenv(ZEROGPU_ENV, raising=False)
    monkeypatch.setattr(tuning.hub.space, "read_space_settings", lambda: SpaceSettings(hardware=hardware))


def test_a_space_that_asked_for_a_gpu_it_cannot_use_says_so(monkeypatch, cpu_measures):
    from ui.train_tab import show_estimate

    cpu_measures(training=0.6)
    on_space(monkeypatch, "t4-small")
    no_gpu(monkeypatch)
    warning = space_gpu_warning()
    assert "asked for GPU hardware (t4-small), but no GPU is usable" in warning
    assert "WARNING: " + warning in startup_line()
    shown = show_estimate({}, *[None] * 13)  # no dataset yet (13 knobs): the warning still comes first
    assert shown.startswith("**No GPU:** ") and "Can't estimate yet" in shown

    # CUDA listed but broken (a driver mismatch): the reason is shown, training falls back to the CPU.
    fake_gpu(monkeypatch, (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (_ for _ in ()).throw(
        RuntimeError("CUDA driver version is insufficient for CUDA runtime version")))
    device = read_device()
    assert not device.is_gpu and device.dtype == "float32"
    assert "CUDA failed to start: CUDA driver version is insufficient" in space_gpu_warning()


def test_a_zerogpu_space_says_it_cannot_train(monkeypatch):
    on_space(monkeypatch, "t4-small")
    monkeypatch.setenv(ZEROGPU_ENV, "true")  # what Hugging Face sets on ZeroGPU hardware, whatever spaces.yaml says
    no_gpu(monkeypatch)
    warning = space_gpu_warning()
    assert "(ZeroGPU)" in warning and "its own process" in warning


@pytest.mark.parametrize(("hardware", "on_a_space", "gpu"), [("cpu-basic", True, False), ("t4-small", False, False),
                                                             ("t4-small", True, True)])
def test_no_warning_where_nothing_is_missing(monkeypatch, hardware, on_a_space, gpu):
    on_space(monkeypatch, hardware)
    if not on_a_space:
        monkeypatch.delenv(SPACE_ID_ENV)
    fake_gpu(monkeypatch, (7, 5)) if gpu else no_gpu(monkeypatch)
    assert space_gpu_warning() == ""
