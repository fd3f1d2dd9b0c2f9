import pytest

from ragtune.core.errors import NotFoundError
from ragtune.core.generator import Generation
from ragtune.core.options import Sampling
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


def test_stream_yields_the_same_text_as_generate_and_both_report_ttft(generator):
    pb = PromptBuilder(generator.tokenizer, "Be brief.")
    p = pb.prompt("What is the capital of France?")
    *pieces, streamed = list(generator.stream(p, max_new_tokens=12))
    whole = generator.generate([p], max_new_tokens=12)[0]
    assert len(pieces) > 1 and all(isinstance(x, str) for x in pieces)
    assert isinstance(streamed, Generation)
    assert "".join(pieces).strip() == streamed.text == whole.text
    assert streamed.completion_tokens == whole.completion_tokens and streamed.prompt_tokens == whole.prompt_tokens
    for g in (streamed, whole):
        assert 0 < g.ttft_ms <= g.generate_ms


def test_seeded_sampling_repeats_and_differs_from_greedy(generator):
    p = PromptBuilder(generator.tokenizer, "Be brief.").prompt("Write a short poem about the sea.")
    warm = Sampling(do_sample=True, temperature=1.5, seed=7)
    greedy = generator.generate([p], max_new_tokens=16)[0].text
    first = generator.generate([p], max_new_tokens=16, sampling=warm)[0].text
    again = generator.generate([p], max_new_tokens=16, sampling=warm)[0].text
    other = generator.generate([p], max_new_tokens=16, sampling=warm.model_copy(update={"seed": 8}))[0].text
    assert first == again
    assert first != greedy and other != first
    assert generator.generate([p], max_new_tokens=16, sampling=Sampling(seed=7))[0].text == greedy  # still greedy


def test_generation_reports_usage_and_timing(generator):
    pb = PromptBuilder(generator.tokenizer, "Be brief.")
    g = generator.generate([pb.prompt("Say hi.")], max_new_tokens=5)[0]
    assert g.prompt_tokens > 5 and 0 < g.completion_tokens <= 5
    assert 0 < g.ttft_ms <= g.generate_ms


def test_unknown_adapter_is_a_clear_error(generator):
    with pytest.raises(NotFoundError, match="not loaded"):
        generator.generate(["x"], adapter="missing")


def test_stream_text_holds_back_what_may_be_a_stop_string():
    from ragtune.core.generator import StreamText

    s = StreamText(stop=("Sources:", "##"))
    assert s.release("The lamp lasts 31 hours.\nSou") == "The lamp lasts 31 hours.\n"
    assert s.release("The lamp lasts 31 hours.\nSoup") == "Soup"  # not a stop after all: let it go
    assert s.release("The lamp lasts 31 hours.\nSoup #") == " "
    assert s.release("The lamp lasts 31 hours.\nSoup ## more") == ""  # a stop: nothing from it on
    assert s.sent == "The lamp lasts 31 hours.\nSoup "
    end = StreamText(stop=("Sources:",))
    assert end.release("Done. Sour") == "Done. " and end.release("Done. Sour", final=True) == "Sour"


def test_stop_strings_end_generate_and_stream_alike(generator):
    p = PromptBuilder(generator.tokenizer, "Be brief.").prompt("What is the capital of France?")
    full = generator.generate([p], max_new_tokens=12)[0]
    stop = full.text.split()[2]
    cut = Sampling(stop=(stop,))
    *pieces, streamed = list(generator.stream(p, max_new_tokens=12, sampling=cut))
    whole = generator.generate([p], max_new_tokens=12, sampling=cut)[0]
    assert whole.text == full.text[: full.text.index(stop)].strip() == streamed.text
    assert "".join(pieces).strip() == whole.text and stop not in "".join(pieces)
    assert whole.completion_tokens < full.completion_tokens
