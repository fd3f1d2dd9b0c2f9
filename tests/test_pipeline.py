import pytest

from ragtune.core.errors import ConfigError, DataError, NotFoundError
from ragtune.core.generator import Generator
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
    parts = list(p.stream("What colours does the Zorblat lamp come in?", mode="rag"))
    final = parts[-1]
    assert "".join(x for x in parts[:-1] if isinstance(x, str)).strip() == final.answer
    assert final.citations and final.timings.ttft_ms > 0


def test_bad_inputs_are_clear(pipeline_factory, config, model_and_tokenizer):
    p = pipeline_factory()
    with pytest.raises(ConfigError, match="unknown mode 'turbo'"):
        p.answer("q", mode="turbo")
    with pytest.raises(DataError, match="question is empty"):
        p.answer("   ", mode="base")
    with pytest.raises(NotFoundError, match="unknown adapter 'ghost'"):
        p.answer("q", mode="ft", adapter="ghost")
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
