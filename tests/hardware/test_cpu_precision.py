"""A CPU's precision is chosen by measurement: the micro-benchmark, its per-machine cache, and the one decision
function every device goes through (a GPU by compute capability, a CPU by its measured bf16 speed-up).

The measured speeds are faked wherever a test is about the choice (`cpu_measures`), so no test depends on
which kind of CPU runs it; one test times the real micro-benchmark and checks only what it reports."""

import json

import pytest
import torch

import tuning.hardware.cpu_precision as cpu_precision
import tuning.hardware.machine_cache
from tuning.config import ModelConfig
from tuning.hardware.cpu_precision import (
    EMBEDDED_SHAPES,
    CpuBf16Speed,
    ModelShapes,
    cpu_bf16_speed,
    machine_key,
    measure,
)
from tuning.hardware.device import (
    CPU_BF16_MIN_SPEEDUP,
    GENERATION,
    TRAINING,
    Device,
    choose_dtype,
    compute_dtype,
    read_device,
)
from tuning.models.loading import embedded_model_dir, load_base_model, torch_dtype

TINYLLAMA_CONFIG = {"hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 32,
                    "num_key_value_heads": 4, "num_hidden_layers": 22, "vocab_size": 32000}


def speed(training: float, generation: float | None = None) -> CpuBf16Speed:
    return CpuBf16Speed(training=training, generation=training if generation is None else generation,
                        fp32_gflops=150.0, bf16_gflops=150.0 * training, seconds=0.1, threads=2)


FAST_BF16 = speed(4.4, 3.5)  # a CPU whose bf16 is fast for training and answering alike
SLOW_BF16 = speed(0.6, 0.8)  # a CPU whose bf16 kernels are slower than its fp32 ones


@pytest.mark.parametrize(("device", "measured", "training", "generation"), [
    ("CPU, fast bf16", FAST_BF16, "bfloat16", "bfloat16"),
    ("CPU, slow bf16", SLOW_BF16, "float32", "float32"),
    ("CPU, bf16 only a little faster", speed(1.3, 1.2), "float32", "float32"),  # within the noise: not worth it
    ("CPU, bf16 faster for training only", speed(3.2, 2.0), "bfloat16", "float32"),  # the AMD EPYC here
    ("CPU, bf16 faster for answers too", speed(4.4, 3.5), "bfloat16", "bfloat16"),
    ("CPU, not measured", None, "float32", "float32"),  # bf16 can't run here: fp32, which every CPU has
    ("CUDA sm75 (T4)", None, "float16", "float16"),
    ("CUDA sm80 (A100)", None, "bfloat16", "bfloat16"),
    ("CUDA sm90 (H100)", None, "bfloat16", "bfloat16"),
])
def test_one_function_decides_for_every_device(device, measured, training, generation):
    capability = {"CUDA sm75 (T4)": (7, 5), "CUDA sm80 (A100)": (8, 0), "CUDA sm90 (H100)": (9, 0)}.get(device)
    assert choose_dtype(capability, measured, TRAINING) == training
    assert choose_dtype(capability, measured, GENERATION) == generation
    if capability:  # a GPU's choice never depends on a CPU measurement
        assert choose_dtype(capability, SLOW_BF16) == choose_dtype(capability, FAST_BF16) == training


def test_the_thresholds_sit_between_the_cpus_measured():
    assert SLOW_BF16.training < CPU_BF16_MIN_SPEEDUP[TRAINING] < FAST_BF16.training
    assert SLOW_BF16.generation < CPU_BF16_MIN_SPEEDUP[GENERATION] < FAST_BF16.generation


@pytest.mark.parametrize(("training", "expected"), [(4.4, torch.bfloat16), (0.6, torch.float32)])
def test_auto_follows_the_measured_speeds(monkeypatch, cpu_measures, training, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    asked = cpu_measures(training=training)
    auto = ModelConfig()
    assert torch_dtype(auto, embedded_model_dir()) == expected
    assert asked == [EMBEDDED_SHAPES]  # measured once, at the model's own shapes...
    assert torch_dtype(auto, embedded_model_dir(), GENERATION) == expected
    assert read_device().dtype == str(expected).removeprefix("torch.")
    assert len(asked) == 1  # ...and remembered
    for explicit in ("float32", "bfloat16"):  # a recipe that names its dtype is never overruled
        assert compute_dtype(ModelConfig(compute_dtype=explicit)) == explicit


def test_the_model_loads_in_the_chosen_dtype(monkeypatch, cpu_measures):
    """Training and answering can differ: each loads the base in the dtype measured for its work."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu_measures(training=4.4, generation=2.0)
    seen = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kwargs: seen.append(kwargs))
    load_base_model(embedded_model_dir(), ModelConfig())
    load_base_model(embedded_model_dir(), ModelConfig(), work=GENERATION)
    assert [kwargs["dtype"] for kwargs in seen] == [torch.bfloat16, torch.float32]
    assert [kwargs["quantization_config"].bnb_4bit_compute_dtype for kwargs in seen] == [torch.bfloat16,
                                                                                       torch.float32]


def test_a_measurement_is_cached_per_machine_and_model(monkeypatch, cpu_measures, tmp_path):
    asked = cpu_measures(training=4.4)
    tiny = ModelShapes.from_config(TINYLLAMA_CONFIG)
    assert cpu_bf16_speed(EMBEDDED_SHAPES).training == 4.4
    assert cpu_bf16_speed(tiny).training == 4.4
    assert asked == [EMBEDDED_SHAPES, tiny]

    # Another process on this machine reads the file: nothing is measured again.
    cached = json.loads(cpu_precision._measurements.path().read_text())
    assert len(cached) == 2 and all(key.startswith(machine_key(torch.get_num_threads())) for key in cached)
    cpu_precision.forget_measurements()
    monkeypatch.setattr(cpu_precision, "measure", lambda shapes, repeats=0: pytest.fail("measured again"))
    assert cpu_bf16_speed(EMBEDDED_SHAPES) == cpu_bf16_speed(EMBEDDED_SHAPES)
    assert cpu_bf16_speed(tiny).training == 4.4

    # A different CPU (its model or flags), torch or thread count is another machine: measured afresh.
    other_cpu = cpu_measures(training=0.6)
    cpu_precision._measurements.write("another CPU | flags 0 | torch 2.13 | 2 threads | x", FAST_BF16.record())
    monkeypatch.setattr(tuning.hardware.machine_cache, "cpu_description", lambda: ("Intel Xeon", "avx512f avx512_bf16"))
    assert cpu_bf16_speed(EMBEDDED_SHAPES).training == 0.6 and other_cpu == [EMBEDDED_SHAPES]
    assert len(json.loads(cpu_precision._measurements.path().read_text())) == 2  # the other machine's entry is kept


def test_a_damaged_cache_is_measured_again(cpu_measures):
    asked = cpu_measures(training=4.4)
    path = cpu_precision._measurements.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert cpu_bf16_speed(EMBEDDED_SHAPES).training == 4.4 and asked == [EMBEDDED_SHAPES]
    cpu_precision.forget_measurements()
    key = f"{machine_key(torch.get_num_threads())} | {cpu_precision.METHOD} | {EMBEDDED_SHAPES.key()}"
    path.write_text(json.dumps({key: {"old": 1}}))
    assert cpu_bf16_speed(EMBEDDED_SHAPES).training == 4.4 and len(asked) == 2  # another version's entry


def test_a_cpu_without_bf16_matmuls_computes_in_fp32(monkeypatch, cpu_measures):
    cpu_measures(training=4.4)

    def no_bf16(shapes, repeats=0):
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'BFloat16\'')

    monkeypatch.setattr(cpu_precision, "measure", no_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cpu_bf16_speed(EMBEDDED_SHAPES) is None
    assert compute_dtype(ModelConfig(), model=embedded_model_dir()) == "float32"


def test_the_shapes_are_the_models_own():
    config = json.loads((embedded_model_dir() / "config.json").read_text())
    assert ModelShapes.from_config(config) == EMBEDDED_SHAPES
    assert ModelShapes.from_folder(embedded_model_dir()) == EMBEDDED_SHAPES
    tiny = ModelShapes.from_config(TINYLLAMA_CONFIG)
    assert (tiny.hidden, tiny.intermediate, tiny.kv_dim, tiny.layers, tiny.vocab) == (2048, 5632, 256, 22, 32000)
    assert sum(tiny.projections().values()) == 7  # q, k, v, o, gate, up, down
    assert ModelShapes.from_folder(None) == ModelShapes.from_folder("/no/such/folder") == EMBEDDED_SHAPES


def test_the_real_micro_benchmark_measures_both_precisions():
    """Run for real on whatever CPU this is: which precision wins is that CPU's business, not the test's."""
    small = ModelShapes(hidden=64, intermediate=128, kv_dim=32, layers=2, vocab=256)
    measured = measure(small, repeats=1)
    assert measured.training > 0 and measured.generation > 0 and measured.threads == torch.get_num_threads()
    assert measured.fp32_gflops > 0 and measured.bf16_gflops > 0
    assert measured.summary().startswith(f"bf16 matmuls {measured.training:.1f}x fp32 for training")
    assert set(measured.record()) == {"training", "generation", "fp32_gflops", "bf16_gflops", "seconds", "threads"}


def test_the_run_records_the_measurement_it_chose_by(cpu_measures):
    cpu_measures(training=4.4, generation=3.5)
    cpu = Device(name="CPU (2 cores)", capability=None, total_memory_gb=8.0, dtype="bfloat16", cpu_bf16=FAST_BF16)
    entry = cpu.record()
    assert entry["dtype"] == "bfloat16" and entry["cpu_bf16_speedup"]["training"] == 4.4 and entry["cpu"]
    assert cpu.precision_note() == "CPU bf16: 4.4× fp32 here, so bf16"
    t4 = Device(name="Tesla T4", capability=(7, 5), total_memory_gb=15.6, dtype="float16")
    assert "cpu_bf16_speedup" not in t4.record() and t4.precision_note() == ""
