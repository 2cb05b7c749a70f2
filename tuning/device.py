"""What hardware this process runs on, and the one precision choice every stage makes from it.

Training (model load, bitsandbytes' compute dtype, the Trainer's bf16/fp16 flags), the chat, the scorecard
and the estimate all ask `compute_dtype(cfg)`, so they can't disagree; a run records `read_device()` in
environment.json and its card shows it ("Tesla T4, fp16").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# bf16 only where the GPU computes it natively: Ampere (8.0) and later. torch.cuda.is_bf16_supported() also
# answers True on a T4 (7.5), which merely emulates bf16; bitsandbytes' 4-bit matmuls there have a fast fp16
# kernel and no bf16 one, so the T4 gets fp16.
BF16_MIN_CAPABILITY = (8, 0)
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
    dtype: str  # what compute_dtype 'auto' means here: bfloat16, float16 or float32
    cuda_error: str | None = None  # why CUDA was there but unusable (the device then is the CPU)

    @property
    def is_gpu(self) -> bool:
        """True for a CUDA device."""
        return self.capability is not None

    def label(self, dtype: str | None = None) -> str:
        """'Tesla T4 (fp16)', 'CPU (2 cores, fp32)': the device and the precision a run computes in on it."""
        dtype = SHORT_DTYPE.get(dtype or self.dtype, dtype or self.dtype)
        return f"{self.name[:-1]}, {dtype})" if self.name.endswith(")") else f"{self.name} ({dtype})"

    def record(self, dtype: str | None = None) -> dict:
        """The environment.json entry of a run: device name, compute capability, memory, dtype."""
        return {"name": self.name, "capability": ".".join(map(str, self.capability)) if self.capability else None,
                "total_memory_gb": self.total_memory_gb, "dtype": dtype or self.dtype}


def hardware_dtype(capability: tuple[int, int] | None) -> str:
    """The precision this hardware computes best in: bf16 from compute capability 8.0, fp16 below, CPU: cpu_dtype()."""
    if capability is None:
        return cpu_dtype()
    return "bfloat16" if tuple(capability) >= BF16_MIN_CAPABILITY else "float16"


def cpu_dtype() -> str:
    """The CPU's compute dtype: the one place it is chosen. fp32, the precision every CPU computes natively."""
    return "float32"


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
                          total_memory_gb=round(memory / 1e9, 1), dtype=hardware_dtype(capability))
        except (RuntimeError, AssertionError) as exc:  # a driver that lists the GPU but won't start it
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return Device(name=f"{CPU_NAME} ({os.cpu_count()} cores)", capability=None, total_memory_gb=_ram_gb(),
                  dtype=hardware_dtype(None), cuda_error=error)


def compute_dtype(cfg, device: Device | None = None) -> str:
    """The dtype a run computes in: the recipe's model.compute_dtype when it names one, else the device's choice."""
    if cfg.compute_dtype != "auto":
        return cfg.compute_dtype
    return (device or read_device()).dtype


def trainer_precision(cfg, device: Device | None = None) -> dict:
    """The Trainer's mixed-precision flags for this recipe on this device (none on a CPU)."""
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
    from tuning.space_deploy import read_space_settings

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
    from tuning.models import default_model_name

    device = read_device()
    name = device.name
    if device.is_gpu:
        name += f" (compute capability {'.'.join(map(str, device.capability))}, {device.total_memory_gb} GB)"
    line = f"Kantele: {name}, computing in {SHORT_DTYPE[device.dtype]}; default model {default_model_name()}"
    warning = space_gpu_warning(device)
    return f"{line}. WARNING: {warning}" if warning else line
