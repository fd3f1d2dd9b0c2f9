"""bf16 prefill: the prompt runs through a bf16 copy of the model (the adapter merged in) and hands
generation a float32 cache; short prompts stay float32."""

from __future__ import annotations

import warnings

import pytest
import torch

from ragtune.core.config import GenerationConfig
from ragtune.core.generator import BF16_PREFILL_MIN_TOKENS, Generator
from ragtune.core.prompt import PromptBuilder
from ragtune.core.types import ContextBlock
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.backends import InProcessBackend

QUESTION = "How long does a Zorblat lamp battery last?"
FACT = "A Zorblat lamp battery lasts 31 hours. Charging takes 90 minutes."


def _long_prompt(tok) -> str:
    blocks = [ContextBlock(title=f"Zorblat {n}", text=FACT) for n in range(12)]
    return PromptBuilder(tok, "Answer in one sentence.").prompt(QUESTION, blocks)


def _bf16(generator: Generator) -> Generator:
    return Generator(generator.model, generator.tokenizer, GenerationConfig(prefill_dtype="bfloat16"))


def test_long_prompt_prefills_in_bf16_and_hands_over_a_float32_cache(generator):
    tok = generator.tokenizer
    enc = tok([_long_prompt(tok)], return_tensors="pt", add_special_tokens=False)
    n = enc["input_ids"].shape[1]
    assert n >= BF16_PREFILL_MIN_TOKENS
    with torch.inference_mode():
        inputs = _bf16(generator)._inputs(enc, None)
        cache = inputs["past_key_values"]
        assert cache.get_seq_length() == n - 1  # the last token is left for generate's first step
        assert {layer.keys.dtype for layer in cache.layers} == {torch.float32}
        # the next-token distribution after the bf16 prefill is the float32 one, up to rounding
        fast = generator.model(input_ids=enc["input_ids"][:, -1:], past_key_values=cache).logits[0, -1]
        exact = generator.model(**enc).logits[0, -1]
    assert int(fast.argmax()) == int(exact.argmax())
    assert torch.nn.functional.cosine_similarity(fast, exact, dim=0) > 0.99
    assert "past_key_values" not in generator._inputs(enc, None, "float32")  # float32 never caches


def test_short_prompts_stay_float32_and_padded_rows_continue_correctly(generator):
    tok = generator.tokenizer
    short = PromptBuilder(tok, "Answer in one sentence.").prompt(QUESTION)
    fast = _bf16(generator)
    alone = tok([short], return_tensors="pt", add_special_tokens=False)
    assert "past_key_values" not in fast._inputs(alone, None)
    assert fast.generate([short], max_new_tokens=6)[0].text == generator.generate([short], max_new_tokens=6)[0].text
    # next to a long row the batch is prefilled in bf16; the short row sits behind left padding
    enc = tok([_long_prompt(tok), short], return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"]
    with torch.inference_mode():
        cache = fast._inputs(enc, None)["past_key_values"]
        positions = (mask.cumsum(-1) - 1)[:, -1:]
        step = generator.model(
            input_ids=enc["input_ids"][:, -1:], attention_mask=mask, position_ids=positions, past_key_values=cache
        ).logits[1, -1]
        exact = generator.model(**alone).logits[0, -1]
    assert int(step.argmax()) == int(exact.argmax())
    assert torch.nn.functional.cosine_similarity(step, exact, dim=0) > 0.99


def test_an_adapter_prefills_through_its_own_merged_copy_which_unloading_drops(pipeline_factory):
    pipeline = pipeline_factory()
    gen = pipeline.generator
    pipeline.load_adapter("tiny")
    enc = gen.tokenizer([_long_prompt(gen.tokenizer)], return_tensors="pt", add_special_tokens=False)
    plain = gen.config
    gen.config = plain.model_copy(update={"prefill_dtype": "bfloat16"})
    try:
        with torch.inference_mode():
            with gen._select(None):
                base_cache = gen._inputs(enc, None)["past_key_values"]
            with gen._select("tiny"):
                cache = gen._inputs(enc, "tiny")["past_key_values"]
                # the adapter is in the copy: its keys differ from the base model's (the LoRA covers k_proj)
                adapted = not torch.allclose(cache.layers[-1].keys, base_cache.layers[-1].keys, atol=1e-3)
                fast = gen.model(input_ids=enc["input_ids"][:, -1:], past_key_values=cache).logits[0, -1]
                exact = gen.model(**enc).logits[0, -1]
    finally:
        gen.config = plain
    twin = gen.prefill_copies.get(gen.model, "tiny")
    assert {p.dtype for p in twin.parameters()} == {torch.bfloat16}
    assert not any("lora_" in name for name, _ in twin.named_parameters())  # merged, not wrapped
    assert adapted
    assert int(fast.argmax()) == int(exact.argmax())
    assert torch.nn.functional.cosine_similarity(fast, exact, dim=0) > 0.99
    gen.unload_adapter("tiny")
    dropped = "tiny" not in gen.prefill_copies and None in gen.prefill_copies
    # loading it again wraps the now plain model in PEFT, without transformers' deprecation noise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline.load_adapter("tiny")
    assert dropped
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_prefill_dtype_arm_knob_applies_for_its_arm_only(pipeline_factory):
    shared = pipeline_factory()
    gen = shared.generator
    seen: list[str] = []
    real = gen._inputs

    def spy(enc, adapter, dtype=None):
        inputs = real(enc, adapter, dtype)
        seen.append("bfloat16" if "past_key_values" in inputs else "float32")
        return inputs

    gen._inputs = spy  # type: ignore[method-assign]
    try:
        backend = InProcessBackend(shared)
        bf16 = ArmSpec(name="rag-bf16", mode="rag", prefill_dtype="bfloat16", max_new_tokens=4)
        fast = backend.answer([QUESTION], bf16, None)[0]
        plain = backend.answer(
            [QUESTION], ArmSpec(name="rag", mode="rag", prefill_dtype="float32", max_new_tokens=4), None
        )[0]
    finally:
        del gen._inputs
    assert fast.usage.prompt_tokens >= BF16_PREFILL_MIN_TOKENS  # long enough for the bf16 prefill
    assert seen == ["bfloat16", "float32"]
    assert gen.config.prefill_dtype == "auto" and shared.config.generation.prefill_dtype == "auto"
    assert plain.usage.prompt_tokens == fast.usage.prompt_tokens


def test_prefill_copies_keep_the_most_recently_used(tmp_path, generator):
    from ragtune.core.config import load_config
    from ragtune.core.errors import ConfigError
    from ragtune.core.prefill import PrefillCopies

    model = torch.nn.Linear(4, 4)
    copies = PrefillCopies(kept=2)
    a = copies.get(model, "a")
    copies.get(model, "b")
    assert copies.get(model, "a") is a  # reused, and now the most recent
    copies.get(model, "c")  # evicts b, the least recently used
    assert "a" in copies and "c" in copies and "b" not in copies
    assert a.weight.dtype == torch.bfloat16 and model.weight.dtype == torch.float32
    cfg = load_config(workspace=tmp_path, environ={}, overrides={"generation": {"prefill_copies": 3}})
    assert Generator(model, generator.tokenizer, cfg.generation).prefill_copies.kept == 3
    with pytest.raises(ConfigError, match="prefill_copies"):
        load_config(workspace=tmp_path, environ={}, overrides={"generation": {"prefill_copies": 0}})
