"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`.

`model` names mode and adapter: `ragtune-hybrid:house-style`, `ragtune-rag`, `ragtune-ft` (default
adapter). The last user message is the question and the user/assistant turns before it are the
conversation: retrieval searches the question condensed with them (`serving.condense`), the prompt
quotes them as fenced data (`serving.history_tokens`). The house system prompt stays ours, so a
client's system message cannot change the style the adapter was trained for. `temperature`, `top_p`,
`seed`, `stop` and `max_tokens` reach the generator; `n` above 1 is refused.

With `serving.engine_api`, the server also answers as an engine does (vLLM with `--lora-modules`):
`model` is the base model's name (`HuggingFaceTB/SmolLM2-135M-Instruct` for the bundled one, or the
`models.generator` reference) or an adapter's name, and the client's messages are completed as
given, without retrieval. Another ragtune with `models.generator_backend: openai` sends exactly the
messages its own prompt builder made, so it gets the answer this server would give in process.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from ragtune.core.adapters import adapter_path, is_adapter_name, list_adapters
from ragtune.core.config import MODES, TUNED, Mode, check_mode
from ragtune.core.errors import NotFoundError
from ragtune.core.models import portable_reference
from ragtune.core.options import AnswerOptions
from ragtune.core.prompt import Messages
from ragtune.core.types import Answer
from ragtune.serving import answering
from ragtune.serving.chat_schemas import (
    OPENAI_ERRORS,
    ChatChoice,
    ChatChoiceMessage,
    ChatRequest,
    ChatResponse,
    ChatUsage,
    ModelCard,
    ModelList,
    RagtuneExtras,
)
from ragtune.serving.contracts import AnswerPipeline
from ragtune.serving.errors import CHAT_PATH, MODELS_PATH, ApiError, ClientGone
from ragtune.serving.routers.answer import error_event
from ragtune.serving.security import read_access
from ragtune.serving.validation import check_text

router = APIRouter(tags=["openai"])
PREFIX = "ragtune-"
MAX_CONTENT_CHARS = 100_000  # the question's own limit (serving.max_question_chars) applies after this


def parse_model(model: str) -> tuple[Mode, str | None]:
    """`ragtune-hybrid:house-style` -> ("hybrid", "house-style")."""
    name, _, adapter = model.partition(":")
    mode = name.removeprefix(PREFIX) if name.startswith(PREFIX) else ""
    if mode not in MODES:
        raise unknown_model(model)
    if adapter and mode not in TUNED:
        raise ApiError(404, "model_not_found", f"model '{model}': mode '{mode}' takes no adapter", param="model")
    if adapter and not is_adapter_name(adapter):
        raise unknown_model(model)
    return check_mode(mode), adapter or None


def unknown_model(model: str) -> ApiError:
    return ApiError(404, "model_not_found", f"unknown model '{model}'; GET /v1/models lists them", param="model")


def _adapter_names(pipeline: AnswerPipeline) -> list[str]:
    return sorted({c.name for c in list_adapters(pipeline.config.adapters_dir)} | set(pipeline.generator.adapters))


def _base_names(pipeline: AnswerPipeline) -> list[str]:
    ref = pipeline.config.models.generator
    return list(dict.fromkeys([portable_reference(ref), ref]))


def check_model(pipeline: AnswerPipeline, model: str, adapter: str | None) -> None:
    """A model naming an adapter that is neither loaded nor registered is unknown, like any other."""
    if adapter is None or adapter in pipeline.generator.adapters:
        return
    try:
        adapter_path(pipeline.config.adapters_dir, adapter)
    except NotFoundError:
        raise unknown_model(model) from None


def model_ids(pipeline: AnswerPipeline) -> list[str]:
    names = _adapter_names(pipeline)
    ids = [f"{PREFIX}{m}" for m in MODES]
    ids += [f"{PREFIX}{m}:{n}" for m in MODES if m in TUNED for n in names]
    if pipeline.config.serving.engine_api:
        ids += [*_base_names(pipeline), *names]
    return ids


def engine_model(pipeline: AnswerPipeline, model: str) -> tuple[Mode, str | None] | None:
    """(base, None) or (ft, adapter) for an engine-style model name under `serving.engine_api`, else None."""
    if not pipeline.config.serving.engine_api:
        return None
    if model in _base_names(pipeline):
        return "base", None
    if model in _adapter_names(pipeline):
        return "ft", model
    return None


@router.get(MODELS_PATH, response_model=ModelList, responses=OPENAI_ERRORS)
def models(request: Request, _: str = read_access) -> ModelList:
    """Every mode, and every mode x adapter pair for the tuned modes."""
    return ModelList(data=[ModelCard(id=i) for i in model_ids(request.app.state.pipeline)])


def conversation(body: ChatRequest) -> tuple[str, Messages]:
    """The question (the last user message with text) and the user/assistant turns before it.

    System, developer and tool messages are left out: the house system prompt stays the server's."""
    last = max((i for i, m in enumerate(body.messages) if m.role == "user" and m.text().strip()), default=None)
    if last is None:
        raise ApiError(422, "invalid_request", "messages: no user message with text", param="messages")
    history: Messages = []
    for i, m in enumerate(body.messages[: last + 1]):
        if m.role in ("user", "assistant") and m.text().strip():
            check_text(f"messages.{i}.content", m.text(), MAX_CONTENT_CHARS)
            history.append({"role": m.role, "content": m.text()})
    question = history.pop()["content"]
    return question, history


def check_choices(body: ChatRequest) -> None:
    if body.n is not None and body.n != 1:
        raise ApiError(400, "invalid_request", f"n: {body.n} choices asked; this server answers one (n=1)", param="n")


def _response(body: ChatRequest, cid: str, created: int, ans: Answer, limit: int) -> ChatResponse:
    extras = RagtuneExtras(
        citations=ans.citations, snapshot=ans.snapshot, adapter=ans.adapter, mode=ans.mode, timings=ans.timings
    )
    u = ans.usage
    return ChatResponse(
        id=cid,
        created=created,
        model=body.model,
        choices=[
            ChatChoice(
                message=ChatChoiceMessage(content=ans.answer),
                finish_reason="length" if u.completion_tokens >= limit else "stop",
            )
        ],
        usage=ChatUsage(
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            total_tokens=u.prompt_tokens + u.completion_tokens,
        ),
        ragtune=extras,
    )


@router.post(CHAT_PATH, response_model=ChatResponse, responses=OPENAI_ERRORS)
async def chat_completions(body: ChatRequest, request: Request, _: str = read_access) -> Any:
    """Chat completion in the OpenAI format, streaming (`stream: true`) or not."""
    check_choices(body)
    engine = engine_model(request.app.state.pipeline, body.model)
    mode, adapter = engine or parse_model(body.model)
    if engine is None:
        check_model(request.app.state.pipeline, body.model, adapter)
    limit = body.max_completion_tokens or body.max_tokens
    options = AnswerOptions(mode=mode, adapter=adapter, max_new_tokens=limit, sampling=body.sampling())
    messages: Messages | None = [{"role": m.role, "content": m.text()} for m in body.messages] if engine else None
    question, history = ("", []) if engine else conversation(body)
    running = await answering.start(request, question, options, stream=body.stream, messages=messages, history=history)
    limit = running.job.max_new_tokens
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not body.stream:
        try:
            return _response(body, cid, created, await answering.result(running, request), limit)
        except ClientGone:
            return Response(status_code=499)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return {"data": json.dumps(data)}

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for item in answering.pieces(running):
                if isinstance(item, Answer):
                    full = _response(body, cid, created, item, limit)
                    yield chunk(
                        {},
                        full.choices[0].finish_reason,
                        usage=full.usage.model_dump(),
                        ragtune=full.ragtune.model_dump(),
                    )
                else:
                    yield chunk({"content": item})
            yield {"data": "[DONE]"}
        except Exception as exc:
            yield error_event(exc, openai=True)

    return EventSourceResponse(events(), ping=15)
