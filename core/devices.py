"""Where models run and in which precision: the one place `models.device`, `models.dtype` and
`tuning.precision` are turned into torch devices and dtypes.

`auto` picks CUDA when torch sees a GPU, else Apple's MPS, else the CPU; the weights' dtype under
`auto` is full precision on the CPU (exactly today's behaviour and speed there), bfloat16 on a CUDA GPU
that supports it, else float16. Asking for a device this machine lacks is a `ConfigError`, not a crash
deep inside torch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ragtune.core.errors import ConfigError
from ragtune.core.precision import native_bf16, warn_if_emulated

Device = Literal["cpu", "cuda", "mps"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISION_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _setting(cfg: Any, attr: str) -> str:
    """`cfg` is the setting itself, a `ModelsConfig`, or a whole `Config`."""
    if cfg is None:
        return "auto"
    if isinstance(cfg, str):
        return cfg
    models = getattr(cfg, "models", cfg)
    return str(getattr(models, attr))


def resolve_device(cfg: Any = "auto") -> Device:
    """`models.device` (or `cfg` itself: auto|cpu|cuda|mps) as the device this machine will use."""
    setting = _setting(cfg, "device")
    if setting == "auto":
        if cuda_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if setting == "cuda" and not cuda_available():
        raise ConfigError(
            "models.device is cuda but torch sees no CUDA GPU on this machine (or this torch build has no "
            "CUDA support); set models.device to auto or cpu"
        )
    if setting == "mps" and not mps_available():
        raise ConfigError("models.device is mps but torch sees no Apple MPS device; set models.device to auto or cpu")
    if setting not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown models.device '{setting}'; known: auto, cpu, cuda, mps")
    return setting  # type: ignore[return-value]


def bf16_supported(device: str) -> bool:
    if device == "cuda":
        return native_bf16("cuda")
    return device == "cpu"  # CPU autocast and kernels support bf16; MPS only on recent macOS, so not assumed


def resolve_dtype(cfg: Any = "auto", device: str | None = None) -> torch.dtype:
    """`models.dtype` (or `cfg` itself: auto|float32|bfloat16|float16) on `device` (default: the resolved
    `models.device`). auto: full precision on the CPU, bfloat16 on a GPU that supports it, else float16."""
    setting = _setting(cfg, "dtype")
    device = device or resolve_device(cfg if not isinstance(cfg, str) else "auto")
    if setting == "auto":
        if device == "cpu":
            return torch.get_default_dtype()  # full precision: float32 unless the program changed the default
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    if setting not in DTYPES:
        raise ConfigError(f"unknown models.dtype '{setting}'; known: auto, {', '.join(DTYPES)}")
    if setting == "bfloat16":
        warn_if_emulated("models.dtype bfloat16", device)
    return DTYPES[setting]


def training_dtype(precision: str, device: str, method: str = "lora") -> torch.dtype:
    """The dtype the base model is loaded in for training with `tuning.precision`.

    LoRA keeps the frozen base in the training precision (half the memory under bf16/fp16; PEFT keeps
    the adapter weights in float32), full fine-tuning keeps float32 master weights and gets mixed
    precision from the Trainer's autocast. fp32 is float32 everywhere (the CPU default, unchanged).
    """
    check_precision(precision, device)
    if method == "full":
        return torch.get_default_dtype()
    return PRECISION_DTYPES[precision] if precision != "fp32" else torch.get_default_dtype()


def check_precision(precision: str, device: str) -> None:
    """Reject a training precision this device cannot run, before any model is loaded.

    bf16 on the CPU is allowed (transformers runs it under CPU autocast; it pays on CPUs with
    AVX512-BF16 or AMX and is slower elsewhere); fp16 needs a GPU (the Trainer's fp16 mixed precision
    relies on a CUDA/MPS gradient scaler); bf16 on a CUDA GPU needs one that supports it (Ampere or newer).
    """
    if precision not in PRECISION_DTYPES:
        raise ConfigError(f"unknown tuning.precision '{precision}'; known: {', '.join(PRECISION_DTYPES)}")
    if precision == "fp16" and device == "cpu":
        raise ConfigError("tuning.precision fp16 needs a GPU (cuda or mps); on the CPU use fp32 or bf16")
    if precision == "bf16" and device == "cuda" and not bf16_supported(device):
        raise ConfigError("tuning.precision bf16 needs a GPU that supports bfloat16 (Ampere or newer); use fp16")
    if precision == "bf16":
        warn_if_emulated("tuning.precision bf16", device)
