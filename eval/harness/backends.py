"""Where an arm's answers come from: the in-process pipeline, or a running server over HTTP.

Both return the serving `Answer` record, so the runner scores them the same way. Snapshot pinning
is passed through wherever the pipeline or the API accepts it, and checked where it does not.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import httpx

from ragtune.core.errors import DataError, RagtuneError
from ragtune.core.prompt import PromptBuilder
from ragtune.core.types import Answer
from ragtune.eval.harness.arms import ArmSpec
from ragtune.serving.pipeline import Pipeline


class Backend(Protocol):
    name: str

    def current_snapshot(self) -> str | None: ...

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]: ...

    def ranked_docs(
        self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, depth: int
    ) -> list[list[str]] | None: ...

    def context_texts(self, answer: Answer) -> list[str] | None: ...


def _accepts(fn: Any, name: str) -> bool:
    return name in inspect.signature(fn).parameters


class InProcessBackend:
    """The same `Pipeline` `ragtune serve` uses, called directly (batched)."""

    name = "in-process"

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def current_snapshot(self) -> str | None:
        return self.pipeline.index.snapshot if self.pipeline.index is not None else None

    @contextmanager
    def _variant(self, arm: ArmSpec) -> Iterator[dict[str, Any]]:
        """Apply an arm's prompt and search-mode knobs for the duration of its calls."""
        p = self.pipeline
        kw: dict[str, Any] = {}
        if arm.top_k is not None:
            kw["top_k"] = arm.top_k
        if arm.max_new_tokens is not None:
            kw["max_new_tokens"] = arm.max_new_tokens
        old_builder, old_mode, old_prompt, old_gen = p.builder, None, p.config.prompt, p.generator.config
        context = {"compress": arm.compress, "max_context_tokens": arm.max_context_tokens}
        context = {k: v for k, v in context.items() if v is not None}
        if context:
            p.config.prompt = old_prompt.model_copy(update=context)
        if arm.prefill_dtype is not None:
            p.generator.config = old_gen.model_copy(update={"prefill_dtype": arm.prefill_dtype})
        if arm.system_prompt is not None:
            p.builder = PromptBuilder(p.generator.tokenizer, arm.system_prompt)
        if arm.search_mode is not None:
            if _accepts(p.answer_many, "search_mode"):
                kw["search_mode"] = arm.search_mode
            elif p.index is not None:
                old_mode = p.index.config.search_mode
                p.index.config.search_mode = arm.search_mode
        try:
            yield kw
        finally:
            p.builder = old_builder
            p.config.prompt = old_prompt
            p.generator.config = old_gen
            if old_mode is not None and p.index is not None:
                p.index.config.search_mode = old_mode

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]:
        with self._variant(arm) as kw:
            pinned_here = snapshot is not None and arm.retrieves and _accepts(self.pipeline.answer_many, "snapshot")
            if pinned_here:
                kw["snapshot"] = snapshot
            answers = self.pipeline.answer_many(list(questions), mode=arm.mode, adapter=arm.adapter, **kw)
        if snapshot is not None and arm.retrieves and not pinned_here:
            moved = {a.snapshot or "none" for a in answers} - {snapshot}
            if moved:
                raise DataError(f"the index moved from snapshot {snapshot} to {sorted(moved)[0]} during the eval")
        return answers

    def ranked_docs(
        self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, depth: int
    ) -> list[list[str]] | None:
        """Distinct document ids in rank order, from a deeper search than the prompt uses."""
        index = self.pipeline.index
        if not arm.retrieves or index is None:
            return None
        kw: dict[str, Any] = {}
        if arm.search_mode is not None and _accepts(index.search_many, "mode"):
            kw["mode"] = arm.search_mode
        if snapshot is not None and _accepts(index.search_many, "snapshot"):
            kw["snapshot"] = snapshot
        with self.pipeline.index_lock if hasattr(self.pipeline, "index_lock") else _nullcontext():
            rows = index.search_many(list(questions), depth * 4, **kw)
        return [list(dict.fromkeys(h.chunk.doc_id for h in row))[:depth] for row in rows]

    def context_texts(self, answer: Answer) -> list[str] | None:
        index = self.pipeline.index
        if not answer.citations or index is None:
            return None
        chunks = index.store.chunks([c.chunk_id for c in answer.citations])
        return [c.text for c in chunks.values()]


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


class HttpBackend:
    """A running `ragtune serve`, through `POST /v1/answer` only (black box).

    Retrieval metrics come from the citations (so depth is the arm's top_k); grounding needs the
    passages' text, which the API does not return, so it is left empty here.
    """

    name = "http"

    def __init__(self, url: str, token: str | None = None, concurrency: int = 4, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.concurrency = concurrency
        self._snapshot: str | None = None

    def current_snapshot(self) -> str | None:
        return self._snapshot

    def _one(self, question: str, arm: ArmSpec, snapshot: str | None) -> Answer:
        server_side = ("system_prompt", "search_mode", "compress", "max_context_tokens", "prefill_dtype")
        if any(getattr(arm, key) is not None for key in server_side):
            raise RagtuneError(
                f"arm '{arm.name}': {', '.join(server_side)} are server settings and cannot be set through the API"
            )
        body: dict[str, Any] = {"question": question, "mode": arm.mode}
        for key in ("adapter", "top_k", "max_new_tokens"):
            if getattr(arm, key) is not None:
                body[key] = getattr(arm, key)
        if snapshot is not None and arm.retrieves:
            body["snapshot"] = snapshot
        try:
            resp = self.client.post("/v1/answer", json=body)
        except httpx.HTTPError as exc:
            raise RagtuneError(f"cannot reach {self.url}: {exc}") from None
        if resp.status_code != 200:
            try:
                msg = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = resp.text[:200]
            raise RagtuneError(f"{self.url}/v1/answer answered {resp.status_code}: {msg}")
        ans = Answer.model_validate(resp.json())
        if self._snapshot is None and ans.snapshot:
            self._snapshot = ans.snapshot
        return ans

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]:
        if len(questions) == 1:
            return [self._one(questions[0], arm, snapshot)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda q: self._one(q, arm, snapshot), questions))

    def ranked_docs(
        self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, depth: int
    ) -> list[list[str]] | None:
        return None

    def context_texts(self, answer: Answer) -> list[str] | None:
        return None

    def close(self) -> None:
        self.client.close()
