"""The FastAPI application. Every user mistake becomes a 4xx JSON `{error: {code, message}}`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ragtune import __version__
from ragtune.core.errors import NotFoundError, RagtuneError
from ragtune.serving.pipeline import Pipeline
from ragtune.serving.routers import answer, health


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def create_app(pipeline: Pipeline) -> FastAPI:
    app = FastAPI(title="ragtune", version=__version__, description="Fine-tuned generation with retrieval.")
    app.state.pipeline = pipeline
    app.include_router(answer.router)
    app.include_router(health.router)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(RagtuneError)
    async def _bad_request(_: Request, exc: RagtuneError) -> JSONResponse:
        return _error(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        return _error(422, "invalid_request", f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    return app
