"""Examples -> token rows with labels, through the shared prompt builder (no train/serve skew).

Prompt tokens get label -100, so the loss covers only the answer and its end-of-turn. Rows keep
their own length; batches are padded per batch (length-grouped by the Trainer), never to max_length.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from ragtune.core.kv_reuse import piece_ids
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.cleaning import CleanReport
from ragtune.tuning.data import Example

Row = dict[str, list[int]]
MIN_ANSWER_TOKENS = 4  # a truncated example must keep at least this much answer to teach anything


def encode_examples(
    examples: list[Example],
    builder: PromptBuilder,
    max_length: int,
    context_dropout: float,
    seed: int,
    overlong: str = "drop",
    report: CleanReport | None = None,
    *,
    independent_chunks: bool = False,
) -> tuple[list[Row], int]:
    """Tokenise; returns (rows, number dropped as too long). `overlong="truncate"` cuts the answer's tail.

    `independent_chunks`: rows with retrieved context are tokenized piece by piece as `generation.kv_reuse`
    does and carry `chunk_of` (each token's chunk, -1 outside chunks), from which the collator makes the
    attention that reuse has at answer time (`tuning/chunk_attention.py`)."""
    tok = builder.tokenizer
    rng = random.Random(seed)
    rows: list[Row] = []
    dropped = 0
    for ex in examples:
        ctx = ex.context if ex.context and rng.random() >= context_dropout else None
        prompt, full = builder.training_pair(ex.question, ex.answer, ctx)
        chunk_of: list[int] | None = None
        if independent_chunks:
            p_ids, chunk_of = piece_ids(tok, prompt, builder.chunk_pieces(ctx) if ctx else [])
            f_ids = p_ids + tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        else:
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            f_ids = tok(full, add_special_tokens=False)["input_ids"]
        if len(f_ids) > max_length:
            if overlong == "truncate" and len(p_ids) + MIN_ANSWER_TOKENS <= max_length:
                f_ids = f_ids[:max_length]
                if report is not None:
                    report.truncated += 1
            else:
                dropped += 1
                continue
        labels = [-100] * len(p_ids) + f_ids[len(p_ids) :]
        row = {"input_ids": f_ids, "attention_mask": [1] * len(f_ids), "labels": labels}
        if chunk_of is not None:
            row["chunk_of"] = (chunk_of + [-1] * len(f_ids))[: len(f_ids)]
        rows.append(row)
    if report is not None and dropped:
        report.drop(f"longer than max_length={max_length} tokens", dropped)
        report.kept -= dropped
    return rows, dropped


def encode_corpus(texts: Iterable[str], tokenizer: Any, max_length: int) -> list[Row]:
    """Domain-adaptive (causal-lm) rows: each text cut into max_length windows, loss on every token.

    Indexed text is untrusted: a special-token string in it (`<|im_end|>`) is tokenized as plain text
    (`split_special_tokens`), so a document cannot teach the model a turn boundary."""
    rows: list[Row] = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] + eos
        for start in range(0, len(ids), max_length):
            piece = ids[start : start + max_length]
            if len(piece) >= 8:
                rows.append({"input_ids": piece, "attention_mask": [1] * len(piece), "labels": list(piece)})
    return rows


def non_pad_tokens(rows: list[Row]) -> int:
    return sum(len(r["input_ids"]) for r in rows)
