import pytest

from ragtune.core.errors import NotFoundError
from ragtune.core.prompt import PromptBuilder


def test_greedy_is_deterministic_and_batching_keeps_answers(generator):
    pb = PromptBuilder(generator.tokenizer, "Be brief.")
    prompts = [pb.prompt("What is the capital of France?"), pb.prompt("Name one primary colour, in one word.")]
    single = [generator.generate([p], max_new_tokens=12)[0].text for p in prompts]
    again = [generator.generate([p], max_new_tokens=12)[0].text for p in prompts]
    batched = [g.text for g in generator.generate(prompts, max_new_tokens=12)]
    assert single == again
    assert batched == single
    assert "Paris" in single[0]


def test_stream_yields_the_same_text_as_generate(generator):
    pb = PromptBuilder(generator.tokenizer, "Be brief.")
    p = pb.prompt("What is the capital of France?")
    pieces = list(generator.stream(p, max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == generator.generate([p], max_new_tokens=12)[0].text


def test_generation_reports_usage_and_timing(generator):
    pb = PromptBuilder(generator.tokenizer, "Be brief.")
    g = generator.generate([pb.prompt("Say hi.")], max_new_tokens=5)[0]
    assert g.prompt_tokens > 5 and 0 < g.completion_tokens <= 5
    assert 0 < g.ttft_ms <= g.generate_ms


def test_unknown_adapter_is_a_clear_error(generator):
    with pytest.raises(NotFoundError, match="not loaded"):
        generator.generate(["x"], adapter="missing")
