"""What hardware this process runs on, and the one precision choice every stage makes from it.

Training (model load, bitsandbytes' compute dtype, the Trainer's bf16/fp16 flags), the chat, the scorecard
and the estimate all ask `compute_dtype(cfg)`, so they can't disagree; a run records `read_device()` in
environment.json and its card shows it ("Tesla T4, fp16"). `choose_dtype` is the decision itself: from
the compute capability on a GPU, from a measurement on a CPU (tuning.hardware.cpu_precision).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuning.hardware.cpu_precision import CpuBf16Speed

# bf16 only where the GPU computes it natively: Ampere (8.0) and later. torch.cuda.is_bf16_supported() also
# answers True on a T4 (7.5), which merely emulates bf16; bitsandbytes' 4-bit matmuls there have a fast fp16
# kernel and no bf16 one, so the T4 gets fp16.
BF16_MIN_CAPABILITY = (8, 0)
# What a dtype is chosen for: training multiplies batches of hundreds of tokens (compute-bound), answering
# decodes a few rows a step (Python, attention and memory traffic weigh as much as the matmuls).
TRAINING, GENERATION = "training", "generation"
# How much faster bf16 matmuls must measure on a CPU before 'auto' takes them. The rest of a step doesn't
# speed up (the 4-bit dequantization, elementwise ops, fp32 LoRA and loss): on an AMD EPYC (2 cores) matmuls
# 3.2-3.9x faster in bf16 gave 1.6x the training tokens/s, the same loss and key facts. Answering gains far
# less than its matmuls (a decode step is mostly Python, attention and memory traffic): there one-row decode
# matmuls measured 1.6-2.0x faster in bf16 while a chat answer took the same time and the scorecard 8-17%
# less, and bf16 changed 9 of 58 greedy answers and cost one key fact in each of two runs. So answers take
# bf16 only where its decode matmuls are at least three times as fast.
CPU_BF16_MIN_SPEEDUP = {TRAINING: 1.5, GENERATION: 3.0}
SHORT_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
CPU_NAME = "CPU"
ZEROGPU_PREFIX = "zero-"  # Hugging Face's ZeroGPU hardware flavors: zero-a10g, ...
ZEROGPU_REASON = ("ZeroGPU lends a GPU only to one decorated function call at a time, for seconds to a few minutes, "
                  "while training runs in its own process for many minutes: that process never gets a GPU")
SPACE_ID_ENV = "SPACE_ID"  # set by Hugging Face on every Space
ZEROGPU_ENV = "SPACES_ZERO_GPU"  # set by Hugging Face on a Space running on ZeroGPU (read by the `spaces` package)


@dataclass(frozen=True)
class Device:
    """The hardware one process computes on, and the dtype 'auto' means there."""

    name: str  # "Tesla T4", or "CPU (2 cores)"
    capability: tuple[int, int] | None  # CUDA compute capability; None on the CPU
    total_memory_gb: float | None  # the GPU's memory (the machine's RAM on a CPU); None when unknown
    dtype: str  # what compute_dtype 'auto' means here for training the default model: bfloat16, float16, float32
    cuda_error: str | None = None  # why CUDA was there but unusable (the device then is the CPU)
    cpu_bf16: CpuBf16Speed | None = None  # a CPU's measured bf16 speed-up (the default model's shapes)

    @property
    def is_gpu(self) -> bool:
        """True for a CUDA device."""
        return self.capability is not None

    def label(self, dtype: str | None = None) -> str:
        """'Tesla T4 (fp16)', 'CPU (2 cores, fp32)': the device and the precision a run computes in on it."""
        dtype = SHORT_DTYPE.get(dtype or self.dtype, dtype or self.dtype)
        return f"{self.name[:-1]}, {dtype})" if self.name.endswith(")") else f"{self.name} ({dtype})"

    def record(self, dtype: str | None = None, cpu_bf16: CpuBf16Speed | None = None) -> dict:
        """The environment.json entry of a run: device name, compute capability, memory, dtype, and on a CPU
        the bf16 measurement the dtype was chosen by."""
        entry = {"name": self.name, "capability": ".".join(map(str, self.capability)) if self.capability else None,
                 "total_memory_gb": self.total_memory_gb, "dtype": dtype or self.dtype}
        measured = cpu_bf16 or self.cpu_bf16
        if measured is not None:
            from tuning.hardware.machine_cache import cpu_name

            entry["cpu"] = cpu_name()
            entry["cpu_bf16_speedup"] = measured.record()
        return entry

    def precision_note(self, dtype: str | None = None, cpu_bf16: CpuBf16Speed | None = None) -> str:
        """Why this precision, for people: 'CPU bf16: 4.4x fp32 here' ('' on a GPU, or without a measurement)."""
        measured = cpu_bf16 or self.cpu_bf16
        if self.is_gpu or measured is None:
            return ""
        return f"CPU bf16: {measured.training:.1f}× fp32 here, so {SHORT_DTYPE.get(dtype or self.dtype, dtype)}"


def choose_dtype(capability: tuple[int, int] | None, cpu_bf16: CpuBf16Speed | None = None,
                 work: str = TRAINING) -> str:
    """The one decision of what 'auto' computes in, for every device.

    A GPU: bf16 from compute capability 8.0, fp16 below (whatever the work). A CPU: bf16 where its measured
    speed-up for this work clears CPU_BF16_MIN_SPEEDUP, else fp32 -- also when there is no measurement."""
    if capability is not None:
        return "bfloat16" if tuple(capability) >= BF16_MIN_CAPABILITY else "float16"
    if cpu_bf16 is None:
        return "float32"
    speedup = cpu_bf16.training if work == TRAINING else cpu_bf16.generation
    return "bfloat16" if speedup >= CPU_BF16_MIN_SPEEDUP[work] else "float32"


def measure_cpu(model=None) -> CpuBf16Speed | None:
    """This CPU's bf16 speed-up at the shapes of `model`: its folder or its ModelShapes (the default model's
    without one)."""
    from tuning.hardware.cpu_precision import ModelShapes, cpu_bf16_speed

    return cpu_bf16_speed(model if isinstance(model, ModelShapes) else ModelShapes.from_folder(model))


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def read_device(index: int = 0) -> Device:
    """The CUDA device `index` when torch can use it, else the CPU (with the reason CUDA failed, if it did)."""
    import torch

    error = None
    if torch.cuda.is_available():
        try:
            capability = tuple(torch.cuda.get_device_capability(index))
            # Not mem_get_info(): that needs a CUDA context (~0.4 GB of the GPU) in every process that asks.
            memory = torch.cuda.get_device_properties(index).total_memory
            return Device(name=torch.cuda.get_device_name(index), capability=capability,
                          total_memory_gb=round(memory / 1e9, 1), dtype=choose_dtype(capability))
        except (RuntimeError, AssertionError) as exc:  # a driver that lists the GPU but won't start it
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    measured = measure_cpu()  # cached per machine after the first time (~0.1 s)
    return Device(name=f"{CPU_NAME} ({os.cpu_count()} cores)", capability=None, total_memory_gb=_ram_gb(),
                  dtype=choose_dtype(None, measured), cuda_error=error, cpu_bf16=measured)


def compute_dtype(cfg, device: Device | None = None, model=None, work: str = TRAINING) -> str:
    """The dtype a run computes in: the recipe's model.compute_dtype when it names one, else the device's
    choice -- on a CPU for this work at the shapes of `model` (a folder or ModelShapes; the default model's)."""
    if cfg.compute_dtype != "auto":
        return cfg.compute_dtype
    device = device or read_device()
    if device.is_gpu:
        return device.dtype
    return choose_dtype(None, cpu_measurement(cfg, device, model), work)


def cpu_measurement(cfg, device: Device, model=None) -> CpuBf16Speed | None:
    """The measurement compute_dtype chooses by for `model` on a CPU (None on a GPU, or with an explicit dtype)."""
    if device.is_gpu or cfg.compute_dtype != "auto":
        return None
    return measure_cpu(model) if model is not None else device.cpu_bf16


def trainer_precision(cfg, device: Device | None = None) -> dict:
    """The Trainer's mixed-precision flags for this recipe on this device (none on a CPU).

    A CPU run in bf16 gets it from the weights' dtype (bitsandbytes' compute dtype, or the bf16 model) with
    the LoRA weights, their math and the loss in fp32; autocasting those to bf16 as well measured within
    the noise (343 vs 330 tokens/s on the Kalevala recipe) for less precise adapter updates."""
    device = device or read_device()
    dtype = compute_dtype(cfg, device)
    return {"bf16": device.is_gpu and dtype == "bfloat16", "fp16": device.is_gpu and dtype == "float16"}


def is_gpu_hardware(flavor: str) -> bool:
    """True for a Space hardware flavor with a GPU (anything but cpu-basic, cpu-upgrade, ...)."""
    return bool(flavor) and not flavor.startswith("cpu-")


def is_zerogpu(flavor: str) -> bool:
    """True for ZeroGPU hardware: zero-a10g, any zero-*, or 'ZeroGPU' as requested_space_hardware names it."""
    return flavor.lower().startswith(ZEROGPU_PREFIX) or flavor.lower() == "zerogpu"


def requested_space_hardware() -> str | None:
    """The hardware this Space runs on or was deployed to ask for: 'ZeroGPU' when Hugging Face says so, else
    spaces.yaml's; None when not running on a Space."""
    if os.environ.get(ZEROGPU_ENV, "").strip().lower() not in ("", "0", "false"):
        return "ZeroGPU"
    if not os.environ.get(SPACE_ID_ENV):
        return None
    from tuning.config import ConfigError
    from tuning.hub.space import read_space_settings

    try:
        return read_space_settings().hardware
    except ConfigError:  # deployed by hand, without spaces.yaml: nothing asked for
        return None


def missing_gpu_warning(requested: str | None, device: Device) -> str:
    """A plain warning when GPU hardware was asked for but CUDA is not usable here ('' otherwise)."""
    if not requested or not is_gpu_hardware(requested) or device.is_gpu:
        return ""
    if is_zerogpu(requested):
        why = ZEROGPU_REASON
    elif device.cuda_error:
        why = f"CUDA failed to start: {device.cuda_error}"
    else:
        why = "torch sees no CUDA device: a driver/CUDA version mismatch, a CPU-only torch, or the GPU not granted yet"
    return (f"This Space asked for GPU hardware ({requested}), but no GPU is usable ({why}). Training would run "
            f"on the {device.name}, far slower, and the 'auto' model is then the small embedded one -- check the "
            "Space's hardware settings and its build log.")


def space_gpu_warning(device: Device | None = None) -> str:
    """missing_gpu_warning for this Space and this process's device ('' off a Space, or with its GPU working)."""
    return missing_gpu_warning(requested_space_hardware(), device or read_device())


def startup_line() -> str:
    """What the app says at start: the device, the dtype, the default model (and a missing GPU, if one is)."""
    from tuning.models.loading import default_model_name

    device = read_device()
    name = device.name
    if device.is_gpu:
        name += f" (compute capability {'.'.join(map(str, device.capability))}, {device.total_memory_gb} GB)"
    precision = f"computing in {SHORT_DTYPE[device.dtype]}"
    if device.cpu_bf16:
        answers = choose_dtype(None, device.cpu_bf16, GENERATION)
        if answers != device.dtype:
            precision = f"training in {SHORT_DTYPE[device.dtype]}, answering in {SHORT_DTYPE[answers]}"
        precision += f" ({device.cpu_bf16.summary()})"
    line = f"Kantele: {name}, {precision}; default model {default_model_name()}"
    warning = space_gpu_warning(device)
    return f"{line}. WARNING: {warning}" if warning else line
