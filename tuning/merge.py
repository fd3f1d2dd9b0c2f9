"""Fold a LoRA adapter into its base model: a plain model folder that serving loads with no PEFT layer.

Serving an adapter adds the low-rank product to every targeted projection at each step; a merged
model does that once, ahead of time, so it answers with the base model's latency. Point
`models.generator` at the written folder to serve it.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from ragtune import __version__
from ragtune.core.adapters import adapter_path, check_adapter_dir, check_base_model, read_card, write_card
from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.core.models import load_generator_model, peft_wrapping
from ragtune.tuning.trainer import base_model_hash


def merged_dir(config: Config, name: str) -> Path:
    return config.workspace / "models" / f"{name}-merged"


def merge_adapter(config: Config, name: str, out: Path | None = None) -> Path:
    """Write `WORKSPACE/models/NAME-merged` (or `out`): weights, tokenizer and a card of kind 'merged'."""
    from peft import PeftModel

    src = adapter_path(config.adapters_dir, name)
    check_adapter_dir(src)
    card = read_card(src)
    if card.kind != "lora":
        raise DataError(f"'{name}' is a {card.kind} model, not a LoRA adapter: there is nothing to merge")
    check_base_model(card, config.models.generator, base_model_hash(config))
    started = time.time()
    target = Path(out) if out is not None else merged_dir(config, name)
    m = config.models
    model, tok = load_generator_model(m.generator, m.cache_dir, device=m.device, dtype=m.dtype)
    with peft_wrapping():
        merged = PeftModel.from_pretrained(model, str(src)).merge_and_unload()
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    merged_card = card.model_copy(
        update={
            "name": f"{name}-merged",
            "kind": "merged",
            "parent_adapter": name,
            "ragtune_version": __version__,
            "wall_time_s": round(time.time() - started, 1),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    write_card(tmp, merged_card)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
