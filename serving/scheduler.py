"""Generation off the event loop: a bounded queue and one worker that batches requests per adapter.

Requests that arrive together and share an adapter go into one `generate_rows` call (left padded),
so throughput grows with concurrency instead of requests queueing behind each other. Each row can
stop on its own: a client that disconnects or passes its deadline stops its row, not the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ragtune.core.generator import Generator, RowRequest
from ragtune.serving.errors import busy, deadline_exceeded

Event = tuple[str, Any]  # ("piece", str) | ("done", Generation) | ("error", BaseException)


@dataclass
class Job:
    prompt: str
    adapter: str | None
    max_new_tokens: int
    deadline: float  # time.monotonic() value
    timeout_s: float
    ignore_eos: bool = False
    stream: bool = False
    emit: Callable[[Event], None] = lambda event: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    tokens: list[int] = field(default_factory=list)
    sent: str = ""

    def cancel(self) -> None:
        self.cancelled.set()

    def stop_now(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    tokens: int = 0
    last_tokens_per_s: float = 0.0


class Scheduler:
    def __init__(
        self,
        generator: Generator,
        max_queue: int = 64,
        max_batch: int = 8,
        batch_wait_ms: float = 15.0,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.generator = generator
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="ragtune-scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> Job:
        """Queue a job or refuse it at once (503) when the queue is full."""
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise busy()
            self._queue.append(job)
            self._cond.notify_all()
        return job

    # worker -------------------------------------------------------------------------------------
    def _take_batch(self) -> list[Job]:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            batch = [self._queue.popleft()]
            adapter = batch[0].adapter
            now = time.monotonic()
            last_arrival, give_up = now, now + 4 * self.batch_wait
            while len(batch) < self.max_batch:
                same = [j for j in self._queue if j.adapter == adapter][: self.max_batch - len(batch)]
                for j in same:
                    self._queue.remove(j)
                batch.extend(same)
                now = time.monotonic()
                if same:
                    last_arrival = now
                wait = min(last_arrival + self.batch_wait, give_up) - now
                if len(batch) >= self.max_batch or wait <= 0 or self._stopping:
                    break
                self._cond.wait(wait)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            live = []
            for job in batch:
                if job.cancelled.is_set():
                    continue
                if time.monotonic() > job.deadline:
                    job.emit(("error", deadline_exceeded(job.timeout_s)))
                    continue
                live.append(job)
            if live:
                self._run(live)

    def _on_token(self, job: Job) -> Callable[[int], None]:
        tok = self.generator.tokenizer

        def hook(token: int) -> None:
            if job.first_token_at is None:
                job.first_token_at = time.perf_counter()
            job.tokens.append(token)
            if not job.stream:
                return
            text = tok.decode(job.tokens, skip_special_tokens=True).lstrip()
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return
            piece, job.sent = text[len(job.sent) :], text
            if piece:
                job.emit(("piece", piece))

        return hook

    def _run(self, jobs: list[Job]) -> None:
        rows = [
            RowRequest(
                prompt=j.prompt,
                max_new_tokens=j.max_new_tokens,
                ignore_eos=j.ignore_eos,
                on_token=self._on_token(j),
                cancelled=j.stop_now,
            )
            for j in jobs
        ]
        t0 = time.perf_counter()
        try:
            gens = self.generator.generate_rows(rows, adapter=jobs[0].adapter)
        except BaseException as exc:  # e.g. the adapter was unloaded while the job waited
            for j in jobs:
                j.emit(("error", exc))
            return
        seconds = time.perf_counter() - t0
        n_tokens = sum(g.completion_tokens for g in gens)
        self.stats.batches += 1
        self.stats.rows += len(jobs)
        self.stats.tokens += n_tokens
        self.stats.last_tokens_per_s = n_tokens / seconds if seconds > 0 else 0.0
        if self.on_batch is not None:
            self.on_batch(len(jobs), n_tokens, seconds)
        for j, g, row in zip(jobs, gens, rows, strict=True):
            if j.cancelled.is_set():
                continue
            if row.stopped_early:
                j.emit(("error", deadline_exceeded(j.timeout_s)))
            else:
                j.emit(("done", g))


def async_emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> Callable[[Event], None]:
    """An `emit` that hands events from the worker thread to a coroutine waiting on `queue`."""

    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, event)

    return emit
