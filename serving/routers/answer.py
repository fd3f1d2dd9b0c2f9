"""POST /v1/answer: one question in one mode, as JSON or as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from ragtune.core.errors import RagtuneError, UpstreamError
from ragtune.core.options import AnswerOptions
from ragtune.core.types import Answer
from ragtune.serving import answering
from ragtune.serving.errors import ApiError, ClientGone, error_body
from ragtune.serving.schemas import ERRORS, AnswerRequest
from ragtune.serving.security import read_access

router = APIRouter(tags=["answer"])

SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "with `stream: true`: `token` events `{text}`, then one `done` event with the Answer",
    }
}


def error_event(exc: BaseException, openai: bool = False) -> dict[str, Any]:
    """An error after the stream started, in-band: ragtune's error body, or the OpenAI one."""
    if isinstance(exc, ApiError):
        status, code, message = exc.status, exc.code, exc.message
    elif isinstance(exc, UpstreamError):
        status, message = exc.status, str(exc)
        code = "generator_unavailable" if exc.status == 503 else "generator_error"
    elif isinstance(exc, RagtuneError):
        status, code, message = 400, "bad_request", str(exc)
    else:
        status, code, message = 500, "internal", "generation failed"
    return {"event": "error", "data": json.dumps(error_body(status, code, message, openai=openai))}


@router.post("/v1/answer", response_model=Answer, responses={**ERRORS, 504: ERRORS[503], **SSE_DOC})
async def answer(body: AnswerRequest, request: Request, _: str = read_access) -> Any:
    """Answer one question; the reply names its snapshot, adapter, citations, timings and usage."""
    options = AnswerOptions(
        mode=body.mode or request.app.state.pipeline.config.serving.default_mode,
        adapter=body.adapter,
        top_k=body.top_k,
        filters=body.filters,
        snapshot=body.snapshot,
        max_new_tokens=body.max_new_tokens,
        sampling=body.sampling(),
    )
    running = await answering.start(request, body.question, options, body.ignore_eos, stream=body.stream)
    if not body.stream:
        try:
            return await answering.result(running, request)
        except ClientGone:
            return Response(status_code=499)

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            async for item in answering.pieces(running):
                if isinstance(item, Answer):
                    yield {"event": "done", "data": item.model_dump_json()}
                else:
                    yield {"event": "token", "data": json.dumps({"text": item})}
        except Exception as exc:  # headers are sent: report in-band, never as a traceback
            yield error_event(exc)

    return EventSourceResponse(events(), ping=15)
