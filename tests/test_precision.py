"""Hardware-aware precision (`core/precision.py`): `prefill_dtype: auto` is bf16 only where the device
runs it natively, and bf16 forced where it is emulated warns once with a cost measured here. Whether
the CPU has AVX512-BF16/AMX is simulated by patching the probe; the cost measurement runs for real."""

from __future__ import annotations

import logging

import pytest

from ragtune.core import precision
from ragtune.core.devices import check_precision, resolve_dtype
from ragtune.core.precision import bf16_cpu_cost, resolve_prefill_dtype


@pytest.fixture
def cpu_bf16(monkeypatch: pytest.MonkeyPatch):
    """Set whether the CPU has native bf16; forget which settings already warned."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
        monkeypatch.setattr(precision, "_warned", set())

    return set_native


def test_auto_is_bf16_only_where_native(cpu_bf16):
    cpu_bf16(True)
    assert resolve_prefill_dtype("auto", "cpu") == "bfloat16"
    cpu_bf16(False)
    assert resolve_prefill_dtype("auto", "cpu") == "float32"
    assert resolve_prefill_dtype("auto", "mps") == "float32"
    assert resolve_prefill_dtype("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="unknown prefill_dtype 'half'"):
        resolve_prefill_dtype("half", "cpu")


def test_forced_bf16_on_an_emulating_cpu_warns_once_with_the_measured_cost(cpu_bf16, caplog):
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger="ragtune.core.precision"):
        assert resolve_prefill_dtype("bfloat16", "cpu") == "bfloat16"  # honoured, but not silently
        resolve_prefill_dtype("bfloat16", "cpu")
        check_precision("bf16", "cpu")
        resolve_dtype("bfloat16", "cpu")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3  # one per setting, not one per call
    assert "generation.prefill_dtype bfloat16" in warnings[0] and "no native bf16" in warnings[0]
    assert f"{bf16_cpu_cost():.1f}x the float32 time" in warnings[0]
    assert "tuning.precision bf16" in warnings[1] and "models.dtype bfloat16" in warnings[2]


def test_native_bf16_does_not_warn(cpu_bf16, caplog):
    cpu_bf16(True)
    with caplog.at_level(logging.WARNING, logger="ragtune.core.precision"):
        resolve_prefill_dtype("bfloat16", "cpu")
        check_precision("bf16", "cpu")
    assert not caplog.records


def test_the_probe_agrees_with_the_cpu_flags():
    flags = precision._cpuinfo_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert precision.cpu_native_bf16() == bool(flags & set(precision.NATIVE_CPU_FLAGS))
    assert bf16_cpu_cost() > 0


def test_auto_adds_no_bf16_pass_to_a_model_already_in_reduced_precision(generator, cpu_bf16):
    """On a GPU the weights are bf16/fp16 already (`models.dtype: auto`): a bf16 prefill copy would only
    double the memory, so auto keeps the model's own prompt pass."""
    import copy

    import torch

    from ragtune.core.generator import Generator

    cpu_bf16(True)
    assert Generator(generator.model, generator.tokenizer).prefill_dtype_for() == "bfloat16"
    half = copy.deepcopy(generator.model).to(torch.bfloat16)
    assert Generator(half, generator.tokenizer).prefill_dtype_for() == "float32"
    assert Generator(half, generator.tokenizer).prefill_dtype_for("bfloat16") == "bfloat16"  # asked for: honoured
