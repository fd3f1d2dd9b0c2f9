"""Question -> (retrieve) -> prompt -> (adapter) -> answer, in one of four modes.

base    no adapter, no retrieval
ft      adapter only
rag     retrieval, base model
hybrid  retrieval + adapter
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ragtune.core.adapters import (
    CARD_NAME,
    adapter_path,
    check_base_model,
    list_adapters,
    read_card,
)
from ragtune.core.config import MODES, Config
from ragtune.core.errors import ConfigError, DataError, NotFoundError
from ragtune.core.generator import Generation, Generator
from ragtune.core.models import load_generator_model
from ragtune.core.prompt import PromptBuilder
from ragtune.core.threads import release_openmp_team
from ragtune.core.types import Answer, Citation, ContextBlock, Hit, Timings, Usage
from ragtune.retrieval.compress import compress_hits
from ragtune.retrieval.drift import warn_if_drifted
from ragtune.retrieval.index import Index

T = TypeVar("T")
RETRIEVING = {"rag", "hybrid"}
TUNED = {"ft", "hybrid"}


@dataclass
class Prepared:
    """A question made ready for the generator: its prompt and what the answer will cite."""

    mode: str
    adapter: str | None
    prompt: str
    citations: list[Citation]
    snapshot: str | None
    retrieve_ms: float


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    return mode


class Pipeline:
    def __init__(self, config: Config, generator: Generator, index: Index | None = None) -> None:
        self.config = config
        self.generator = generator
        self.index = index
        self.builder = PromptBuilder(generator.tokenizer, config.prompt.system_prompt)
        self.index_lock = threading.RLock()  # held by callers that need several index reads to agree

    @classmethod
    def from_config(cls, config: Config, with_index: bool = True) -> Pipeline:
        model, tok = load_generator_model(config.models.generator, config.models.cache_dir)
        gen = Generator(model, tok, config.generation)
        index = None
        if with_index and (config.index_dir / "store.sqlite").exists():
            index = Index.from_config(config)
        return cls(config, gen, index)

    def warm(self) -> Pipeline:
        """Load the embedder now, so the first rag/hybrid request does not pay for it (a second or more);
        with bf16 prefill, also the default adapter and its bf16 copy (about a second more)."""
        if self.index is not None and self.index.stats()["chunks"]:
            _ = self.index.model
        if self.generator.config.prefill_dtype == "bfloat16":
            try:
                name = self.resolve_adapter("hybrid", None)
            except (ConfigError, DataError, NotFoundError):
                return self  # no usable adapter yet: ft/hybrid requests say why, warming is no place to fail
            self.generator.warm_prefill(name)
        return self

    # adapters -----------------------------------------------------------------------------------
    def resolve_adapter(self, mode: str, adapter: str | None) -> str | None:
        """The adapter a mode needs: the one asked for, the configured default, or the newest one."""
        if mode not in TUNED:
            return None
        name = adapter or self.config.serving.default_adapter
        if name is None:
            cards = sorted(list_adapters(self.config.adapters_dir), key=lambda c: c.created_at)
            if not cards:
                raise ConfigError(f"mode '{mode}' needs an adapter; train one with `ragtune tune` first")
            name = cards[-1].name
        if name not in self.generator.adapters:
            self.load_adapter(name)
        return name

    def load_adapter(self, name: str, path: Path | None = None) -> None:
        """Refuse an adapter made for another base model; warn when a RAFT adapter's index has moved far."""
        folder = path or adapter_path(self.config.adapters_dir, name)
        card = read_card(folder) if (folder / CARD_NAME).is_file() else None
        if card is not None:
            check_base_model(card, self.config.models.generator)
            if self.index is not None:
                warn_if_drifted(card, self.index, self.config.tuning.drift_warn)
        self.generator.load_adapter(name, folder)

    # retrieval ----------------------------------------------------------------------------------
    def _need_index(self) -> Index:
        if self.index is None or not self.index.stats()["chunks"]:
            raise DataError("this mode retrieves, but the index is empty; run `ragtune ingest PATH` first")
        return self.index

    def write_index(self, change: Callable[[Index], T]) -> T:
        """Run one index write; the index itself keeps writers one at a time across processes."""
        if self.index is None:
            self.index = Index.from_config(self.config)
        try:
            return change(self.index)
        finally:
            release_openmp_team()  # embedding made this thread an OpenMP team; the model thread needs the cores

    def check_snapshot(self, snapshot: str | None) -> None:
        """404 for a snapshot the index never had (or no longer keeps)."""
        if snapshot is None:
            return
        known = [s["id"] for s in self.index.snapshots()] if self.index is not None else []
        if snapshot not in known:
            raise NotFoundError(f"unknown snapshot '{snapshot}'; kept: {', '.join(known) or 'none'}")

    def _search(
        self,
        questions: Sequence[str],
        k: int,
        filters: dict[str, Any] | None,
        snapshot: str | None,
        search_mode: str | None,
    ) -> tuple[list[list[Hit]], str | None]:
        """Hits and the snapshot they came from: pinned, so a concurrent commit cannot blur the two."""
        with self.index_lock:
            index = self._need_index()
            pinned = snapshot or index.snapshot
            params = set(inspect.signature(index.search_many).parameters)
            if "snapshot" not in params:  # an index without snapshot pinning: current only
                if snapshot is not None and snapshot != index.snapshot:
                    self.check_snapshot(snapshot)
                    raise DataError(f"snapshot '{snapshot}' is not searchable; current is '{index.snapshot}'")
                return index.search_many(list(questions), k), pinned
            extra: dict[str, Any] = {"snapshot": pinned}
            if filters:
                extra["filters"] = filters
            if search_mode is not None:
                extra["mode"] = search_mode
            return index.search_many(list(questions), k, **extra), pinned

    def _contexts(self, question: str, hits: list[Hit]) -> tuple[list[ContextBlock], list[Hit]]:
        """The blocks the prompt shows and the hits they came from (what the answer cites)."""
        budget = self.config.prompt.max_context_tokens
        if self.config.prompt.compress == "sentences" and hits:
            # ranking is on the way to the first token too: bf16 with the prefill (scores move ~1e-4)
            with self.generator.prefill_precision():
                kept = compress_hits(question, hits, self._need_index().embed, self.generator.count_tokens, budget)
            return [ContextBlock(title=k.hit.chunk.title, text=k.text) for k in kept], [k.hit for k in kept]
        used: list[Hit] = []
        for hit in hits:
            cost = self.generator.count_tokens(hit.chunk.text)
            if used and cost > budget:
                break
            used.append(hit)
            budget -= cost
        return [ContextBlock(title=h.chunk.title, text=h.chunk.text) for h in used], used

    @staticmethod
    def _citations(hits: list[Hit]) -> list[Citation]:
        return [
            Citation(n=i, doc_id=h.chunk.doc_id, chunk_id=h.chunk.id, title=h.chunk.title, score=round(h.score, 4))
            for i, h in enumerate(hits, 1)
        ]

    def _check_questions(self, questions: Sequence[str]) -> None:
        for q in questions:
            if not q or not q.strip():
                raise DataError("question is empty")
            if len(q) > self.config.serving.max_question_chars:
                raise DataError(f"question is longer than {self.config.serving.max_question_chars} characters")

    def prepare_many(
        self,
        questions: Sequence[str],
        mode: str,
        adapter: str | None = None,
        top_k: int | None = None,
        filters: dict[str, Any] | None = None,
        snapshot: str | None = None,
        search_mode: str | None = None,
    ) -> list[Prepared]:
        """Everything before generation: checks, adapter, retrieval and the prompt."""
        check_mode(mode)
        self._check_questions(questions)
        name = self.resolve_adapter(mode, adapter)
        hits: list[list[Hit]] = [[] for _ in questions]
        retrieve_ms = 0.0
        used_snapshot = None
        if mode in RETRIEVING:
            t0 = time.perf_counter()
            k = top_k or self.config.retrieval.top_k
            hits, used_snapshot = self._search(questions, k, filters, snapshot, search_mode)
            retrieve_ms = (time.perf_counter() - t0) * 1000 / max(1, len(questions))
        elif snapshot is not None:
            self.check_snapshot(snapshot)
        out = []
        for q, h in zip(questions, hits, strict=True):
            ctx, used = self._contexts(q, h) if mode in RETRIEVING else ([], [])
            out.append(
                Prepared(
                    mode=mode,
                    adapter=name,
                    prompt=self.builder.prompt(q, ctx or None),
                    citations=self._citations(used),
                    snapshot=used_snapshot,
                    retrieve_ms=retrieve_ms,
                )
            )
        return out

    def prepare(self, question: str, mode: str, adapter: str | None = None, **kw: Any) -> Prepared:
        return self.prepare_many([question], mode, adapter, **kw)[0]

    @staticmethod
    def finish(prep: Prepared, gen: Generation, total_ms: float, ttft_ms: float | None = None) -> Answer:
        """The Answer record for a prepared question and its generation."""
        return Answer(
            answer=gen.text,
            mode=prep.mode,
            adapter=prep.adapter,
            snapshot=prep.snapshot,
            citations=prep.citations,
            timings=Timings(
                retrieve_ms=round(prep.retrieve_ms, 2),
                ttft_ms=round(gen.ttft_ms if ttft_ms is None else ttft_ms, 2),
                generate_ms=round(gen.generate_ms, 2),
                total_ms=round(total_ms, 2),
            ),
            usage=Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens),
        )

    # answering ----------------------------------------------------------------------------------
    def answer_many(
        self,
        questions: Sequence[str],
        mode: str = "hybrid",
        adapter: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        filters: dict[str, Any] | None = None,
        snapshot: str | None = None,
        search_mode: str | None = None,
    ) -> list[Answer]:
        """Answer several questions with one batched generate per `generation.batch_size`."""
        t0 = time.perf_counter()
        preps = self.prepare_many(questions, mode, adapter, top_k, filters, snapshot, search_mode)
        gens = self.generator.generate(
            [p.prompt for p in preps], adapter=preps[0].adapter if preps else None, max_new_tokens=max_new_tokens
        )
        wall = (time.perf_counter() - t0) * 1000
        return [
            self.finish(p, g, p.retrieve_ms + g.generate_ms if len(questions) > 1 else wall)
            for p, g in zip(preps, gens, strict=True)
        ]

    def answer(
        self,
        question: str,
        mode: str = "hybrid",
        adapter: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Answer:
        return self.answer_many([question], mode, adapter, top_k, max_new_tokens)[0]

    def stream(
        self,
        question: str,
        mode: str = "hybrid",
        adapter: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Iterator[str | Answer]:
        """Yield text pieces, then the final Answer (with citations and timings)."""
        t0 = time.perf_counter()
        prep = self.prepare(question, mode, adapter, top_k=top_k)
        t_gen = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        for piece in self.generator.stream(prep.prompt, adapter=prep.adapter, max_new_tokens=max_new_tokens):
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
            yield piece
        t_end = time.perf_counter()
        text = "".join(pieces).strip()
        gen = Generation(
            text=text,
            prompt_tokens=self.generator.count_tokens(prep.prompt),
            completion_tokens=self.generator.count_tokens(text),
            ttft_ms=((first or t_end) - t_gen) * 1000,
            generate_ms=(t_end - t_gen) * 1000,
        )
        yield self.finish(prep, gen, (t_end - t0) * 1000)
