"""Where an arm's answers come from: the in-process pipeline, or a running server over HTTP.

Both return the serving `Answer` record, so the runner scores them the same way, and both pass
the run's pinned snapshot on to every retrieving arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol

import httpx

from ragtune.core.errors import RagtuneError
from ragtune.core.types import Answer
from ragtune.eval.harness.arms import ArmSpec
from ragtune.serving.contracts import AnswerPipeline

Api = Literal["ragtune", "openai"]  # what a load run streams from: /v1/answer or /v1/chat/completions


class Backend(Protocol):
    name: str

    def current_snapshot(self) -> str | None: ...

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]: ...

    def ranked_docs(
        self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, depth: int
    ) -> list[list[str]] | None: ...

    def context_texts(self, answer: Answer) -> list[str] | None: ...


class InProcessBackend:
    """The same `Pipeline` `ragtune serve` uses, called directly (batched)."""

    name = "in-process"

    def __init__(self, pipeline: AnswerPipeline) -> None:
        self.pipeline = pipeline

    def pipeline_for(self, arm: ArmSpec) -> AnswerPipeline:
        """The pipeline an arm answers through: the shared one, or the same over the arm's own
        generator (same index and prompts, so such arms differ in the generator only)."""
        if arm.generator is None:
            return self.pipeline
        return self.pipeline.with_models(arm.generator.models(self.pipeline.config.models))

    def current_snapshot(self) -> str | None:
        return self.pipeline.index.snapshot if self.pipeline.index is not None else None

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]:
        options = arm.options().model_copy(update={"snapshot": snapshot if arm.retrieves else None})
        return self.pipeline_for(arm).answer_many(list(questions), options)

    def ranked_docs(
        self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, depth: int
    ) -> list[list[str]] | None:
        """Distinct document ids in rank order, from a deeper search than the prompt uses."""
        index = self.pipeline.index
        if not arm.retrieves or index is None:
            return None
        with self.pipeline.index_lock:
            rows = index.search_many(
                list(questions), depth * 4, mode=arm.search_mode, filters=arm.filters or None, snapshot=snapshot
            )
        return [list(dict.fromkeys(h.chunk.doc_id for h in row))[:depth] for row in rows]

    def context_texts(self, answer: Answer) -> list[str] | None:
        index = self.pipeline.index
        if not answer.citations or index is None:
            return None
        chunks = index.store.chunks([c.chunk_id for c in answer.citations])
        return [c.text for c in chunks.values()]


SERVER_SIDE = (
    "system_prompt",
    "search_mode",
    "compress",
    "max_context_tokens",
    "prefill_dtype",
    "kv_reuse",
    "sampling",
    "generator",
)


def server_side(arm: ArmSpec) -> bool:
    """The arm sets something only the server's config decides, so no API request can ask for it."""
    return any(getattr(arm, key) is not None for key in SERVER_SIDE)


def api_body(question: str, arm: ArmSpec, snapshot: str | None) -> dict[str, Any]:
    """The `POST /v1/answer` body asking `question` as `arm`; refuses arm settings the API cannot carry."""
    if server_side(arm):
        raise RagtuneError(
            f"arm '{arm.name}': {', '.join(SERVER_SIDE)} are server settings and cannot be set through the API"
        )
    body: dict[str, Any] = {"question": question, "mode": arm.mode}
    for key in ("adapter", "top_k", "filters", "max_new_tokens"):
        if getattr(arm, key) is not None:
            body[key] = getattr(arm, key)
    if snapshot is not None and arm.retrieves:
        body["snapshot"] = snapshot
    return body


class HttpBackend:
    """A running `ragtune serve`, through `POST /v1/answer` only (black box).

    Retrieval metrics come from the citations (so depth is the arm's top_k); grounding needs the
    passages' text, which the API does not return, so it is left empty here.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        concurrency: int = 4,
        timeout: float = 300.0,
        load_api: Api = "ragtune",
        load_model: str | None = None,
    ) -> None:
        self.url, self.token = url.rstrip("/"), token
        self.load_api, self.load_model = load_api, load_model  # how `--load` streams from this server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.concurrency = concurrency
        self._snapshot: str | None = None

    def current_snapshot(self) -> str | None:
        return self._snapshot

    def _one(self, question: str, arm: ArmSpec, snapshot: str | None) -> Answer:
        body = api_body(question, arm, snapshot)
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
