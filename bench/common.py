"""Shared bits of the benchmarks: machine description, matmul peak, shapes, timing helpers."""

from __future__ import annotations

import statistics
import time

import torch
from cpu import cpu_name, load_average  # noqa: F401 (load_average: re-exported to the benchmarks)

from hf_gptlite import GPTLiteConfig

# The two shapes of issue 8. Dropout 0 so both implementations do the same work.
SHAPES = {
    "small": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=6, vocab_size=8192,
                  max_position_embeddings=1024),
    "124m": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, vocab_size=50257,
                 max_position_embeddings=1024),
    # the project's cpu-small preset, with room for a 32-token prompt + 512 new tokens
    "cpu-small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, vocab_size=8192,
                      max_position_embeddings=1024),
}


def make_config(shape: str, **overrides) -> GPTLiteConfig:
    if shape not in SHAPES:
        raise SystemExit(f"unknown shape {shape!r}; choose from {sorted(SHAPES)}")
    return GPTLiteConfig(**{**SHAPES[shape], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, **overrides})


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads ({torch.backends.cpu.get_cpu_capability()})"


def has_native_bf16(device: torch.device) -> bool:
    """bf16 autocast only pays where the hardware has bf16 math (CUDA Ampere+, CPU AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def matmul_peak_flops(device: torch.device, n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of an n x n @ n x n torch.mm in ``dtype`` on this device (the MFU denominator of a run in that
    dtype: a bf16 run is measured against the bf16 peak, an fp32 run against the fp32 one)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(reps + 1):
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i:  # the first is a warm-up
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def median(xs):
    return statistics.median(xs)


def spread_pct(xs) -> float:
    """Half the inter-quartile range as a percentage of the median: the noise of a timing, robust to outliers."""
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) >= 2 else [xs[0]] * 3
    return 50 * (q[2] - q[0]) / q[1]


def auto_precision(device: torch.device) -> str:
    """What ``mixed_precision="auto"`` picks for training on ``device`` (the package's own rule)."""
    from hf_gptlite.training import resolve_mixed_precision

    return resolve_mixed_precision("auto") if device.type == "cpu" or torch.cuda.is_available() else "no"
