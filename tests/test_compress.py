"""Extractive context compression: sentence split, ranking with the real embedder, budget, prompt."""

from __future__ import annotations

import pytest

from ragtune.core.config import load_config
from ragtune.core.errors import RagtuneError
from ragtune.core.types import Chunk, Hit
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.backends import HttpBackend, InProcessBackend
from ragtune.retrieval.compress import compress_hits, split_sentences
from ragtune.serving.pipeline import Pipeline

BATTERY = "How long does a Zorblat lamp battery last?"


def _hit(n: int, text: str, doc: str = "d") -> Hit:
    return Hit(chunk=Chunk(id=n, doc_id=f"{doc}{n}", text=text, title=f"T{n}"), score=1.0 / (n + 1), rank=n)


def test_split_sentences_keeps_decimals_and_splits_lines():
    text = 'It costs 3.5 florins. Really? Yes!\n- item one\n\n"Quoted." Next (aside.) End'
    assert split_sentences(text) == [
        "It costs 3.5 florins.",
        "Really?",
        "Yes!",
        "- item one",
        '"Quoted."',
        "Next (aside.)",
        "End",
    ]
    assert split_sentences("  \n ") == []


def test_best_sentences_kept_in_document_order_within_budget(pipeline_factory):
    index = pipeline_factory().index
    count = pipeline_factory().generator.count_tokens
    hits = [
        _hit(0, "The Zorblat lamp ships in mauve. Its battery lasts 31 hours. The box is recycled card."),
        _hit(1, "Office plants need water weekly. The canteen opens at noon."),
        _hit(2, "Charging the lamp battery takes 90 minutes. The lamp weighs 2 kg."),
    ]
    out = compress_hits(BATTERY, hits, index.embed, count, budget=30)
    assert [c.hit.chunk.id for c in out] == [0, 2]  # the hit with nothing relevant is gone
    assert "battery lasts 31 hours" in out[0].text and "canteen" not in " ".join(c.text for c in out)
    assert sum(count(c.text) for c in out) <= 30
    whole = compress_hits(BATTERY, hits, index.embed, count, budget=10_000)
    assert [c.text for c in whole] == [" ".join(split_sentences(h.chunk.text)) for h in hits]  # order kept


def test_tight_budget_still_keeps_the_best_sentence(pipeline_factory):
    index, count = pipeline_factory().index, pipeline_factory().generator.count_tokens
    hits = [_hit(0, "Unrelated words about weather. A Zorblat lamp battery lasts 31 hours on a full charge.")]
    out = compress_hits(BATTERY, hits, index.embed, count, budget=1)
    assert [c.text for c in out] == ["A Zorblat lamp battery lasts 31 hours on a full charge."]
    assert compress_hits(BATTERY, [_hit(0, "   ")], index.embed, count, budget=50) == []


def test_pipeline_prompt_is_shorter_and_citations_match_blocks(pipeline_factory, tmp_path):
    shared = pipeline_factory()
    plain = shared.prepare(BATTERY, mode="rag", top_k=4)
    cfg = load_config(
        workspace=tmp_path, environ={}, overrides={"prompt": {"compress": "sentences", "max_context_tokens": 64}}
    )
    short = Pipeline(cfg, shared.generator, shared.index).prepare(BATTERY, mode="rag", top_k=4)
    count = shared.generator.count_tokens
    assert count(short.prompt) < count(plain.prompt)
    assert "31 hours" in short.prompt
    assert short.citations[0].doc_id == "zorblat-battery"
    assert [c.n for c in short.citations] == list(range(1, len(short.citations) + 1))
    for c in short.citations:  # each citation number is a block in the prompt, with its title
        assert f"[{c.n}] {c.title}" in short.prompt
    assert f"[{len(short.citations) + 1}]" not in short.prompt


def test_arm_knobs_apply_for_the_arm_only_and_are_refused_over_http(pipeline_factory):
    shared = pipeline_factory()
    before = shared.config.model_copy(deep=True)
    arm = ArmSpec(name="rag-short", mode="rag", compress="sentences", max_context_tokens=64, max_new_tokens=4)
    count = shared.generator.count_tokens
    short = shared.prepare(BATTERY, arm.options())
    plain = shared.prepare(BATTERY, mode="rag")
    assert count(short.prompt) < count(plain.prompt) and "31 hours" in short.prompt
    answer = InProcessBackend(shared).answer([BATTERY], arm, None)[0]
    assert answer.usage.prompt_tokens == count(short.prompt)  # the arm's compressed prompt was the one answered
    assert answer.usage.completion_tokens <= 4
    assert shared.config == before  # per call: the pipeline's own config never changed
    with pytest.raises(RagtuneError, match="compress"):
        HttpBackend("http://127.0.0.1:9").answer([BATTERY], arm, None)
