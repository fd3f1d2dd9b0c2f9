"""Question -> (retrieve) -> prompt -> (adapter) -> answer, in one of four modes.

base    no adapter, no retrieval
ft      adapter only
rag     retrieval, base model
hybrid  retrieval + adapter
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from ragtune.core.adapters import (
    CARD_NAME,
    adapter_path,
    check_base_model,
    list_adapters,
    read_card,
)
from ragtune.core.config import RETRIEVING, TUNED, Config, ModelsConfig
from ragtune.core.errors import ConfigError, DataError, NotFoundError
from ragtune.core.generator import Generation
from ragtune.core.options import AnswerOptions, Sampling, with_fields
from ragtune.core.prompt import Messages, PromptBuilder
from ragtune.core.text_generator import TextGenerator, make_generator
from ragtune.core.threads import release_openmp_team
from ragtune.core.types import Answer, Citation, ContextBlock, Hit, Timings, Usage
from ragtune.retrieval.compress import compress_hits
from ragtune.retrieval.drift import warn_if_drifted
from ragtune.retrieval.filters import Filters, Matched
from ragtune.retrieval.index import Index, index_exists
from ragtune.serving.condense import REWRITE_MAX_TOKENS, condense
from ragtune.serving.contracts import Prepared

T = TypeVar("T")


class Pipeline:
    def __init__(self, config: Config, generator: TextGenerator, index: Index | None = None) -> None:
        self.config = config
        self.generator = generator
        self.index = index
        self.builder = PromptBuilder(generator.tokenizer, config.prompt.system_prompt)
        self.index_lock = threading.RLock()  # held by callers that need several index reads to agree
        self._variants: dict[str, Pipeline] = {}  # `with_models`

    @classmethod
    def from_config(cls, config: Config, with_index: bool = True) -> Pipeline:
        """The generator `models.generator_backend` names (in process, or a server's client) and the index."""
        gen = make_generator(config.models, config.generation)
        index = None
        if with_index and index_exists(config):
            index = Index.from_config(config)
        return cls(config, gen, index)

    def with_models(self, models: ModelsConfig) -> Pipeline:
        """This pipeline answering through the generator `models` describes (an eval arm's own): the
        same index, prompt, retrieval and generation settings, so only the generator differs. Built
        once per distinct `models`."""
        if models == self.config.models:
            return self
        key = models.model_dump_json()
        if key not in self._variants:
            config = self.config.model_copy(update={"models": models})
            other = Pipeline(config, make_generator(models, config.generation), self.index)
            other.index_lock = self.index_lock
            self._variants[key] = other
        return self._variants[key]

    def warm(self) -> Pipeline:
        """Load the embedder now, so the first rag/hybrid request does not pay for it (a second or more);
        with bf16 prefill, also the default adapter and its bf16 copy (about a second more)."""
        if self.index is not None and self.index.stats()["chunks"]:
            _ = self.index.model
        if self.generator.prefill_dtype_for() == "bfloat16":
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
        """Refuse an adapter made for another base model; warn when a RAFT adapter's index has moved far.

        With a chat backend the adapter is a model name on the server, whose folder need not be here."""
        remote = self.generator.backend != "transformers"
        local = self.config.adapters_dir / name
        if path is None and remote and not local.is_dir():
            self.generator.load_adapter(name, local)
            return
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

    def match_filters(self, opts: AnswerOptions) -> Matched | None:
        """The ids `opts.filters` match, evaluated now (the server calls this in its thread pool, so a
        costly filter does not hold up the model thread); None when there is nothing to match."""
        if not opts.filters or opts.mode not in RETRIEVING or self.index is None:
            return None
        return self.index.match(opts.filters, opts.snapshot)

    def _search(
        self, questions: Sequence[str], opts: AnswerOptions, matched: Matched | None = None
    ) -> tuple[list[list[Hit]], str | None]:
        """Hits and the snapshot they came from: pinned, so a concurrent commit cannot blur the two."""
        k = opts.top_k or self.config.retrieval.top_k
        with self.index_lock:
            index = self._need_index()
            filters: Filters = matched if matched is not None else (opts.filters or None)
            pinned = (matched.snapshot if matched is not None else opts.snapshot) or index.snapshot
            hits = index.search_many(list(questions), k, mode=opts.search_mode, filters=filters, snapshot=pinned)
            return hits, pinned

    def _contexts(self, question: str, hits: list[Hit], opts: AnswerOptions) -> tuple[list[ContextBlock], list[Hit]]:
        """The blocks the prompt shows and the hits they came from (what the answer cites)."""
        budget = opts.max_context_tokens or self.config.prompt.max_context_tokens
        if (opts.compress or self.config.prompt.compress) == "sentences" and hits:
            # ranking is on the way to the first token too: bf16 with the prefill (scores move ~1e-4)
            with self.generator.prefill_precision(opts.prefill_dtype):
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

    def _builder(self, opts: AnswerOptions) -> PromptBuilder:
        """The pipeline's prompt builder, or one with this call's system prompt."""
        if opts.system_prompt is None:
            return self.builder
        return replace(self.builder, system_prompt=opts.system_prompt)

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

    def _retrieve(
        self, questions: Sequence[str], opts: AnswerOptions, matched: Matched | None
    ) -> tuple[list[list[Hit]], str | None, float]:
        """Each question's hits, their snapshot and the retrieval time per question (nothing for base/ft)."""
        if opts.mode not in RETRIEVING:
            self.check_snapshot(opts.snapshot)
            return [[] for _ in questions], None, 0.0
        t0 = time.perf_counter()
        hits, snapshot = self._search(questions, opts, matched)
        return hits, snapshot, (time.perf_counter() - t0) * 1000 / max(1, len(questions))

    def prepare_many(
        self,
        questions: Sequence[str],
        options: AnswerOptions | None = None,
        matched: Matched | None = None,
        **fields: Any,
    ) -> list[Prepared]:
        """Everything before generation: checks, adapter, retrieval and the prompt; `matched` (from
        `match_filters`) stands in for the options' filters."""
        return self._prepare(questions, with_fields(options, fields), [[] for _ in questions], matched)

    def condense(self, question: str, history: Messages) -> str:
        """The retrieval query for a follow-up after `history` (`serving.condense`)."""
        cfg = self.config.serving

        def rewrite() -> str:
            messages = self.builder.condense_messages(question, self.builder.fit_history(history, cfg.history_tokens))
            greedy = Sampling(do_sample=False)
            gen = self.generator.generate(
                [self.builder.render(messages)], None, REWRITE_MAX_TOKENS, greedy, messages=[messages]
            )
            return gen[0].text

        return condense(cfg.condense, question, history, cfg.condense_turns, rewrite)

    def _queries(self, questions: Sequence[str], histories: Sequence[Messages], opts: AnswerOptions) -> list[str]:
        if opts.mode not in RETRIEVING:
            return list(questions)
        return [self.condense(q, h) if h else q for q, h in zip(questions, histories, strict=True)]

    def _prepare(
        self,
        questions: Sequence[str],
        opts: AnswerOptions,
        histories: Sequence[Messages],
        matched: Matched | None = None,
    ) -> list[Prepared]:
        """Each question after its earlier turns (`histories`, empty for a first question) made ready:
        retrieval searches the condensed query, the prompt quotes the turns within `serving.history_tokens`."""
        self._check_questions(questions)
        name = self.resolve_adapter(opts.mode, opts.adapter)
        t0 = time.perf_counter()
        queries = self._queries(questions, histories, opts)
        condense_ms = (time.perf_counter() - t0) * 1000 / max(1, len(questions))
        hits, snapshot, retrieve_ms = self._retrieve(queries, opts, matched)
        builder = self._builder(opts)
        budget = self.config.serving.history_tokens
        out = []
        for q, query, h, history in zip(questions, queries, hits, histories, strict=True):
            ctx, used = self._contexts(query, h, opts) if opts.mode in RETRIEVING else ([], [])
            turns = builder.fit_history(history, budget) if history and budget else None
            messages = builder.messages(q, ctx or None, turns or None)
            out.append(
                Prepared(
                    mode=opts.mode,
                    adapter=name,
                    prompt=builder.render(messages),
                    citations=self._citations(used),
                    snapshot=snapshot,
                    retrieve_ms=retrieve_ms + condense_ms,
                    messages=messages,
                    chunks=tuple(builder.chunk_pieces(ctx)) if ctx and self._reuses(opts) else (),
                )
            )
        return out

    def _reuses(self, opts: AnswerOptions) -> bool:
        return opts.kv_reuse if opts.kv_reuse is not None else self.config.generation.kv_reuse

    def prepare_chat(self, messages: Messages, options: AnswerOptions) -> Prepared:
        """A client's chat messages as they are, no retrieval, no house system prompt: what
        `serving.engine_api` serves to another ragtune (or any client) using this one as its engine.
        Rendered by the same prompt builder, so a ragtune client's messages become the prompt it would
        have rendered itself."""
        if options.mode in RETRIEVING:
            raise ConfigError("chat messages are answered as given: modes base or ft only")
        if not any(m.get("content", "").strip() for m in messages):
            raise DataError("messages: no message with text")
        messages = self.builder.client_messages(messages)
        return Prepared(
            mode=options.mode,
            adapter=self.resolve_adapter(options.mode, options.adapter),
            prompt=self.builder.render(messages),
            citations=[],
            snapshot=None,
            retrieve_ms=0.0,
            messages=messages,
        )

    def prepare(
        self,
        question: str,
        options: AnswerOptions | None = None,
        history: Messages | None = None,
        matched: Matched | None = None,
        **fields: Any,
    ) -> Prepared:
        """One question, after the conversation's earlier user/assistant turns (`history`) if any."""
        return self._prepare([question], with_fields(options, fields), [history or []], matched)[0]

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
        self, questions: Sequence[str], options: AnswerOptions | None = None, **fields: Any
    ) -> list[Answer]:
        """Answer several questions with one batched generate per `generation.batch_size`."""
        opts = with_fields(options, fields)
        t0 = time.perf_counter()
        preps = self.prepare_many(questions, opts)
        gens = self.generator.generate(
            [p.prompt for p in preps],
            adapter=preps[0].adapter if preps else None,
            max_new_tokens=opts.max_new_tokens,
            sampling=opts.sampling,
            prefill_dtype=opts.prefill_dtype,
            messages=[p.messages for p in preps],
            chunks=[p.chunks for p in preps],
        )
        wall = (time.perf_counter() - t0) * 1000
        return [
            self.finish(p, g, p.retrieve_ms + g.generate_ms if len(questions) > 1 else wall)
            for p, g in zip(preps, gens, strict=True)
        ]

    def answer(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Answer:
        return self.answer_many([question], options, **fields)[0]

    def stream(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Iterator[str | Answer]:
        """Yield text pieces, then the final Answer (with citations and timings, the generator's TTFT)."""
        opts = with_fields(options, fields)
        t0 = time.perf_counter()
        prep = self.prepare(question, opts)
        gen: Generation | None = None
        for item in self.generator.stream(
            prep.prompt,
            prep.adapter,
            opts.max_new_tokens,
            opts.sampling,
            opts.prefill_dtype,
            prep.messages,
            prep.chunks,
        ):
            if isinstance(item, Generation):
                gen = item
            else:
                yield item
        if gen is None:
            raise RuntimeError("the generator's stream ended without its Generation")
        yield self.finish(prep, gen, (time.perf_counter() - t0) * 1000)
