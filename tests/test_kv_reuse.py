"""Per-chunk KV reuse (`core/kv_reuse.py`, `generation.kv_reuse`): the store, the rotation, the joined
cache against a full forward pass with the same attention, and answers through the pipeline, batched,
streamed and after a document update; training with the same attention (`tuning.independent_chunks`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragtune.core.kv_reuse import (
    ChunkEncoder,
    ChunkKV,
    KVStore,
    Segment,
    additive,
    chunk_attention,
    entry_key,
    open_heads,
    piece_ids,
    rotary_of,
    shift_keys,
    split_prompt,
)
from ragtune.core.prompt import PromptBuilder
from ragtune.core.types import ContextBlock, Document
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.backends import InProcessBackend

QUESTION = "How long does a Zorblat lamp battery last?"
BLOCKS = [
    ContextBlock(title="Zorblat Battery", text="A Zorblat lamp battery lasts 31 hours. Charging takes 90 minutes."),
    ContextBlock(title="Zorblat Pricing", text="The Zorblat Basic plan costs 17 florins a month."),
]


# --- model-free: splitting, the store, the mask -------------------------------------------------


def test_split_prompt_cuts_at_each_chunk_in_order_and_refuses_a_missing_one():
    prompt = "open [1] alpha text [2] beta text end"
    segs = split_prompt(prompt, [" alpha text", " beta text"])
    assert segs is not None and "".join(s.text for s in segs) == prompt
    assert [s.chunk for s in segs] == [False, True, False, True, False]
    assert split_prompt(prompt, [" beta text", " alpha text"]) is None  # order matters
    assert split_prompt(prompt, [" gamma"]) is None
    assert split_prompt(prompt, [""]) is None


def _kv(n: int, fill: float = 1.0) -> ChunkKV:
    return ChunkKV([torch.full((1, n, 4), fill)], [torch.full((1, n, 4), fill)])


def test_store_evicts_least_recently_used_by_bytes_and_counts_hits():
    one = _kv(8).nbytes
    store = KVStore(max_bytes=2 * one)
    store.put("a", _kv(8))
    store.put("b", _kv(8))
    assert store.get("a") is not None  # a is now the most recent
    store.put("c", _kv(8))  # over budget: b goes
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None
    stats = store.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 2 * one
    assert (stats["hits"], stats["misses"]) == (3, 1)
    store.put("huge", _kv(64))  # larger than the whole budget: not kept, nothing evicted for it
    assert store.get("huge") is None and store.stats()["entries"] == 2


def test_store_on_disk_survives_a_new_store_and_drops_a_corrupt_file(tmp_path: Path):
    key = entry_key("model", "base", "float32", " Zorblat\ntext")
    assert key.isalnum() and len(key) == 64  # the file name is a hash, never document text
    KVStore(1 << 20, tmp_path).put(key, _kv(3, 2.0))
    again = KVStore(1 << 20, tmp_path).get(key)
    assert again is not None and torch.equal(again.keys[0], torch.full((1, 3, 4), 2.0))
    (tmp_path / f"{key}.safetensors").write_bytes(b"not a tensor file")
    assert KVStore(1 << 20, tmp_path).get(key) is None
    assert not (tmp_path / f"{key}.safetensors").exists()


def test_keys_change_with_model_adapter_dtype_and_text():
    base = entry_key("m", "base", "float32", "t")
    assert len({base, entry_key("m2", "base", "float32", "t"), entry_key("m", "a:1", "float32", "t")}) == 3
    assert len({base, entry_key("m", "base", "bfloat16", "t"), entry_key("m", "base", "float32", "t2")}) == 3


def test_chunk_attention_is_causal_and_keeps_chunks_apart():
    chunk_of = torch.tensor([[-1, -1, 0, 0, -1, 1, 1, -1]])
    allowed = chunk_attention(chunk_of)[0]
    assert not allowed.triu(1).any()  # causal
    assert allowed[3, 2] and not allowed[3, 1]  # a chunk token sees its own chunk only
    assert allowed[6, 5] and not allowed[6, 3] and not allowed[5, 0]
    assert allowed[7].all() and allowed[4, :5].all()  # text outside chunks sees everything before it
    padded = chunk_attention(chunk_of, torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]]))[0]
    others = ~torch.eye(8, dtype=torch.bool)
    assert not (padded[:, 6:] & others[:, 6:]).any() and padded[7, 7]  # padding: seen by no one, sees itself
    mask = additive(allowed[None], torch.float32)
    assert mask.shape == (1, 1, 8, 8) and mask[0, 0, 3, 2] == 0 and mask[0, 0, 3, 1] < -1e30


def test_open_heads_frees_the_first_tokens_of_each_chunk():
    chunk_of = [-1, 0, 0, 0, -1, 1, 1, 2, 2, 2]
    assert open_heads(chunk_of, 0) == chunk_of
    assert open_heads(chunk_of, 2) == [-1, -1, -1, 0, -1, -1, -1, -1, -1, 2]
    assert open_heads(chunk_of, 99) == [-1] * len(chunk_of)  # every token recomputed: plain attention


# --- with the model -----------------------------------------------------------------------------


def test_shifted_keys_equal_keys_encoded_at_the_offset(generator):
    model, tok = generator.model, generator.tokenizer
    ids = tok(" Zorblat Battery\nA Zorblat lamp battery lasts 31 hours.", add_special_tokens=False)["input_ids"]
    rotary = rotary_of(model)
    assert rotary is not None
    x = torch.tensor([ids])
    with torch.inference_mode():
        at0 = model(input_ids=x, position_ids=torch.arange(len(ids))[None], use_cache=True).past_key_values
        at7 = model(input_ids=x, position_ids=torch.arange(7, 7 + len(ids))[None], use_cache=True).past_key_values
    for layer0, layer7 in zip(at0.layers, at7.layers, strict=True):
        assert torch.allclose(shift_keys(layer0.keys[0], 7, rotary), layer7.keys[0], atol=1e-4)
        assert torch.allclose(layer0.values[0], layer7.values[0], atol=1e-4)  # values carry no position


def _next_logits(model, row) -> torch.Tensor:
    """The next-token logits of a `RowCache`: its last token over its cache."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for n, (k, v) in enumerate(zip(row.keys, row.values, strict=True)):
        cache.update(k[None], v[None], n)
    mask = additive(torch.ones(1, 1, len(row.ids), dtype=torch.bool), torch.float32)
    last, at = torch.tensor([[row.ids[-1]]]), torch.tensor([[len(row.ids) - 1]])
    return model(input_ids=last, position_ids=at, attention_mask=mask, past_key_values=cache).logits[0, -1]


def test_joined_cache_equals_a_full_pass_with_the_same_attention(generator):
    """The reuse path is exact: its next-token logits equal one forward pass over the same token ids
    with chunk attention (`chunk_attention`), so the only change from a plain prefill is the attention."""
    model, tok = generator.model, generator.tokenizer
    builder = PromptBuilder(tok, "Answer in one sentence.")
    prompt, pieces = builder.prompt(QUESTION, BLOCKS), builder.chunk_pieces(BLOCKS)
    segments = split_prompt(prompt, pieces)
    assert segments is not None and sum(s.chunk for s in segments) == 2
    encoder = ChunkEncoder(KVStore(1 << 28), "test")
    with torch.inference_mode():
        row = encoder.row(model, tok, segments, ("base", "float32"), rotary_of(model))
        ids, chunk_of = piece_ids(tok, prompt, pieces)
        assert row.ids == ids and row.keys[0].shape[1] == len(ids) - 1
        reused = _next_logits(model, row)
        full_mask = additive(chunk_attention(torch.tensor([chunk_of])), torch.float32)
        exact = model(input_ids=torch.tensor([ids]), attention_mask=full_mask).logits[0, -1]
        plain = model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert torch.allclose(reused, exact, atol=2e-3, rtol=1e-3)
    assert not torch.allclose(reused, plain, atol=2e-3)  # chunks encoded apart are a real difference
    assert encoder.store.stats()["entries"] == 3  # the opening and the two chunks


def test_recomputing_chunk_tokens_moves_reuse_toward_the_full_prefill(generator):
    """Chunk tokens chosen for recompute attend to everything before them and replace their stored
    copies: recomputing every token is the plain prefill again, a few of them lies between."""
    model, tok = generator.model, generator.tokenizer
    builder = PromptBuilder(tok, "Answer in one sentence.")
    prompt, pieces = builder.prompt(QUESTION, BLOCKS), builder.chunk_pieces(BLOCKS)
    segments = split_prompt(prompt, pieces)
    ids, _ = piece_ids(tok, prompt, pieces)
    logits = {}
    with torch.inference_mode():
        plain = model(input_ids=torch.tensor([ids])).logits[0, -1]
        for m in (0, 4, 10_000):
            encoder = ChunkEncoder(KVStore(1 << 28), "test", recompute=m)
            row = encoder.row(model, tok, segments, ("base", "float32"), rotary_of(model))
            assert row.ids == ids and row.keys[0].shape[1] == len(ids) - 1  # stored copies were dropped
            logits[m] = _next_logits(model, row)
    assert torch.allclose(logits[10_000], plain, atol=2e-3, rtol=1e-3)
    gaps = {m: float((logits[m] - plain).abs().max()) for m in (0, 4)}
    assert gaps[0] > 1e-2 and gaps[4] < gaps[0]


def test_pipeline_answers_with_reuse_batched_streamed_and_after_an_update(serving_pipeline):
    pipe = serving_pipeline(own_index=True)
    store = pipe.generator.chunk_store
    store.clear()
    before = store.stats()
    first = pipe.answer(QUESTION, mode="rag", kv_reuse=True)
    again = pipe.answer(QUESTION, mode="rag", kv_reuse=True)
    assert first.answer == again.answer and first.answer
    after = store.stats()
    assert after["hits"] > before["hits"] and after["entries"] > 0
    # batched rows with different chunks give each row what it gets alone
    questions = [QUESTION, "What does the Basic plan cost?"]
    batched = pipe.answer_many(questions, mode="rag", kv_reuse=True)
    alone = [pipe.answer(q, mode="rag", kv_reuse=True).answer for q in questions]
    assert [a.answer for a in batched] == alone
    streamed = list(pipe.stream(QUESTION, mode="rag", kv_reuse=True))
    assert "".join(p for p in streamed if isinstance(p, str)).strip() == first.answer
    # a document update changes the chunk text, so its cache key: a miss, then the new fact
    misses = store.stats()["misses"]
    pipe.index.upsert(
        [Document(id="battery", title="Zorblat Battery", text="A Zorblat lamp battery lasts 55 hours.")], progress=False
    )
    updated = pipe.answer(QUESTION, mode="rag", kv_reuse=True, top_k=1)
    assert store.stats()["misses"] > misses
    assert any(c.doc_id == "battery" for c in updated.citations)


def test_reuse_is_an_arm_knob_for_its_arm_only(pipeline_factory):
    shared = pipeline_factory()
    backend = InProcessBackend(shared)
    store = shared.generator.chunk_store
    start = store.stats()
    backend.answer([QUESTION], ArmSpec(name="rag", mode="rag", max_new_tokens=4), None)
    assert store.stats() == start  # no reuse unless asked: the store is untouched
    backend.answer([QUESTION], ArmSpec(name="rag-reuse", mode="rag", kv_reuse=True, max_new_tokens=4), None)
    assert store.stats()["misses"] + store.stats()["hits"] > start["misses"] + start["hits"]
    assert shared.config.generation.kv_reuse is False


def test_independent_chunk_rows_and_collator(generator):
    from ragtune.tuning.chunk_attention import ChunkAttentionCollator
    from ragtune.tuning.data import Example
    from ragtune.tuning.encode import encode_examples

    tok = generator.tokenizer
    tok.padding_side = "right"
    try:
        builder = PromptBuilder(tok, "Answer in one sentence.")
        ex = [
            Example(
                question=QUESTION, answer="31 hours.", context=[{"title": b.title, "text": b.text} for b in BLOCKS]
            ),
            Example(question="Hi?", answer="Hello."),
        ]
        rows, _ = encode_examples(ex, builder, 512, 0.0, 0, independent_chunks=True)
        plain, _ = encode_examples(ex, builder, 512, 0.0, 0)
        assert "chunk_of" not in plain[0] and set(rows[0]["chunk_of"]) == {-1, 0, 1}
        assert set(rows[1]["chunk_of"]) == {-1}  # no context: plain causal attention
        n_answer = sum(label != -100 for label in rows[0]["labels"])
        assert n_answer == sum(label != -100 for label in plain[0]["labels"])
        batch = ChunkAttentionCollator(tok)(rows)
        width = max(len(r["input_ids"]) for r in rows)
        assert batch["attention_mask"].shape == (2, 1, width, width)
        chunk = rows[0]["chunk_of"].index(1)
        assert batch["attention_mask"][0, 0, chunk, 0] < -1e30  # a chunk token does not see the system prompt
        assert batch["attention_mask"][0, 0, width - 1, 0] == 0 or len(rows[0]["input_ids"]) < width
        opened = ChunkAttentionCollator(tok, recompute=2)(rows)["attention_mask"]
        assert opened[0, 0, chunk, 0] == 0 and opened[0, 0, chunk + 1, 0] == 0  # recomputed: sees all before
        assert opened[0, 0, chunk + 2, 0] < -1e30  # the rest of the chunk still sees its chunk only
    finally:
        tok.padding_side = "left"


@pytest.mark.slow  # a training run (CI runs it; the local `make test` leaves it out)
def test_training_with_independent_chunks_records_it(tmp_path: Path):
    from ragtune.core.adapters import read_card
    from ragtune.core.config import load_config
    from ragtune.tuning.data import Example
    from ragtune.tuning.trainer import train_adapter

    context = [{"title": b.title, "text": b.text} for b in BLOCKS]
    examples = [
        Example(question=f"{QUESTION} ({m})", answer="It lasts 31 hours.", context=context, group=f"g{m % 2}")
        for m in range(4)
    ]
    tuning = {"independent_chunks": True, "batch_size": 2, "val_fraction": 0.5, "format_sample": 0, "lora_r": 2}
    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides={"tuning": {**tuning, "context_dropout": 0.0}})
    result = train_adapter(examples, "apart", cfg, progress=False, max_steps=1)
    card = read_card(result.path)
    assert card.hyperparameters["independent_chunks"] is True
    assert card.hyperparameters["kv_reuse_recompute"] == cfg.generation.kv_reuse_recompute  # what it trained for
    assert card.metrics["val_loss"] is not None and card.metrics["first_step_loss"] is not None


@pytest.mark.parametrize("segments", [[Segment("only text", False)]])
def test_a_prompt_without_chunks_still_gets_a_full_cache(generator, segments):
    model, tok = generator.model, generator.tokenizer
    encoder = ChunkEncoder(KVStore(1 << 20), "test")
    with torch.inference_mode():
        row = encoder.row(model, tok, segments, ("base", "float32"), rotary_of(model))
    assert row.keys[0].shape[1] == len(row.ids) - 1 and encoder.store.stats()["entries"] == 0
