"""The FastAPI application: routers per capability, one error envelope, the batching scheduler.

Every refusal is a JSON `{error: {code, message}}` with a 4xx (or 503/504 under load), in the OpenAI
shape `{error: {message, type, code, param}}` on the OpenAI-compatible routes; no input produces a
500 or a traceback in the response.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune import __version__
from ragtune.core.errors import NotFoundError, RagtuneError, UpstreamError
from ragtune.serving.contracts import AnswerPipeline
from ragtune.serving.errors import ApiError, error_response, is_openai_path
from ragtune.serving.limits import BodyLimit
from ragtune.serving.metrics import Metrics, MetricsMiddleware
from ragtune.serving.routers import adapters, answer, chat, documents, health, ui
from ragtune.serving.scheduler import Scheduler
from ragtune.serving.security import KeyRing, LoopbackHosts

log = logging.getLogger("ragtune.serving")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def create_app(pipeline: AnswerPipeline) -> FastAPI:
    """Build the app around a loaded pipeline; the scheduler thread starts here, stops at shutdown."""
    cfg = pipeline.config.serving
    metrics = Metrics()
    scheduler = Scheduler(pipeline.generator, cfg.max_queue, cfg.max_batch, cfg.batch_wait_ms, metrics.on_batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(
        title="ragtune",
        version=__version__,
        description="Domain chatbot API: fine-tuned generation with retrieval, OpenAI-compatible chat.",
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.state.keys = KeyRing(cfg)
    scheduler.start()  # also without lifespan events (plain TestClient)
    for module in (answer, chat, documents, adapters, health, ui):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if app.state.keys.open:  # no keys: loopback clients, and only requests that name a loopback host
        app.add_middleware(LoopbackHosts)

    def reply(
        request: Request,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> JSONResponse:
        metrics.errors.labels(code).inc()
        openai = is_openai_path(request.url.path)
        return error_response(status, code, message, headers, param, openai)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return reply(request, exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return reply(request, 404, "not_found", str(exc))

    @app.exception_handler(UpstreamError)
    async def _upstream(request: Request, exc: UpstreamError) -> JSONResponse:
        code = "generator_unavailable" if exc.status == 503 else "generator_error"
        return reply(request, exc.status, code, str(exc), {"Retry-After": "5"} if exc.status == 503 else None)

    @app.exception_handler(RagtuneError)
    async def _bad_request(request: Request, exc: RagtuneError) -> JSONResponse:
        return reply(request, 400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": [], "msg": "invalid request"}
        # the field's path, without "body" and pydantic's union member tags ("constrained-str")
        loc = first.get("loc", [])
        where = ".".join(str(p) for p in loc if p != "body" and (isinstance(p, int) or str(p).isidentifier()))
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return reply(request, 422, "invalid_request", message, param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "payload_too_large" if exc.status_code == 413 else HTTP_CODES.get(exc.status_code, "http_error")
        return reply(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return reply(request, 500, "internal", "internal error; the server log has the details")

    return app
