"""Latency under load: closed-loop concurrency levels per arm, through a server.

At level c, c workers each send the next question as soon as their previous answer has streamed in, until
the level's request count is spent: the offered load follows the server's speed (closed loop), so the
figures show what c concurrent users see. Requests always go over HTTP to a server (a running one with
`--endpoint`, else the eval's own pipeline served on a loopback port), so concurrent requests meet the
serving scheduler's per-adapter batching exactly as in production, not a Python loop calling the model.

Per (arm, level): completed requests/s and output tokens/s over the level's wall time, and TTFT, TPOT and
end-to-end percentiles with the single-request rules of eval/harness/latency.py (p95 needs n >= 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel

from ragtune.core.errors import ConfigError, RagtuneError
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.backends import Api, api_body, server_side
from ragtune.eval.harness.latency import percentile, timed_arms
from ragtune.eval.harness.markdown import md_table
from ragtune.serving.contracts import AnswerPipeline

QUANTILES = (50, 95, 99)


@dataclass
class Shot:
    """What the client saw of one streamed request."""

    ttft_ms: float
    e2e_ms: float
    output_tokens: int


class LoadTarget(Protocol):
    """Sends one question as an arm and times it; safe to call from many coroutines at once."""

    async def send(self, question: str, arm: ArmSpec, snapshot: str | None) -> Shot: ...

    async def aclose(self) -> None: ...


class LoadSample(BaseModel):
    """One request of a load level; a failed one keeps its error and no timings."""

    arm: str
    level: int
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    output_tokens: int = 0
    error: str | None = None


class LoadLevel(BaseModel):
    """Throughput and latency percentiles of one arm at one concurrency level (None: too few samples)."""

    arm: str
    level: int
    n: int
    errors: int
    seconds: float
    requests_per_s: float
    tokens_per_s: float
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p50_ms: float | None = None
    tpot_p95_ms: float | None = None
    tpot_p99_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    e2e_p99_ms: float | None = None


def requests_for(level: int, base: int) -> int:
    """At least `base` requests and four rounds of the level, rounded up to whole rounds, so no worker
    idles through a partial last round that would lower the level's throughput."""
    n = max(base, 4 * level)
    return -(-n // level) * level


def sample_of_shot(shot: Shot, arm: str, level: int) -> LoadSample:
    decode = max(shot.e2e_ms - shot.ttft_ms, 0.0)
    tpot = decode / (shot.output_tokens - 1) if shot.output_tokens > 1 else 0.0
    return LoadSample(
        arm=arm, level=level, ttft_ms=shot.ttft_ms, tpot_ms=tpot, e2e_ms=shot.e2e_ms, output_tokens=shot.output_tokens
    )


async def closed_loop(
    target: LoadTarget,
    questions: Sequence[str],
    arm: ArmSpec,
    level: int,
    requests: int,
    snapshot: str | None = None,
) -> tuple[list[LoadSample], float]:
    """`level` workers share `requests` sends (question i cycles through `questions`); returns the
    samples in completion order and the wall seconds from the first send to the last reply."""
    next_i = 0
    out: list[LoadSample] = []

    async def worker() -> None:
        nonlocal next_i
        while next_i < requests:
            i, next_i = next_i, next_i + 1  # no await in between: one coroutine at a time takes an index
            try:
                shot = await target.send(questions[i % len(questions)], arm, snapshot)
            except (RagtuneError, httpx.HTTPError, ValueError, KeyError) as exc:
                out.append(LoadSample(arm=arm.name, level=level, error=str(exc)[:200]))
                continue
            out.append(sample_of_shot(shot, arm.name, level))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level)))
    return out, time.perf_counter() - t0


def summarize_level(samples: Sequence[LoadSample], arm: str, level: int, seconds: float) -> LoadLevel:
    ok = [s for s in samples if s.error is None]
    fig: dict[str, Any] = {}
    for name in ("ttft", "tpot", "e2e"):
        vals = [float(getattr(s, f"{name}_ms")) for s in ok]
        for q in QUANTILES:
            fig[f"{name}_p{q}_ms"] = percentile(vals, q)
    span = max(seconds, 1e-9)
    return LoadLevel(
        arm=arm,
        level=level,
        n=len(ok),
        errors=len(samples) - len(ok),
        seconds=seconds,
        requests_per_s=len(ok) / span,
        tokens_per_s=sum(s.output_tokens for s in ok) / span,
        **fig,
    )


async def _run_all(
    target: LoadTarget,
    questions: Sequence[str],
    arms: Sequence[ArmSpec],
    levels: Sequence[int],
    base: int,
    snapshot: str | None,
) -> tuple[list[LoadLevel], list[LoadSample]]:
    table: list[LoadLevel] = []
    samples: list[LoadSample] = []
    try:
        for arm in arms:
            await target.send(questions[0], arm, snapshot)  # warm-up: adapter load and caches not counted
            for level in levels:
                got, seconds = await closed_loop(target, questions, arm, level, requests_for(level, base), snapshot)
                table.append(summarize_level(got, arm.name, level, seconds))
                samples.extend(got)
    finally:
        await target.aclose()
    return table, samples


def loadable(arms: Sequence[ArmSpec]) -> tuple[list[ArmSpec], list[str]]:
    """The timed arms a request to a server can ask for, and the names of those it cannot (an arm with
    its own system prompt, search mode, sampling or generator is a different server configuration)."""
    timed = timed_arms(arms)
    return [a for a in timed if not server_side(a)], [a.name for a in timed if server_side(a)]


def run_load(
    target: LoadTarget,
    questions: Sequence[str],
    arms: Sequence[ArmSpec],
    levels: Sequence[int],
    requests: int = 20,
    snapshot: str | None = None,
) -> tuple[list[LoadLevel], list[LoadSample]]:
    """Every loadable arm at every level in turn (arms one after another, never mixed within a level)."""
    chosen, _ = loadable(arms)
    if not questions or not chosen or not levels:
        return [], []
    return asyncio.run(_run_all(target, questions, chosen, sorted(set(levels)), requests, snapshot))


def parse_levels(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]: positive integers, ascending, without repeats."""
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--load takes comma-separated concurrency levels such as 1,4,8, not {text!r}") from None
    if not levels or levels[0] < 1:
        raise ConfigError(f"--load levels must be positive integers, not {text!r}")
    return levels


# --- HTTP: a ragtune server (/v1/answer) or any OpenAI-compatible one (/v1/chat/completions) -----


def openai_model(arm: ArmSpec) -> str:
    """ragtune's OpenAI model id for an arm: `ragtune-<mode>[:<adapter>]`."""
    return f"ragtune-{arm.mode}" + (f":{arm.adapter}" if arm.adapter else "")


class HttpLoadTarget:
    """Streaming requests to a server, timed at the client: TTFT at the first non-empty text piece."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        api: Api = "ragtune",
        model: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api, self.model, self.timeout = api, model, timeout
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """Made on first use, inside the running event loop; no pool limit below the highest level."""
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            self._client = httpx.AsyncClient(
                base_url=self.url, headers=self.headers, timeout=self.timeout, limits=limits
            )
        return self._client

    def request(self, question: str, arm: ArmSpec, snapshot: str | None) -> tuple[str, dict[str, Any]]:
        if self.api == "ragtune":
            return "/v1/answer", {**api_body(question, arm, snapshot), "stream": True}
        body: dict[str, Any] = {
            "model": self.model or openai_model(arm),
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if arm.max_new_tokens is not None:
            body["max_tokens"] = arm.max_new_tokens
        return "/v1/chat/completions", body

    async def send(self, question: str, arm: ArmSpec, snapshot: str | None) -> Shot:
        path, body = self.request(question, arm, snapshot)
        t0 = time.perf_counter()
        first: float | None = None
        pieces, tokens = 0, None
        async with self.client().stream("POST", path, json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                raise RagtuneError(f"{self.url}{path} answered {resp.status_code}: {resp.text[:200]}")
            event = ""
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    continue
                text, usage = self.read_event(event, line[5:].strip())
                if text and first is None:
                    first = time.perf_counter()
                pieces += bool(text)
                tokens = usage if usage is not None else tokens
        end = time.perf_counter()
        first = first if first is not None else end
        return Shot((first - t0) * 1000, (end - t0) * 1000, tokens if tokens is not None else pieces)

    def read_event(self, event: str, data: str) -> tuple[str, int | None]:
        """(text piece, output tokens if this event states them) of one server-sent event."""
        if event == "error":
            raise RagtuneError(f"{self.url}: error mid-stream: {data[:200]}")
        if data == "[DONE]" or not data:
            return "", None
        doc = json.loads(data)
        if self.api == "ragtune":
            if event == "done":
                return "", int(doc["usage"]["completion_tokens"])
            return str(doc.get("text") or ""), None
        if "error" in doc:
            raise RagtuneError(f"{self.url}: error mid-stream: {data[:200]}")
        usage = doc.get("usage")
        choices = doc.get("choices") or [{}]
        text = str((choices[0].get("delta") or {}).get("content") or "")
        return text, int(usage["completion_tokens"]) if usage else None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@contextlib.contextmanager
def serve_locally(pipeline: AnswerPipeline) -> Iterator[str]:
    """The `ragtune serve` app over this pipeline on a free loopback port (uvicorn in a thread), with its
    queue and batch limits but no access policy; yields its base URL and stops it (and its scheduler
    thread) on exit."""
    import uvicorn

    from ragtune.serving.app import create_app
    from ragtune.serving.security import KeyRing

    app = create_app(pipeline)
    # loopback only and without keys or rate limits: the run measures serving, not the access policy
    open_access: dict[str, Any] = {"api_keys": [], "rate_limit_per_minute": None}
    app.state.keys = KeyRing(pipeline.config.serving.model_copy(update=open_access))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ragtune-load-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        raise RagtuneError("the local server for the load run did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


# --- report -----------------------------------------------------------------------------------------

LOAD_COLUMNS = [
    ("ttft_p50_ms", "TTFT p50"),
    ("ttft_p95_ms", "p95"),
    ("tpot_p50_ms", "TPOT p50"),
    ("tpot_p95_ms", "p95"),
    ("e2e_p50_ms", "e2e p50"),
    ("e2e_p95_ms", "p95"),
]
LOAD_HEADER = ["arm", "level", "n", "errors", "requests/s", "output tokens/s", *(c[1] for c in LOAD_COLUMNS)]


def load_doc(table: Sequence[LoadLevel], requests: int, target: str, skipped: Sequence[str] = ()) -> dict[str, Any]:
    """report.json's `load`: one row per (arm, level), with how the levels were driven and which arms
    could not be (see `loadable`)."""
    rows = [row.model_dump() for row in table]
    return {"requests": requests, "target": target, "levels": rows, "skipped": list(skipped)}


def load_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Table cells per (arm, level); a percentile its sample is too small for reads n/a (n=…)."""
    rows = []
    for r in doc.get("levels", []):
        ms = [f"{r[k]:.0f}" if r.get(k) is not None else f"n/a (n={r['n']})" for k, _ in LOAD_COLUMNS]
        counts = [r["arm"], str(r["level"]), str(r["n"]), str(r["errors"])]
        rows.append([*counts, f"{r['requests_per_s']:.2f}", f"{r['tokens_per_s']:.1f}", *ms])
    return rows


def load_markdown(doc: dict[str, Any], plot: str | None = None) -> str:
    intro = (
        f"Closed loop through {doc.get('target', 'the server')}: at level c, c clients each send the next "
        f"question when their answer has streamed in; at least {doc.get('requests')} requests per level "
        "(whole rounds of c). Throughput over the level's wall time; latency in ms as the client saw it."
    )
    tail = [f"Latency p50 against throughput per arm: {plot}"] if plot else []
    if doc.get("skipped"):
        tail.append(f"Not run under load (server-side settings no request can carry): {', '.join(doc['skipped'])}")
    table = md_table(LOAD_HEADER, load_rows(doc), "l" + "r" * (len(LOAD_HEADER) - 1))
    return "\n".join([intro, "", table, "", *tail]).rstrip()
