from __future__ import annotations

from fastapi import APIRouter, Request

from ragtune.core.types import Answer
from ragtune.serving.pipeline import Pipeline
from ragtune.serving.schemas import AnswerRequest, ErrorResponse

router = APIRouter(tags=["answer"])


@router.post(
    "/v1/answer",
    response_model=Answer,
    responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def answer(body: AnswerRequest, request: Request) -> Answer:
    """Answer one question in the chosen mode; the reply names its snapshot, adapter and timings."""
    pipeline: Pipeline = request.app.state.pipeline
    mode = body.mode or pipeline.config.serving.default_mode
    return pipeline.answer(body.question, mode, body.adapter, body.top_k, body.max_new_tokens)
