"""Generation off the event loop: a bounded queue and one worker that batches requests per adapter.

Requests that arrive together and share an adapter go into one `generate_rows` call (left padded),
so throughput grows with concurrency instead of requests queueing behind each other. Each row can
stop on its own: a client that disconnects or passes its deadline stops its row, not the batch, and
each row has its own stop strings. Sampling is one per call, so only requests that pick tokens the
same way share a batch (`batch_key`): greedy ones together, sampled ones with equal temperature and
top_p together, and a request with its own seed alone, so that seed alone decides its tokens.

The worker is also the only thread that runs torch for requests: their preparation (adapter,
retrieval, prompt) and the adapter endpoints' loads and unloads reach it through `run`. A second
thread running torch ops gets a second libgomp thread team; with more OpenMP threads than cores,
libgomp shortens its spin-waits, and every later forward pass paid for it (on 2 cores: time to
first token +70%, +10% per decoded token, measured in docs/serving.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ragtune.core.generator import Generation, RowRequest, TextPieces
from ragtune.core.options import Sampling
from ragtune.core.prompt import Messages
from ragtune.core.text_generator import TextGenerator
from ragtune.core.threads import release_openmp_team
from ragtune.serving.errors import busy, deadline_exceeded, shutting_down

T = TypeVar("T")
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
    messages: Messages | None = None  # what a chat backend (`models.generator_backend: openai`) sends
    sampling: Sampling | None = None  # None: the `generation` config's
    chunks: tuple[str, ...] = ()  # retrieved pieces whose KV caches are reused (`generation.kv_reuse`)

    def cancel(self) -> None:
        self.cancelled.set()

    def stop_now(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline


def batch_key(job: Job, default_sample: bool) -> Hashable:
    """Jobs with equal keys may share one generate call: same adapter, and tokens picked the same way."""
    s = job.sampling or Sampling()
    if not s.samples(default_sample):
        return (job.adapter, "greedy")
    if s.seed is not None:
        return (job.adapter, "seeded", id(job))  # a batch of one: its seed alone decides its tokens
    return (job.adapter, "sampled", s.temperature, s.top_p)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    tokens: int = 0
    last_tokens_per_s: float = 0.0


class Scheduler:
    def __init__(
        self,
        generator: TextGenerator,
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
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker; the calling thread, which loaded the models, gives up its OpenMP team."""
        if self._thread is None or not self._thread.is_alive():
            release_openmp_team()
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
        for _, future in self._drain_calls():
            if future.set_running_or_notify_cancel():
                future.set_exception(shutting_down())

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def depth(self) -> int:
        """Requests waiting for the model thread: to be prepared, or queued for generation."""
        return len(self._queue) + len(self._calls)

    def submit(self, job: Job) -> Job:
        """Queue a job or refuse it at once (503) when the queue is full."""
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise busy()
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the worker thread between batches; refused (503) when the queue is full."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopping or not self.alive:
                raise shutting_down()
            if self.depth >= self.max_queue:
                raise busy()
            self._calls.append((fn, future))
            self._cond.notify_all()
        return future

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`await` form of `call`; a cancelled caller's work is skipped if it has not started."""
        return await asyncio.wrap_future(self.call(functools.partial(fn, *args, **kwargs)))

    # worker -------------------------------------------------------------------------------------
    def _drain_calls(self) -> list[tuple[Callable[[], Any], Future[Any]]]:
        with self._cond:
            calls, self._calls = list(self._calls), deque()
        return calls

    def _run_calls(self) -> None:
        for fn, future in self._drain_calls():
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who turns it into a 4xx/5xx
                future.set_exception(exc)

    def _take_batch(self) -> list[Job]:
        while True:
            self._run_calls()
            with self._cond:
                if self._stopping:
                    return []
                if self._queue:
                    break
                idle = not self._calls
            if idle:
                # give the OpenMP team back while idle, so another thread running torch meanwhile
                # (an index write, a second app in one process) never makes two teams
                release_openmp_team()
                with self._cond:
                    while not self._queue and not self._calls and not self._stopping:
                        self._cond.wait()
        with self._cond:
            batch = [self._queue.popleft()]
        default = self.generator.config.do_sample
        key = batch_key(batch[0], default)
        now = time.monotonic()
        last_arrival, give_up = now, now + 4 * self.batch_wait
        while len(batch) < self.max_batch:
            with self._cond:
                same = [j for j in self._queue if batch_key(j, default) == key][: self.max_batch - len(batch)]
                for j in same:
                    self._queue.remove(j)
                batch.extend(same)
                now = time.monotonic()
                if same:
                    last_arrival = now
                wait = min(last_arrival + self.batch_wait, give_up) - now
                if len(batch) >= self.max_batch or wait <= 0 or self._stopping:
                    break
                if not self._calls:
                    self._cond.wait(wait)
            self._run_calls()  # requests still being prepared may join this batch
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

    def _on_token(self, job: Job, text: TextPieces) -> Callable[[int], None]:
        on_text = self._on_text(job)

        def hook(token: int) -> None:
            if job.first_token_at is None:
                job.first_token_at = time.perf_counter()
            if not job.stream:
                return
            on_text(text.add(token))

        return hook

    @staticmethod
    def _on_text(job: Job) -> Callable[[str], None]:
        """Text pieces (a chat backend's, or decoded from `_on_token`'s ids) to the job's stream."""

        def hook(piece: str) -> None:
            if job.first_token_at is None:
                job.first_token_at = time.perf_counter()
            if job.stream and piece:
                job.emit(("piece", piece))

        return hook

    def _run(self, jobs: list[Job]) -> None:
        stops = [j.sampling.stop if j.sampling is not None else () for j in jobs]
        texts = [TextPieces(self.generator.tokenizer, stop) for stop in stops]
        rows = [
            RowRequest(
                prompt=j.prompt,
                max_new_tokens=j.max_new_tokens,
                ignore_eos=j.ignore_eos,
                on_token=self._on_token(j, text),
                cancelled=j.stop_now,
                messages=j.messages,
                on_text=self._on_text(j),
                stop=stop,
                chunks=j.chunks,
            )
            for j, text, stop in zip(jobs, texts, stops, strict=True)
        ]
        t0 = time.perf_counter()
        try:
            gens = self.generator.generate_rows(rows, adapter=jobs[0].adapter, sampling=jobs[0].sampling)
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
        for j, g, row, text in zip(jobs, gens, rows, texts, strict=True):
            self._finish(j, g, row, text)

    @staticmethod
    def _finish(job: Job, gen: Generation, row: RowRequest, text: TextPieces) -> None:
        """The stream's held-back tail (a half character, what looked like a stop string), then done."""
        if job.cancelled.is_set():
            return
        if row.stopped_early:
            job.emit(("error", deadline_exceeded(job.timeout_s)))
            return
        rest = text.rest()
        if job.stream and rest:
            job.emit(("piece", rest))
        job.emit(("done", gen))


def async_emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Event]) -> Callable[[Event], None]:
    """An `emit` that hands events from the worker thread to a coroutine waiting on `queue`."""

    def emit(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, event)

    return emit
