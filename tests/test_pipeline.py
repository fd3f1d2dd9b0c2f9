import threading

import pytest

from ragtune.core.errors import ConfigError, DataError, NotFoundError
from ragtune.core.generator import Generator
from ragtune.core.options import AnswerOptions
from ragtune.core.types import Answer
from ragtune.serving.pipeline import Pipeline


def test_modes_retrieve_and_use_adapter_as_declared(pipeline_factory):
    p = pipeline_factory()
    q = "How long does a Zorblat lamp battery last?"
    base, ft, rag, hybrid = (p.answer(q, mode=m) for m in ("base", "ft", "rag", "hybrid"))
    assert base.citations == [] and ft.citations == [] and base.adapter is None and rag.adapter is None
    assert ft.adapter == "tiny" and hybrid.adapter == "tiny"
    assert rag.citations[0].doc_id == "zorblat-battery" and rag.citations[0].n == 1
    assert rag.snapshot == p.index.snapshot and base.snapshot is None
    assert "31" in hybrid.answer
    assert "Sources:" in hybrid.answer  # the adapter taught the house style
    assert "Sources:" not in base.answer
    assert rag.timings.retrieve_ms > 0 and hybrid.timings.total_ms >= hybrid.timings.generate_ms
    assert rag.usage.prompt_tokens > base.usage.prompt_tokens


def test_stream_ends_with_the_answer_record(pipeline_factory):
    p = pipeline_factory()
    q = "What colours does the Zorblat lamp come in?"
    parts = list(p.stream(q, mode="rag"))
    final = parts[-1]
    assert "".join(x for x in parts[:-1] if isinstance(x, str)).strip() == final.answer
    assert final.citations and 0 < final.timings.ttft_ms <= final.timings.generate_ms <= final.timings.total_ms
    assert final.answer == p.answer(q, mode="rag").answer


def test_per_call_options_leave_the_pipeline_alone(pipeline_factory):
    """Two callers with their own system prompts at once: each gets its own prompt, the config stays."""
    p = pipeline_factory()
    before, builder = p.config.model_copy(deep=True), p.builder
    q = "How long does a Zorblat lamp battery last?"
    styles = {"pirate": "Answer like a pirate, in one line.", "terse": "Answer in three words. Never more."}
    prompts = {k: p.prepare(q, mode="base", system_prompt=v).prompt for k, v in styles.items()}
    assert all(styles[k] in prompts[k] and p.config.prompt.system_prompt not in prompts[k] for k in styles)
    options = {k: AnswerOptions(mode="base", system_prompt=v, max_new_tokens=4) for k, v in styles.items()}
    got: dict[str, Answer] = {}
    threads = [threading.Thread(target=lambda k=k: got.update({k: p.answer(q, options[k])})) for k in styles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in styles:  # each answer was generated from its own prompt
        assert got[k].usage.prompt_tokens == p.generator.count_tokens(prompts[k])
    assert p.config == before and p.builder is builder
    assert p.prepare(q, mode="base").prompt.count(before.prompt.system_prompt) == 1


def test_seeded_sampling_per_call(pipeline_factory):
    p = pipeline_factory()
    q = "Write a short poem about a lamp."
    warm = {"do_sample": True, "temperature": 1.5, "seed": 3}
    first = p.answer(q, mode="base", sampling=warm).answer
    assert first == p.answer(q, mode="base", sampling=warm).answer
    assert first != p.answer(q, mode="base").answer
    assert p.config.generation.do_sample is False and p.generator.config.do_sample is False


def test_bad_inputs_are_clear(pipeline_factory, config, model_and_tokenizer):
    p = pipeline_factory()
    with pytest.raises(ConfigError, match="unknown mode 'turbo'"):
        p.answer("q", mode="turbo")
    with pytest.raises(DataError, match="question is empty"):
        p.answer("   ", mode="base")
    with pytest.raises(NotFoundError, match="unknown adapter 'ghost'"):
        p.answer("q", mode="ft", adapter="ghost")
    with pytest.raises(ConfigError, match="'top_k'"):
        p.answer("q", mode="rag", top_k=0)
    with pytest.raises(ConfigError, match="'temprature'"):
        p.answer("q", mode="base", temprature=0.5)
    model, tok = model_and_tokenizer
    empty = Pipeline(config, Generator(model, tok))
    with pytest.raises(DataError, match="index is empty"):
        empty.answer("q", mode="rag")
    with pytest.raises(ConfigError, match="needs an adapter"):
        empty.answer("q", mode="ft")


def test_warm_loads_the_embedder_of_a_reopened_index(pipeline_factory):
    from ragtune.retrieval.index import Index

    shared = pipeline_factory()
    cfg = shared.config
    reopened = Index.from_config(cfg)
    try:
        assert reopened._model is None  # opening an index loads no model
        assert Pipeline(cfg, shared.generator, reopened).warm().index is reopened
        assert reopened._model is not None
    finally:
        reopened.close()


def test_warm_with_bf16_prefill_builds_the_default_adapters_copy(pipeline_factory, config):
    shared = pipeline_factory()
    gen = shared.generator
    plain = gen.config
    gen.config = plain.model_copy(update={"prefill_dtype": "bfloat16"})
    try:
        gen.prefill_copies.drop("tiny")
        Pipeline(shared.config, gen, shared.index).warm()  # the newest adapter, tiny, is the default
        assert "tiny" in gen.prefill_copies
        # a workspace without adapters warms without failing; ft requests will say what is missing
        Pipeline(config, gen).warm()
    finally:
        gen.config = plain
