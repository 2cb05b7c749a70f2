"""How much faster this CPU multiplies a model's matrices in bf16 than in fp32: measured, then cached per machine.

CPUs differ more than GPUs do here: one with AVX-512 bf16 and fast kernels ran the Kalevala recipe's
matmuls 4.5x faster in bf16 (an AMD EPYC, 2 cores), while another with AVX-512 bf16 but slower kernels
trained 1.6x *slower* in bf16. No flag tells them apart, so a micro-benchmark does: the model's own
matmul shapes, fp32 and bf16 interleaved (a busy neighbour slows both alike), the best of a few repeats.
It takes well under a second and runs once per machine (CPU model, its flags, torch version and thread
count) and model shape; the answer is kept in Kantele's cache folder. tuning.hardware.device decides from it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tuning.hardware.machine_cache import MachineCache, machine_key

log = logging.getLogger(__name__)

CACHE_FILE = "cpu_precision.json"  # under tuning.models.loading.cache_dir()
METHOD = "v2"  # in the cache key: a measurement taken another way is taken again
REPEATS = 2  # best of (after a warm-up run): a stall of a shared 2-core machine rarely hits both
# Training multiplies a batch of tokens through every projection: rows enough to run at the GEMM rate,
# few enough that TinyLlama's shapes measure in ~0.5 s on 2 cores.
TRAINING_ROWS = 128
# Decoding multiplies one row per step (a pane's answer). Timed with one row, the estimate stays close to
# what answering gains: an AMD EPYC's 2-row estimate said 3.6x while its chat and scorecard gained 1.0-1.2x,
# the lm_head's fp32 matmul at 2 rows being the odd slow one.
GENERATION_ROWS = 1
# The lm_head runs only on answer tokens when training (tuning.training.loss): about a third of the rows.
TRAINING_HEAD_ROWS = TRAINING_ROWS // 3
HEAD_COLUMNS = 8192  # of the lm_head's vocabulary, timed and scaled to the whole


@dataclass(frozen=True)
class ModelShapes:
    """The matrix shapes a Llama-style model multiplies through: enough to time one layer and its head."""

    hidden: int
    intermediate: int
    kv_dim: int  # k_proj / v_proj output width (grouped-query attention makes it narrower than hidden)
    layers: int
    vocab: int

    @classmethod
    def from_config(cls, config: dict) -> ModelShapes:
        """Shapes from a config.json's fields (text config of a multimodal one when it is nested)."""
        config = config.get("text_config", config)
        hidden = int(config["hidden_size"])
        heads = int(config.get("num_attention_heads") or 1)
        head_dim = int(config.get("head_dim") or hidden // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        return cls(hidden=hidden, intermediate=int(config.get("intermediate_size") or 4 * hidden),
                   kv_dim=kv_heads * head_dim, layers=int(config.get("num_hidden_layers") or 1),
                   vocab=int(config.get("vocab_size") or 32000))

    @classmethod
    def from_folder(cls, path: str | os.PathLike | None) -> ModelShapes:
        """Shapes of the model saved in `path` (its config.json); the embedded model's when it can't be read."""
        try:
            return cls.from_config(json.loads((Path(path) / "config.json").read_text(encoding="utf-8")))
        except (TypeError, OSError, ValueError, KeyError):  # no path, no file, not JSON, not a transformer
            return EMBEDDED_SHAPES

    def projections(self) -> dict[tuple[int, int], int]:
        """(in, out) of one decoder layer's linear layers, and how many it has of each: q and o, k and v,
        gate and up, down."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return {(h, h): 2, (h, kv): 2, (h, i): 2, (i, h): 1}

    def key(self) -> str:
        return f"{self.hidden}x{self.intermediate}x{self.kv_dim}x{self.layers}x{self.vocab}"


# SmolLM2-135M-Instruct, the embedded default model (tests/hardware/test_cpu_precision.py checks it against its config).
EMBEDDED_SHAPES = ModelShapes(hidden=576, intermediate=1536, kv_dim=192, layers=30, vocab=49152)


@dataclass(frozen=True)
class CpuBf16Speed:
    """bf16's speed-up over fp32 on this CPU at one model's shapes (above 1: bf16 is faster)."""

    training: float  # a training batch through every projection and the answer tokens' lm_head
    generation: float  # one decode step of a few rows: every layer's projections and the lm_head
    fp32_gflops: float  # the training batch's matmul rate in fp32...
    bf16_gflops: float  # ...and in bf16
    seconds: float  # what measuring took
    threads: int

    def summary(self) -> str:
        """'bf16 matmuls 4.4x fp32 for training, 3.7x for answers, measured here on 2 threads'."""
        return (f"bf16 matmuls {self.training:.1f}x fp32 for training, {self.generation:.1f}x for answers, "
                f"measured here on {self.threads} thread{'s' if self.threads != 1 else ''}")

    def record(self) -> dict:
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in asdict(self).items()}


def _operands(matmuls, rows: int, dtype) -> list:
    """An input and a weight per (in, out) shape, filled with one constant: a matmul's speed doesn't depend on
    the values (none is zero or subnormal), and random fills of TinyLlama's weights would take longer than
    timing them."""
    import torch

    return [(torch.full((rows, n_in), 0.5, dtype=dtype), torch.full((n_out, n_in), 0.5, dtype=dtype))
            for n_in, n_out in matmuls]


def _best_seconds(operands: dict, repeats: int) -> dict:
    """Per workload, the best wall time of each of its matmuls over `repeats` runs (after one warm-up).

    Every repeat runs each workload in fp32 and then in bf16, so a slow spell of the machine falls on both."""
    import torch

    best = {name: [float("inf")] * len(pairs) for name, pairs in operands.items()}
    for repeat in range(repeats + 1):
        for name, pairs in operands.items():
            for index, (x, weight) in enumerate(pairs):
                started = time.perf_counter()
                torch.nn.functional.linear(x, weight)
                elapsed = time.perf_counter() - started
                if repeat:  # the first pass warms caches and the thread pool
                    best[name][index] = min(best[name][index], elapsed)
    return best


def measure(shapes: ModelShapes, repeats: int = REPEATS) -> CpuBf16Speed:
    """Time fp32 and bf16 matmuls at these shapes, interleaved, on this process's torch threads."""
    import torch

    started = time.perf_counter()
    layer = shapes.projections()
    # The lm_head is timed on a slice of the vocabulary and scaled: the same kernel at the same depth, a
    # quarter of TinyLlama's weights to fill.
    head_columns = min(shapes.vocab, HEAD_COLUMNS)
    head = [(shapes.hidden, head_columns)]
    operands = {}
    for short, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        operands[short, "layer"] = _operands(layer, TRAINING_ROWS, dtype)
        operands[short, "head"] = _operands(head, TRAINING_HEAD_ROWS, dtype)
        operands[short, "decode layer"] = _operands(layer, GENERATION_ROWS, dtype)
        operands[short, "decode head"] = _operands(head, GENERATION_ROWS, dtype)
    best = _best_seconds(operands, repeats)
    counts = list(layer.values())

    def layer_seconds(times: list[float]) -> float:
        return sum(count * seconds for count, seconds in zip(counts, times))

    head_scale = shapes.vocab / head_columns
    # A training step: every layer's projections over the batch, the lm_head over its answer tokens;
    # a decode step: every layer's projections and the lm_head over a few rows.
    train, decode = {}, {}
    for short in ("fp32", "bf16"):
        train[short] = shapes.layers * layer_seconds(best[short, "layer"]) + head_scale * best[short, "head"][0]
        decode[short] = (shapes.layers * layer_seconds(best[short, "decode layer"])
                         + head_scale * best[short, "decode head"][0])
    layer_flops = 2 * TRAINING_ROWS * sum(count * n_in * n_out for (n_in, n_out), count in layer.items())
    return CpuBf16Speed(training=train["fp32"] / train["bf16"], generation=decode["fp32"] / decode["bf16"],
                        fp32_gflops=layer_flops / layer_seconds(best["fp32", "layer"]) / 1e9,
                        bf16_gflops=layer_flops / layer_seconds(best["bf16", "layer"]) / 1e9,
                        seconds=time.perf_counter() - started, threads=torch.get_num_threads())


_measurements = MachineCache(CACHE_FILE)


def cpu_bf16_speed(shapes: ModelShapes = EMBEDDED_SHAPES) -> CpuBf16Speed | None:
    """bf16's speed-up at these shapes on this machine: cached, else measured now (None if bf16 can't run here)."""
    import torch

    def measure_now() -> CpuBf16Speed | None:
        try:
            speed = measure(shapes)
        except RuntimeError as exc:  # a torch build without bf16 matmuls on this CPU
            log.info("bf16 can't run on this CPU (%s): computing in fp32", exc)
            return None
        log.info("measured this CPU: %s, in %.2f s", speed.summary(), speed.seconds)
        return speed

    key = f"{machine_key(torch.get_num_threads())} | {METHOD} | {shapes.key()}"
    return _measurements.get(key, measure_now, lambda entry: CpuBf16Speed(**entry) if entry else None,
                             lambda speed: speed.record() if speed else {})


def forget_measurements() -> None:
    """Drop this process's remembered measurements (tests; the cache file stays)."""
    _measurements.forget()
