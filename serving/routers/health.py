from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> dict[str, Any]:
    """Alive, with what is loaded."""
    pipeline = request.app.state.pipeline
    index = pipeline.index.stats() if pipeline.index is not None else None
    return {"status": "ok", "index": index, "adapters": sorted(pipeline.generator.adapters)}
