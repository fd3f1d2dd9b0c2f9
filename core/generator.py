"""Text generation over one base model with any number of LoRA adapters, chosen per call.

Greedy by default and seeded, so eval runs repeat. Batched calls pad on the left (decoder-only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from ragtune.core.config import GenerationConfig
from ragtune.core.errors import NotFoundError


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    generate_ms: float


class _FirstTokenClock(BaseStreamer):
    """Records when the first new token of a batch appears (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()


class Generator:
    def __init__(self, model: Any, tokenizer: Any, config: GenerationConfig | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self.adapters: dict[str, Path] = {}
        self.lock = threading.RLock()  # one forward pass at a time: adapters are switched per call
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # adapters -----------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        from ragtune.core.adapters import check_adapter_dir

        check_adapter_dir(path)
        with self.lock:
            if name in self.adapters:
                return
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            self.model.eval()
            self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        with self.lock:
            if name not in self.adapters:
                raise NotFoundError(f"adapter '{name}' is not loaded")
            self.model.delete_adapter(name)
            del self.adapters[name]

    def _select(self, adapter: str | None) -> Any:
        """Context manager that runs the model with `adapter` active (or none)."""
        from contextlib import nullcontext

        if adapter is None:
            if self.adapters:
                return self.model.disable_adapter()
            return nullcontext()
        if adapter not in self.adapters:
            raise NotFoundError(f"adapter '{adapter}' is not loaded; loaded: {sorted(self.adapters) or 'none'}")
        self.model.set_adapter(adapter)
        return nullcontext()

    # generation ---------------------------------------------------------------------------------
    def _kwargs(self, max_new_tokens: int | None) -> dict[str, Any]:
        cfg = self.config
        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or cfg.max_new_tokens,
            "do_sample": cfg.do_sample,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if cfg.do_sample:
            kw["temperature"] = cfg.temperature
        else:
            kw["temperature"] = None
            kw["top_p"] = None
            kw["top_k"] = None
        return kw

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self, prompts: Sequence[str], adapter: str | None = None, max_new_tokens: int | None = None
    ) -> list[Generation]:
        """Complete each prompt; one batched forward pass per `batch_size` prompts."""
        # Batch prompts of similar length together: left padding is compute spent on nothing.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Generation | None] = [None] * len(prompts)
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            for i, g in zip(idx, self._generate_batch([prompts[i] for i in idx], adapter, max_new_tokens), strict=True):
                out[i] = g
        return [g for g in out if g is not None]

    def _generate_batch(self, prompts: list[str], adapter: str | None, max_new_tokens: int | None) -> list[Generation]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        clock = _FirstTokenClock()
        with self.lock, torch.inference_mode(), self._select(adapter):
            torch.manual_seed(self.config.seed)
            t0 = time.perf_counter()
            ids = self.model.generate(**enc, streamer=clock, **self._kwargs(max_new_tokens))
            t1 = time.perf_counter()
        width = enc["input_ids"].shape[1]
        results = []
        for row, mask in zip(ids, enc["attention_mask"], strict=True):
            new = row[width:]
            new = new[new != self.tokenizer.pad_token_id] if self.tokenizer.pad_token_id is not None else new
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            results.append(
                Generation(
                    text=text,
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=int(new.numel()),
                    ttft_ms=((clock.first or t1) - t0) * 1000,
                    generate_ms=(t1 - t0) * 1000,
                )
            )
        return results

    def stream(self, prompt: str, adapter: str | None = None, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield text pieces as they are decoded; the model runs in a worker thread."""
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with self.lock, torch.inference_mode(), self._select(adapter):
                    torch.manual_seed(self.config.seed)
                    self.model.generate(**enc, streamer=streamer, **self._kwargs(max_new_tokens))
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if errors:
            raise errors[0]
