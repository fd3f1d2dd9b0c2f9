"""Question -> (retrieve) -> prompt -> (adapter) -> answer, in one of four modes.

base    no adapter, no retrieval
ft      adapter only
rag     retrieval, base model
hybrid  retrieval + adapter
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ragtune.core.adapters import adapter_path, list_adapters
from ragtune.core.config import MODES, Config
from ragtune.core.errors import ConfigError, DataError
from ragtune.core.generator import Generator
from ragtune.core.models import load_generator_model
from ragtune.core.prompt import PromptBuilder
from ragtune.core.types import Answer, Citation, ContextBlock, Hit, Timings, Usage
from ragtune.retrieval.index import Index

RETRIEVING = {"rag", "hybrid"}
TUNED = {"ft", "hybrid"}


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

    @classmethod
    def from_config(cls, config: Config, with_index: bool = True) -> Pipeline:
        model, tok = load_generator_model(config.models.generator, config.models.cache_dir)
        gen = Generator(model, tok, config.generation)
        index = None
        if with_index and (config.index_dir / "store.sqlite").exists():
            index = Index(config.index_dir, config.retrieval, config.models.embedder)
        return cls(config, gen, index)

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
        self.generator.load_adapter(name, path or adapter_path(self.config.adapters_dir, name))

    # retrieval ----------------------------------------------------------------------------------
    def _need_index(self) -> Index:
        if self.index is None or self.index.faiss is None or self.index.faiss.ntotal == 0:
            raise DataError("this mode retrieves, but the index is empty; run `ragtune ingest PATH` first")
        return self.index

    def _contexts(self, hits: list[Hit]) -> list[ContextBlock]:
        budget = self.config.prompt.max_context_tokens
        blocks: list[ContextBlock] = []
        for hit in hits:
            cost = self.generator.count_tokens(hit.chunk.text)
            if blocks and cost > budget:
                break
            blocks.append(ContextBlock(title=hit.chunk.title, text=hit.chunk.text))
            budget -= cost
        return blocks

    @staticmethod
    def _citations(hits: list[Hit], n_used: int) -> list[Citation]:
        return [
            Citation(n=i, doc_id=h.chunk.doc_id, chunk_id=h.chunk.id, title=h.chunk.title, score=round(h.score, 4))
            for i, h in enumerate(hits[:n_used], 1)
        ]

    def _prepare(
        self, questions: Sequence[str], mode: str, top_k: int | None
    ) -> tuple[list[str], list[list[Hit]], list[int], float]:
        for q in questions:
            if not q or not q.strip():
                raise DataError("question is empty")
            if len(q) > self.config.serving.max_question_chars:
                raise DataError(f"question is longer than {self.config.serving.max_question_chars} characters")
        hits: list[list[Hit]] = [[] for _ in questions]
        retrieve_ms = 0.0
        if mode in RETRIEVING:
            t0 = time.perf_counter()
            hits = self._need_index().search_many(list(questions), top_k or self.config.retrieval.top_k)
            retrieve_ms = (time.perf_counter() - t0) * 1000 / max(1, len(questions))
        prompts, used = [], []
        for q, h in zip(questions, hits, strict=True):
            ctx = self._contexts(h) if mode in RETRIEVING else []
            prompts.append(self.builder.prompt(q, ctx or None))
            used.append(len(ctx))
        return prompts, hits, used, retrieve_ms

    # answering ----------------------------------------------------------------------------------
    def answer_many(
        self,
        questions: Sequence[str],
        mode: str = "hybrid",
        adapter: str | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[Answer]:
        """Answer several questions with one batched generate per `generation.batch_size`."""
        check_mode(mode)
        name = self.resolve_adapter(mode, adapter)
        t0 = time.perf_counter()
        prompts, hits, used, retrieve_ms = self._prepare(questions, mode, top_k)
        gens = self.generator.generate(prompts, adapter=name, max_new_tokens=max_new_tokens)
        wall = (time.perf_counter() - t0) * 1000
        snapshot = self.index.snapshot if (self.index is not None and mode in RETRIEVING) else None
        answers = []
        for g, h, n in zip(gens, hits, used, strict=True):
            answers.append(
                Answer(
                    answer=g.text,
                    mode=mode,
                    adapter=name,
                    snapshot=snapshot,
                    citations=self._citations(h, n),
                    timings=Timings(
                        retrieve_ms=round(retrieve_ms, 2),
                        ttft_ms=round(g.ttft_ms, 2),
                        generate_ms=round(g.generate_ms, 2),
                        total_ms=round(retrieve_ms + g.generate_ms if len(questions) > 1 else wall, 2),
                    ),
                    usage=Usage(prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens),
                )
            )
        return answers

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
        check_mode(mode)
        name = self.resolve_adapter(mode, adapter)
        t0 = time.perf_counter()
        prompts, hits, used, retrieve_ms = self._prepare([question], mode, top_k)
        t_gen = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        for piece in self.generator.stream(prompts[0], adapter=name, max_new_tokens=max_new_tokens):
            if first is None:
                first = time.perf_counter()
            pieces.append(piece)
            yield piece
        t_end = time.perf_counter()
        text = "".join(pieces).strip()
        yield Answer(
            answer=text,
            mode=mode,
            adapter=name,
            snapshot=self.index.snapshot if (self.index is not None and mode in RETRIEVING) else None,
            citations=self._citations(hits[0], used[0]),
            timings=Timings(
                retrieve_ms=round(retrieve_ms, 2),
                ttft_ms=round(((first or t_end) - t_gen) * 1000, 2),
                generate_ms=round((t_end - t_gen) * 1000, 2),
                total_ms=round((t_end - t0) * 1000, 2),
            ),
            usage=Usage(
                prompt_tokens=self.generator.count_tokens(prompts[0]),
                completion_tokens=self.generator.count_tokens(text),
            ),
        )
