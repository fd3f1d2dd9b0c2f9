"""Adapters on one base model: list, load and unload without a restart."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from ragtune.core.adapters import is_adapter_name, list_adapters, unknown_adapter
from ragtune.core.errors import NotFoundError
from ragtune.serving.contracts import AnswerPipeline
from ragtune.serving.schemas import ERRORS, AdapterInfo
from ragtune.serving.security import admin_access, read_access

router = APIRouter(tags=["adapters"])
Name = Path(min_length=1, max_length=200, description="a registered adapter's name; any other value is a 404")


def _list(pipeline: AnswerPipeline) -> list[AdapterInfo]:
    loaded = set(pipeline.generator.adapters)
    out = {
        c.name: AdapterInfo(
            name=c.name, loaded=c.name in loaded, base_model=c.base_model, created_at=c.created_at, metrics=c.metrics
        )
        for c in list_adapters(pipeline.config.adapters_dir)
    }
    for name in loaded - set(out):
        out[name] = AdapterInfo(name=name, loaded=True)
    return [out[k] for k in sorted(out)]


@router.get("/v1/adapters", response_model=list[AdapterInfo], responses=ERRORS)
async def adapters(request: Request, _: str = read_access) -> list[AdapterInfo]:
    """Adapters in the workspace (with their card) and whether each is loaded."""
    return await run_in_threadpool(_list, request.app.state.pipeline)


@router.post("/v1/adapters/{name}:load", response_model=AdapterInfo, responses=ERRORS)
async def load(request: Request, name: str = Name, _: str = admin_access) -> AdapterInfo:
    """Load an adapter from the workspace; requests can name it right after."""
    pipeline: AnswerPipeline = request.app.state.pipeline
    if not is_adapter_name(name):
        raise unknown_adapter(name)
    if name not in pipeline.generator.adapters:
        # on the model thread, between batches, like every other torch call (core/threads.py)
        await request.app.state.scheduler.run(pipeline.load_adapter, name)
    return next(a for a in await run_in_threadpool(_list, pipeline) if a.name == name)


@router.post("/v1/adapters/{name}:unload", response_model=AdapterInfo, responses=ERRORS)
async def unload(request: Request, name: str = Name, _: str = admin_access) -> AdapterInfo:
    """Free an adapter's weights; a later ft/hybrid request for it loads it again."""
    pipeline: AnswerPipeline = request.app.state.pipeline
    if not is_adapter_name(name):
        raise unknown_adapter(name)
    if name not in pipeline.generator.adapters:
        raise NotFoundError(f"adapter '{name}' is not loaded")
    await request.app.state.scheduler.run(pipeline.generator.unload_adapter, name)
    return AdapterInfo(name=name, loaded=False)
