"""Text generation over one base model with any number of LoRA adapters, chosen per call.

Greedy by default and seeded, so eval runs repeat. Batched calls pad on the left (decoder-only).
Every call decodes through `generate_rows`: `generate` batches plain prompts into it, `stream` runs
it for one row in a worker thread, and the scheduler hands it rows of concurrent requests.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ragtune.core.config import GenerationConfig
from ragtune.core.errors import NotFoundError
from ragtune.core.kv_reuse import (
    ChunkEncoder,
    KVStore,
    Segment,
    batch_inputs,
    rotary_of,
    split_prompt,
    warn_not_rope,
)
from ragtune.core.models import peft_wrapping
from ragtune.core.options import Sampling
from ragtune.core.precision import resolve_prefill_dtype
from ragtune.core.prefill import PrefillCopies
from ragtune.core.prompt import Messages
from ragtune.core.threads import release_openmp_team

# The bf16 prefill is a forward pass of its own before `generate` takes over, so the last prompt
# token costs a float32 step (~45 ms for the 135M model on 2 cores). Measured with the LoRA, the time
# to the first token broke even near 60 prompt tokens (42: 114 ms float32 against 126 ms; 74: 149
# against 134; 310: 453 against 242), so shorter batches stay float32. Letting `generate`'s own first
# step run in bf16 instead saves that step but picks the first answer token from bf16 logits, which
# cost 0.025 token F1 on CMU-QA (docs/serving.md).
BF16_PREFILL_MIN_TOKENS = 64


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    generate_ms: float


@dataclass
class RowRequest:
    """One prompt of a shared batch, with its own token limit and its own way to stop early.

    `on_token(token_id)` sees each new token as it is decoded; `cancelled()` is polled every step,
    so a client that went away or ran out of time stops its row without stopping the others.
    A chat backend (`core/remote_generator.py`) sends `messages` (the prompt builder's, which
    `prompt` renders) and reports text pieces to `on_text` instead of token ids. The row's text ends
    before the first of its `stop` strings (rows of one batch may have different ones).
    """

    prompt: str
    max_new_tokens: int
    ignore_eos: bool = False
    on_token: Callable[[int], None] | None = None
    cancelled: Callable[[], bool] | None = None
    messages: Messages | None = None
    on_text: Callable[[str], None] | None = None
    stop: tuple[str, ...] = ()
    chunks: tuple[str, ...] = ()  # pieces of `prompt` whose KV caches are reused (`core/kv_reuse.py`)
    tokens: list[int] = field(default_factory=list)
    finished_at: float | None = None
    stopped_early: bool = False


class _RowTracker(BaseStreamer, StoppingCriteria):
    """Streamer + stopping criterion: routes each step's tokens to their rows, stops rows one by one,
    and is the one clock of the time to the first token (`first`)."""

    def __init__(self, rows: list[RowRequest], eos_ids: set[int], tokenizer: Any) -> None:
        self.rows = rows
        self.eos_ids = eos_ids
        self.tokenizer = tokenizer
        self.done = [False] * len(rows)
        self.prompt_seen = False
        self.first: float | None = None

    def _finish(self, i: int, early: bool = False) -> None:
        if not self.done[i]:
            self.done[i] = True
            self.rows[i].finished_at = time.perf_counter()
            self.rows[i].stopped_early = early

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt ids
            self.prompt_seen = True
            return
        if self.first is None:
            self.first = time.perf_counter()
        for i, tok in enumerate(value.reshape(-1).tolist()):
            row = self.rows[i]
            if self.done[i]:
                continue
            if tok in self.eos_ids and not row.ignore_eos:
                self._finish(i)
                continue
            row.tokens.append(int(tok))
            if row.on_token is not None:
                row.on_token(int(tok))
            if len(row.tokens) >= row.max_new_tokens or self._stopped(row):
                self._finish(i)

    def _stopped(self, row: RowRequest) -> bool:
        return bool(row.stop) and stop_at(decoded(self.tokenizer, row.tokens), row.stop) is not None

    def end(self) -> None:
        for i in range(len(self.rows)):
            self._finish(i)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        for i, row in enumerate(self.rows):
            if not self.done[i] and row.cancelled is not None and row.cancelled():
                self._finish(i, early=True)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


class _NoEos(LogitsProcessor):
    """Keeps end-of-sequence away from rows that asked for an exact length (benchmarks)."""

    def __init__(self, rows: list[int], eos_ids: list[int]) -> None:
        self.rows = rows
        self.eos_ids = eos_ids

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for r in self.rows:
            scores[r, self.eos_ids] = -float("inf")
        return scores


def stop_at(text: str, stops: Sequence[str]) -> int | None:
    """Where the first of the stop strings begins in `text`, or None."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    at = stop_at(text, stops)
    return text if at is None else text[:at]


def _stop_prefix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class StreamText:
    """The text a stream shows as the whole decoded text grows: never a stop string or what follows
    it, and never a tail that may turn into one until the next piece settles it."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stop = tuple(stop)
        self.sent = ""

    def release(self, text: str, final: bool = False) -> str:
        """What `text` (all decoded so far) adds to what was shown; `final` lets a held-back tail go."""
        at = stop_at(text, self.stop)
        if at is not None:
            text = text[:at]
        elif not final:
            text = text[: len(text) - _stop_prefix(text, self.stop)]
        if len(text) <= len(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece


class TextPieces(StreamText):
    """Token ids in, the text pieces a stream shows out: what decoding all ids so far adds, holding
    back half a multi-byte character until the rest arrives (and a possible stop string's start)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        super().__init__(stop)
        self.tokenizer = tokenizer
        self.tokens: list[int] = []

    def add(self, token: int) -> str:
        self.tokens.append(token)
        text = decoded(self.tokenizer, self.tokens)
        if text.endswith("\ufffd"):
            return ""
        return self.release(text)

    def rest(self) -> str:
        """What is left to show once decoding has ended."""
        return self.release(decoded(self.tokenizer, self.tokens), final=True)


def decoded(tokenizer: Any, tokens: list[int]) -> str:
    """A row's text as ragtune shows it: special tokens and leading whitespace dropped."""
    return str(tokenizer.decode(tokens, skip_special_tokens=True)).lstrip()


class Generator:
    """The in-process backend (`models.generator_backend: transformers`) of `TextGenerator`."""

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, config: GenerationConfig | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self.adapters: dict[str, Path] = {}
        self.lock = threading.RLock()  # one forward pass at a time: adapters are switched per call
        self.prefill_copies = PrefillCopies(self.config.prefill_copies)  # for `prefill_dtype: bfloat16`
        self._chunks: ChunkEncoder | None = None  # made on the first request that reuses chunk caches
        self._adapter_tags: dict[str | None, str] = {}
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def ready(self) -> bool:
        return self.model is not None

    # adapters -----------------------------------------------------------------------------------
    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        from ragtune.core.adapters import check_adapter_dir

        check_adapter_dir(path)
        with self.lock, peft_wrapping():
            if name in self.adapters:
                return
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            self.model.eval()
            self.adapters[name] = path

    def warm_prefill(self, adapter: str | None) -> None:
        """Build `adapter`'s bf16 prefill copy now rather than on its first long prompt."""
        with self.lock, torch.inference_mode():
            self.prefill_copies.get(self.model, adapter)

    def unload_adapter(self, name: str) -> None:
        with self.lock:
            if name not in self.adapters:
                raise NotFoundError(f"adapter '{name}' is not loaded")
            self.model.delete_adapter(name)
            del self.adapters[name]
            self.prefill_copies.drop(name)
            self._adapter_tags.pop(name, None)
            # PEFT can leave the deleted adapter marked active, and `generate` then fails for every mode
            if self.adapters:
                self.model.set_adapter(next(iter(self.adapters)))
            else:
                self.model = self.model.unload()  # the plain base model again, no LoRA layers left

    def _select(self, adapter: str | None) -> Any:
        """Context manager that runs the model with `adapter` active (or none)."""
        if adapter is None:
            if self.adapters:
                return self.model.disable_adapter()
            return nullcontext()
        if adapter not in self.adapters:
            raise NotFoundError(f"adapter '{adapter}' is not loaded; loaded: {sorted(self.adapters) or 'none'}")
        self.model.set_adapter(adapter)
        return nullcontext()

    # generation ---------------------------------------------------------------------------------
    def _kwargs(self, max_new_tokens: int, sampling: Sampling | None) -> dict[str, Any]:
        cfg, s = self.config, sampling or Sampling()
        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": s.samples(cfg.do_sample),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if kw["do_sample"]:
            kw["temperature"] = s.temperature or cfg.temperature
            if s.top_p is not None:
                kw["top_p"] = s.top_p
        else:
            kw["temperature"] = None
            kw["top_p"] = None
            kw["top_k"] = None
        return kw

    def prefill_dtype_for(self, dtype: str | None = None) -> str:
        """float32 or bfloat16: `dtype` (a call's choice) or `generation.prefill_dtype`, with auto resolved
        for this model's device (`core/precision.py`; forcing bf16 a CPU only emulates warns once)."""
        device = torch.device(self.model.device).type
        return resolve_prefill_dtype(dtype or self.config.prefill_dtype, device, self.model.dtype)

    def prefill_precision(self, dtype: str | None = None) -> AbstractContextManager[Any]:
        """bf16 autocast when the prompt pass is bf16 (`prefill_dtype_for`), else nothing: for work on the
        way to the first token outside this model (the pipeline's sentence ranking); the prompt itself
        runs through a bf16 copy of the model instead (`_inputs`)."""
        if self.prefill_dtype_for(dtype) == "float32":
            return nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def _inputs(self, enc: Any, adapter: str | None, dtype: str | None = None) -> dict[str, Any]:
        """`generate`'s inputs. With a bf16 prompt pass (`prefill_dtype_for`) the prompt, all but its last
        token, runs once through a bf16 copy of the model (`core/prefill.py`) and reaches `generate` as a
        float32 cache, so only the prefill (compute-bound, most of a retrieval prompt's cost on a CPU)
        leaves float32; decoding, which is bound by memory, gains little from bf16 and stays exact."""
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        short = int(enc["attention_mask"].sum()) < BF16_PREFILL_MIN_TOKENS
        if short or self.prefill_dtype_for(dtype) == "float32":
            return inputs
        ids, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as `generate` numbers padded rows
        twin = self.prefill_copies.get(self.model, adapter)
        out = twin(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.float(), layer.values.float()
            layer.dtype = torch.float32
        inputs["past_key_values"] = cache
        return inputs

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        prompts: Sequence[str],
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
        messages: Sequence[Messages] | None = None,  # chat backends send these; this one decodes `prompts`
        chunks: Sequence[tuple[str, ...]] | None = None,
    ) -> list[Generation]:
        """Complete each prompt; one batched decode per `batch_size` prompts. `chunks[i]` are pieces of
        prompt i whose KV caches are encoded once and reused (`core/kv_reuse.py`)."""
        limit = max_new_tokens or self.config.max_new_tokens
        # Batch prompts of similar length together: left padding is compute spent on nothing.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Generation | None] = [None] * len(prompts)
        bs = self.config.batch_size
        stop = sampling.stop if sampling is not None else ()
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            rows = [
                RowRequest(prompt=prompts[i], max_new_tokens=limit, stop=stop, chunks=chunks[i] if chunks else ())
                for i in idx
            ]
            for i, g in zip(idx, self.generate_rows(rows, adapter, sampling, prefill_dtype), strict=True):
                out[i] = g
        return [g for g in out if g is not None]

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    def generate_rows(
        self,
        rows: Sequence[RowRequest],
        adapter: str | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
    ) -> list[Generation]:
        """The one decode path: a batched `generate` for rows that share an adapter, each with its own
        limit, stop strings and early stop.

        Tokens reach each row's `on_token` as they are decoded, so a server can stream a batched
        request; the batch ends when every row has finished or been cancelled. `sampling` (how tokens
        are picked; the rows carry their stop strings) and `prefill_dtype` are this call's; None keeps
        the `generation` config's.
        """
        rows = list(rows)
        eos = self._eos_ids()
        tracker = _RowTracker(rows, eos, self.tokenizer)
        kw = self._kwargs(max(r.max_new_tokens for r in rows), sampling)
        no_eos = [i for i, r in enumerate(rows) if r.ignore_eos]
        if no_eos:
            kw["logits_processor"] = LogitsProcessorList([_NoEos(no_eos, sorted(eos))])
        seed = self.config.seed if sampling is None or sampling.seed is None else sampling.seed
        with self.lock, torch.inference_mode(), self._select(adapter):
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            inputs = self._row_inputs(rows, adapter, prefill_dtype)
            self.model.generate(
                **inputs,
                streamer=tracker,
                stopping_criteria=StoppingCriteriaList([tracker]),
                **kw,
            )
            t1 = time.perf_counter()
        return [
            Generation(
                text=cut_at_stop(decoded(self.tokenizer, row.tokens), row.stop).strip(),
                prompt_tokens=int(mask.sum()),
                completion_tokens=len(row.tokens),
                ttft_ms=((tracker.first or t1) - t0) * 1000,
                generate_ms=((row.finished_at or t1) - t0) * 1000,
            )
            for row, mask in zip(rows, inputs["attention_mask"], strict=True)
        ]

    def _row_inputs(self, rows: list[RowRequest], adapter: str | None, dtype: str | None) -> dict[str, Any]:
        """`generate`'s inputs for these rows: through the chunk caches when a row carries chunks (and
        the model's positions allow it), else the plain (or bf16) prefill of the whole prompts."""
        if any(r.chunks for r in rows):
            reused = self._reuse_inputs(rows, adapter, self.prefill_dtype_for(dtype))
            if reused is not None:
                return reused
        enc = self.tokenizer([r.prompt for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        return self._inputs(enc.to(self.model.device), adapter, dtype)

    @property
    def chunk_store(self) -> KVStore:
        """The reused chunk caches (made on first use, sized by `generation.kv_cache_mb`)."""
        return self._encoder().store

    def _encoder(self) -> ChunkEncoder:
        if self._chunks is None:
            store = KVStore(self.config.kv_cache_mb << 20, self.config.kv_cache_dir)
            name = str(getattr(self.model.config, "_name_or_path", ""))
            self._chunks = ChunkEncoder(store, name, recompute=self.config.kv_reuse_recompute)
        return self._chunks

    def _adapter_tag(self, adapter: str | None) -> str:
        """What identifies the adapter's weights in the cache key: a digest of its weight file."""
        if adapter not in self._adapter_tags:
            h = hashlib.sha256()
            for f in sorted(self.adapters[adapter].glob("adapter_model.*")) if adapter is not None else []:
                h.update(f.read_bytes())
            self._adapter_tags[adapter] = f"{adapter}:{h.hexdigest()}" if adapter is not None else "base"
        return self._adapter_tags[adapter]

    def _reuse_inputs(self, rows: list[RowRequest], adapter: str | None, dtype: str) -> dict[str, Any] | None:
        rotary = rotary_of(self.model)
        if rotary is None:
            warn_not_rope(str(getattr(self.model.config, "model_type", "this model's")))
            return None
        encoder = self._encoder()
        model = self.prefill_copies.get(self.model, adapter) if dtype == "bfloat16" else self.model
        tag = (self._adapter_tag(adapter), dtype)
        caches = []
        for row in rows:
            segments = split_prompt(row.prompt, row.chunks) if row.chunks else None
            caches.append(encoder.row(model, self.tokenizer, segments or [Segment(row.prompt, False)], tag, rotary))
        return batch_inputs(caches, int(self.tokenizer.pad_token_id), self.model.device)

    def stream(
        self,
        prompt: str,
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
        messages: Messages | None = None,  # chat backends send these; this one decodes `prompt`
        chunks: tuple[str, ...] = (),
    ) -> Iterator[str | Generation]:
        """Yield text pieces as they are decoded, then the Generation (the same as `generate`'s); the
        model runs in a worker thread. Closing the iterator early stops the decode."""
        events: queue.SimpleQueue[int | Generation | BaseException] = queue.SimpleQueue()
        stop = threading.Event()
        limit = max_new_tokens or self.config.max_new_tokens
        stops = sampling.stop if sampling is not None else ()
        row = RowRequest(prompt, limit, on_token=events.put, cancelled=stop.is_set, stop=stops, chunks=chunks)

        def work() -> None:
            try:
                events.put(self.generate_rows([row], adapter, sampling, prefill_dtype)[0])
            except BaseException as exc:  # surfaced to the consumer below
                events.put(exc)

        release_openmp_team()  # the model runs in another thread now: one OpenMP team, not two
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            yield from _pieces(events, TextPieces(self.tokenizer, stops))
        finally:
            stop.set()
            thread.join()


def _pieces(
    events: queue.SimpleQueue[int | Generation | BaseException], text: TextPieces
) -> Iterator[str | Generation]:
    """A stream's text pieces from the decode thread's token ids, then its Generation (or its error)."""
    while True:
        item = events.get()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Generation):
            rest = text.rest()
            if rest:
                yield rest
            yield item
            return
        piece = text.add(item)
        if piece:
            yield piece
