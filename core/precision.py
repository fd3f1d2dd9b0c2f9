"""Whether this machine runs bfloat16 natively, and what bf16 costs where it does not.

bf16 pays on a CPU with AVX512-BF16 or AMX and on a GPU that supports it; on an AVX2-only CPU torch
emulates it and a bf16 prefill ran 1.4-2x slower than float32 (issue 25's EPYC measurement). So
`generation.prefill_dtype: auto` picks bf16 only where it is native, and forcing a bf16 switch where
it is emulated warns once, with the cost measured on this machine.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)
NATIVE_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
PREFILL_DTYPES = ("auto", "float32", "bfloat16")


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """AVX512-BF16 or AMX, asked of torch (its CPU feature probe) and, failing that, of /proc/cpuinfo."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        if any(p is not None and p() for p in probes):
            return True
    except RuntimeError:
        pass
    return bool(_cpuinfo_flags() & set(NATIVE_CPU_FLAGS))


def native_bf16(device: str) -> bool:
    if device == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return cpu_native_bf16()
    return False  # MPS: only on recent macOS, not assumed


@lru_cache(maxsize=1)
def bf16_cpu_cost(size: int = 384, repeats: int = 3) -> float:
    """How many times slower a bf16 matmul of a prefill's shape is than float32 here (best of `repeats`)."""

    def best(dtype: torch.dtype) -> float:
        a = torch.randn(size, 576, dtype=dtype)
        b = torch.randn(576, 1536, dtype=dtype)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(torch.bfloat16) / max(best(torch.float32), 1e-9)


_warned: set[str] = set()


def warn_if_emulated(setting: str, device: str) -> bool:
    """Warn (once per setting) that `setting` asks for bf16 this CPU only emulates; True if it warned."""
    if device != "cpu" or native_bf16(device) or setting in _warned:
        return False
    _warned.add(setting)
    log.warning(
        "%s asks for bfloat16, but this CPU has no native bf16 (AVX512-BF16 or AMX): torch emulates it, and "
        "a bf16 matmul measured %.1fx the float32 time here; use float32 (or auto) on this machine",
        setting,
        bf16_cpu_cost(),
    )
    return True


def resolve_prefill_dtype(setting: str, device: str = "cpu", model_dtype: torch.dtype | None = None) -> str:
    """`generation.prefill_dtype` as float32 or bfloat16 on `device`: auto is bfloat16 only where native,
    and never for a model already in reduced precision (`model_dtype`, e.g. a GPU's bf16 weights), whose
    own prompt pass needs no separate bf16 pass or copy ("float32" here means that pass)."""
    if setting not in PREFILL_DTYPES:
        raise ValueError(f"unknown prefill_dtype '{setting}'; known: {', '.join(PREFILL_DTYPES)}")
    if setting == "auto":
        reduced = model_dtype is not None and model_dtype != torch.float32
        return "bfloat16" if native_bf16(device) and not reduced else "float32"
    if setting == "bfloat16":
        warn_if_emulated("generation.prefill_dtype bfloat16", device)
    return setting
