"""Prometheus metrics, one registry per app so several apps (tests, workers) never collide."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragtune_requests", "HTTP requests", ["route", "status"], registry=r)
        self.errors = Counter("ragtune_errors", "4xx/5xx replies by error code", ["code"], registry=r)
        self.latency = Histogram(
            "ragtune_answer_seconds", "answer latency by mode", ["mode"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("ragtune_queue_depth", "generations waiting for the model", registry=r)
        self.tokens = Counter("ragtune_generated_tokens", "tokens generated", registry=r)
        self.tokens_per_s = Gauge("ragtune_tokens_per_second", "tokens/s of the last batch", registry=r)
        self.batch_size = Histogram(
            "ragtune_batch_size", "requests per generate call", buckets=(1, 2, 4, 8, 16, 32), registry=r
        )

    def on_batch(self, rows: int, tokens: int, seconds: float) -> None:
        self.tokens.inc(tokens)
        self.batch_size.observe(rows)
        if seconds > 0:
            self.tokens_per_s.set(tokens / seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every request by route template and status (pure ASGI: streaming stays streaming)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status["code"])).inc()
