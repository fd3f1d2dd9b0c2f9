"""HTTP request bodies; responses reuse the core Answer record."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ragtune.core.config import Mode


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=8000)
    mode: Mode | None = Field(None, description="base | ft | rag | hybrid; default from serving.default_mode")
    adapter: str | None = Field(None, max_length=200)
    top_k: int | None = Field(None, ge=1, le=50)
    max_new_tokens: int | None = Field(None, ge=1, le=1024)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
