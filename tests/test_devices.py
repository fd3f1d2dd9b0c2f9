"""Device and dtype resolution (`core/devices.py`): auto picks cuda, then mps, then the CPU; asking
for hardware this machine lacks is a clear ConfigError. GPU presence is simulated by patching torch's
availability checks; everything else runs for real."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragtune.core import devices
from ragtune.core.config import load_config
from ragtune.core.devices import check_precision, resolve_device, resolve_dtype, training_dtype
from ragtune.core.errors import ConfigError


def _machine(monkeypatch: pytest.MonkeyPatch, cuda: bool = False, mps: bool = False, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch):
    _machine(monkeypatch, cuda=True, mps=True)
    assert resolve_device("auto") == "cuda"
    _machine(monkeypatch, cuda=False, mps=True)
    assert resolve_device("auto") == "mps"
    _machine(monkeypatch)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_asking_for_missing_hardware_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    _machine(monkeypatch)
    with pytest.raises(ConfigError, match="models.device is cuda but torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="models.device is mps"):
        resolve_device("mps")


def test_dtype_auto_per_device(monkeypatch: pytest.MonkeyPatch):
    _machine(monkeypatch, cuda=True, bf16=True)
    assert resolve_dtype("auto", "cpu") == torch.float32  # today's default, unchanged
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cuda") == torch.float16
    _machine(monkeypatch, cuda=True, bf16=False)
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("auto", "mps") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # an explicit choice is kept


def test_resolution_reads_the_models_section(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    _machine(monkeypatch, cuda=True)
    cfg = load_config(workspace=tmp_path, environ={})
    assert resolve_device(cfg) == "cuda" and resolve_device(cfg.models) == "cuda"
    assert resolve_dtype(cfg.models) == torch.bfloat16
    cfg = load_config(workspace=tmp_path, environ={}, overrides={"models": {"device": "cpu"}})
    assert resolve_device(cfg) == "cpu" and resolve_dtype(cfg.models) == torch.float32


def test_training_precision_per_device(monkeypatch: pytest.MonkeyPatch):
    _machine(monkeypatch, cuda=True, bf16=False)
    assert training_dtype("fp32", "cpu") == torch.float32
    assert training_dtype("bf16", "cpu") == torch.bfloat16  # CPU autocast supports bf16: allowed
    assert training_dtype("fp16", "cuda") == torch.float16
    assert training_dtype("fp16", "cuda", method="full") == torch.float32  # float32 master weights
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        check_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="bf16 needs a GPU that supports bfloat16"):
        check_precision("bf16", "cuda")


def test_models_load_on_the_resolved_device_with_cpu_defaults_unchanged(model_and_tokenizer):
    model, _ = model_and_tokenizer  # loaded with the defaults: device auto, dtype auto
    assert model.device.type == "cpu" and model.dtype == torch.float32


def test_load_generator_model_rejects_a_missing_gpu_before_loading(monkeypatch: pytest.MonkeyPatch):
    from ragtune.core.models import load_embedder, load_generator_model

    _machine(monkeypatch)
    with pytest.raises(ConfigError, match="cuda"):
        load_generator_model("bundled:smollm2-135m-instruct", device="cuda")
    with pytest.raises(ConfigError, match="cuda"):
        load_embedder("bundled:all-minilm-l6-v2", device="cuda")
    assert str(load_embedder("bundled:all-minilm-l6-v2").device) == "cpu"


def test_generator_puts_its_inputs_on_the_models_device(generator):
    out = generator.generate(["Say hi."], max_new_tokens=2)
    assert out[0].completion_tokens >= 1  # inputs were moved to model.device (cpu here), not assumed
