"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ragtune.serving.errors import error_response

router = APIRouter(tags=["health"])


def public_name(ref: str) -> str:
    """A model reference as an unauthenticated caller may see it: a local folder by its last part
    only (the probe must not reveal the server's filesystem); `bundled:` names and hub ids as they are."""
    if ref.startswith("bundled:"):
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute() or ref.startswith((".", "~")) or path.exists():
        return path.name
    return ref


@router.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    """Alive, with what is loaded (answers even while the model is busy): names, never paths."""
    pipeline = request.app.state.pipeline
    index = pipeline.index.stats() if pipeline.index is not None else None
    if index is not None:
        index = {**index, "embedder": public_name(str(index.get("embedder", "")))}
    adapters = sorted(public_name(str(name)) for name in pipeline.generator.adapters)
    return {"status": "ok", "pid": os.getpid(), "index": index, "adapters": adapters}


@router.get("/readyz", responses={503: {"description": "not ready"}})
def readyz(request: Request) -> JSONResponse:
    """Ready when the model is loaded, the scheduler runs and the index is open."""
    pipeline = request.app.state.pipeline
    checks = {
        "model": pipeline.generator.ready,
        "scheduler": request.app.state.scheduler.alive,
        "index": pipeline.index is not None,
    }
    if not all(checks.values()):
        missing = ", ".join(k for k, ok in checks.items() if not ok)
        return error_response(503, "not_ready", f"not ready: {missing}")
    return JSONResponse({"status": "ready", "checks": checks, "snapshot": pipeline.index.snapshot})


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latency by mode, queue depth, tokens/s, errors."""
    m = request.app.state.metrics
    m.queue_depth.set(request.app.state.scheduler.depth)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
