"""The path every HTTP answer takes: prepare -> bounded queue -> batched generate, all on the
scheduler's worker thread (the one thread that runs torch).

Shared by `/v1/answer` and `/v1/chat/completions`, so both get the same limits, deadline,
disconnect handling, metrics and Answer record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from ragtune.core.generator import Generation
from ragtune.core.options import AnswerOptions
from ragtune.core.prompt import Messages
from ragtune.core.types import Answer
from ragtune.serving.contracts import AnswerPipeline, Prepared
from ragtune.serving.errors import ApiError, ClientGone, deadline_exceeded
from ragtune.serving.metrics import Metrics
from ragtune.serving.scheduler import Event, Job, Scheduler, async_emitter

DISCONNECT_POLL_S = 0.25


@dataclass
class Running:
    prep: Prepared
    job: Job
    events: asyncio.Queue[Event]
    t0: float
    pipeline: AnswerPipeline
    metrics: Metrics

    def answer(self, gen: Generation) -> Answer:
        now = time.perf_counter()
        first = self.job.first_token_at or now
        total = now - self.t0
        self.metrics.latency.labels(self.prep.mode).observe(total)
        return self.pipeline.finish(self.prep, gen, total * 1000, ttft_ms=(first - self.t0) * 1000)


async def start(
    request: Request,
    question: str,
    options: AnswerOptions,
    ignore_eos: bool = False,
    stream: bool = False,
    messages: Messages | None = None,
    history: Messages | None = None,
) -> Running:
    """Check, retrieve and queue one question; 4xx/503 errors surface here, before any streaming.

    `history` holds a conversation's earlier turns (the question is its last). With `messages`
    (`serving.engine_api`), those are completed as given instead of `question`. The options'
    sampling (and stop strings) travel with the job to the generator."""
    t0 = time.perf_counter()
    pipeline: AnswerPipeline = request.app.state.pipeline
    scheduler: Scheduler = request.app.state.scheduler
    cfg = pipeline.config
    cap = cfg.serving.max_new_tokens_cap
    max_new_tokens = options.max_new_tokens
    if max_new_tokens is not None and max_new_tokens > cap:
        raise ApiError(422, "limit_exceeded", f"max_new_tokens: at most {cap} (serving.max_new_tokens_cap)")
    # on the model thread: retrieval embeds the question with torch; a filter is evaluated before, in
    # the thread pool, so a costly one holds up only its own request
    if messages is not None:
        prep = await scheduler.run(pipeline.prepare_chat, messages, options)
    else:
        matched = await run_in_threadpool(pipeline.match_filters, options)
        prep = await scheduler.run(pipeline.prepare, question, options, history=history, matched=matched)
    events: asyncio.Queue[Event] = asyncio.Queue()
    timeout = cfg.serving.request_timeout_s
    job = Job(
        prompt=prep.prompt,
        adapter=prep.adapter,
        max_new_tokens=min(max_new_tokens or cfg.generation.max_new_tokens, cap),
        deadline=time.monotonic() + timeout - (time.perf_counter() - t0),
        timeout_s=timeout,
        ignore_eos=ignore_eos,
        stream=stream,
        emit=async_emitter(asyncio.get_running_loop(), events),
        messages=prep.messages,
        sampling=options.sampling,
        chunks=prep.chunks,
    )
    scheduler.submit(job)
    return Running(prep, job, events, t0, pipeline, request.app.state.metrics)


async def result(running: Running, request: Request) -> Answer:
    """Wait for the whole answer; a client that disconnects cancels its generation."""
    try:
        while True:
            try:
                kind, payload = await asyncio.wait_for(running.events.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if time.monotonic() > running.job.deadline + 5:  # the worker is stuck behind a long batch
                    running.job.cancel()
                    raise deadline_exceeded(running.job.timeout_s) from None
                if await request.is_disconnected():
                    running.job.cancel()
                    raise ClientGone() from None
                continue
            if kind == "done":
                return running.answer(payload)
            if kind == "error":
                raise payload
    except asyncio.CancelledError:
        running.job.cancel()
        raise


async def pieces(running: Running) -> AsyncIterator[str | Answer]:
    """Text pieces as they are decoded, then the Answer; closing the iterator cancels the job."""
    try:
        while True:
            kind, payload = await running.events.get()
            if kind == "piece":
                yield payload
            elif kind == "done":
                yield running.answer(payload)
                return
            else:
                raise payload
    finally:
        running.job.cancel()  # no-op when finished; stops the row when the client went away
