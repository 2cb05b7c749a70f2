"""Where the tuned adapter applies while one base model answers both panes: per row of a batch, or per thread.

PEFT's LoRA layers add `lora_B(lora_A(x)) * self.scaling[adapter]` to the frozen layer's output. Both ways
of answering the two panes at once change only what that lookup returns, so there is never a second copy of
the weights, and the base pane's result is the frozen layer's own (adding an update scaled by 0 adds 0):
- `masked_rows`: for one batched generate, the scaling becomes a per-row (batch, 1, 1) factor.
- `PerThreadScaling` + `adapter_scale_on_this_thread`: for one generate per pane on concurrent threads, each
  thread reads the scaling times its own factor (0 for the base pane), so the two can't see each other's.
"""

from __future__ import annotations

import contextlib
import threading

_this_thread = threading.local()


class PerThreadScaling(dict):
    """A LoRA layer's {adapter: scaling} whose values each thread may scale for itself (PEFT reads it with [])."""

    def __getitem__(self, adapter):
        value = super().__getitem__(adapter)
        factor = getattr(_this_thread, "factor", None)
        return value if factor is None else value * factor


def lora_layers(model, adapter: str) -> list:
    """The LoRA layers of `model` that carry `adapter`."""
    return [module for module in model.modules()
            if isinstance(getattr(module, "scaling", None), dict) and adapter in module.scaling]


def allow_per_thread_scaling(model, adapter: str) -> None:
    """Make every LoRA layer's scaling per-thread capable (once, when the adapter is attached)."""
    for layer in lora_layers(model, adapter):
        if not isinstance(layer.scaling, PerThreadScaling):
            layer.scaling = PerThreadScaling(layer.scaling)


@contextlib.contextmanager
def adapter_scale_on_this_thread(factor: float):
    """While held, LoRA updates computed on this thread are scaled by `factor` (0: the base model answers)."""
    previous = getattr(_this_thread, "factor", None)
    _this_thread.factor = factor
    try:
        yield
    finally:
        _this_thread.factor = previous


@contextlib.contextmanager
def masked_rows(model, adapter: str, rows_with_adapter: list[bool]):
    """While held, each LoRA layer adds its update only to the rows marked True: its scaling becomes a
    per-row (batch, 1, 1) factor. PEFT's own mixed-adapter batches (adapter_names) do the same by splitting
    every layer's input by row: a 64-token pair took 10.96 s that way vs 7.43 s masked like this
    (bench/chat_latency.py). The scaling is shared by every thread: hold the model's generation lock."""
    import torch

    if all(rows_with_adapter):
        yield
        return
    layers = lora_layers(model, adapter)
    saved = [dict.__getitem__(layer.scaling, adapter) for layer in layers]
    mask = torch.tensor(rows_with_adapter, dtype=torch.float32, device=model.device).view(-1, 1, 1)
    try:
        for layer, scale in zip(layers, saved):
            layer.scaling[adapter] = mask * scale
        yield
    finally:
        for layer, scale in zip(layers, saved):
            layer.scaling[adapter] = scale
