"""Training with the attention `generation.kv_reuse` has at answer time (`tuning.independent_chunks`).

Under reuse each retrieved chunk was encoded alone, so its tokens never saw the system prompt or the
other chunks; an adapter trained on full attention meets a different model at answer time. Rows made
by `encode_examples(..., independent_chunks=True)` carry each token's chunk, and this collator turns
them into a 4-D attention mask (causal; inside a chunk, that chunk only), so the adapter learns to read
chunks encoded apart. Positions stay the true ones, as reuse rotates each chunk's keys to them. The
first `generation.kv_reuse_recompute` tokens of each chunk attend to everything before them, as reuse
computes them again at answer time.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq

from ragtune.core.kv_reuse import additive, chunk_attention, open_heads


class ChunkAttentionCollator:
    """Pads like `DataCollatorForSeq2Seq` (labels with -100), then replaces the 2-D padding mask by the
    4-D float mask of `chunk_attention`."""

    def __init__(self, tokenizer: Any, recompute: int = 0) -> None:
        self.pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        self.recompute = recompute

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        chunk_of = [open_heads(f.get("chunk_of") or [-1] * len(f["input_ids"]), self.recompute) for f in features]
        batch = self.pad([{k: v for k, v in f.items() if k != "chunk_of"} for f in features])
        width = batch["input_ids"].shape[1]
        right = self.pad.tokenizer.padding_side != "left"
        rows = [(c + [-1] * (width - len(c))) if right else ([-1] * (width - len(c)) + c) for c in chunk_of]
        allowed = chunk_attention(torch.tensor(rows), batch["attention_mask"])
        batch["attention_mask"] = additive(allowed, torch.float32)
        return batch
