"""The subset of the OpenAI chat-completions schema that ragtune serves (the `openai` client works)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragtune.core.types import Citation, Timings
from ragtune.serving.schemas import SamplingFields


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send name, tool_calls ...: ignored

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return self.content or ""


class ChatRequest(SamplingFields):
    model_config = ConfigDict(extra="allow")  # user, presence_penalty, logprobs ...: accepted, not used

    model: str = Field(min_length=1, max_length=300, description="ragtune-<mode>[:<adapter>], see GET /v1/models")
    messages: list[ChatMessage] = Field(
        min_length=1, max_length=100, description="the conversation; its last user message is the question"
    )
    max_tokens: int | None = Field(None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(None, ge=1, le=2048)
    n: int | None = Field(None, ge=1, le=128, description="choices per request: only 1 is served (400 above)")
    stream: bool = False


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RagtuneExtras(BaseModel):
    citations: list[Citation]
    snapshot: str | None
    adapter: str | None
    mode: str
    timings: Timings | None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    ragtune: RagtuneExtras


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ragtune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error | authentication_error | permission_error | ...")
    code: str
    param: str | None = Field(None, description="the request field at fault, if one is")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse} for code in (400, 401, 403, 404, 413, 422, 429, 503, 504)
}
