"""Silence library noise (progress bars, deprecation notices) that would bury our own messages."""

from __future__ import annotations

import logging
import warnings


def quiet_library_noise() -> None:
    """Turn off transformers' progress bars and third-party FutureWarnings; keep real warnings."""
    import transformers

    transformers.logging.disable_progress_bar()  # bars fill logs with carriage returns
    transformers.logging.set_verbosity_warning()
    warnings.filterwarnings("ignore", category=FutureWarning)  # the libraries' deprecations, not ours
    # bitsandbytes' CPU gemv kernel has no autograd registration; LoRA gradients through the 4-bit
    # base were checked against a dequantized fp32 copy (relative error ~1e-2 at layer 0, ~1e-3 at the top).
    warnings.filterwarnings("ignore", message=r"bitsandbytes::gemv_4bit")
    # "Failed to load CPU gemm_4bit_forward from kernels-community": an optional kernel fetched from
    # the Hub; without it bitsandbytes uses its built-in CPU path (what every number here was measured on).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # rouge_score announces "Using default tokenizer." through absl on every scorer it builds.
    logging.getLogger("absl").setLevel(logging.WARNING)
