"""Records that cross room boundaries (retrieval -> serving -> eval -> HTTP)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Document(BaseModel):
    id: str = Field(min_length=1)
    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunk(BaseModel):
    id: int
    doc_id: str
    text: str
    title: str = ""
    position: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class Hit(BaseModel):
    chunk: Chunk
    score: float
    rank: int


class ContextBlock(BaseModel):
    """One retrieved passage as the prompt shows it; the same shape is used when training."""

    title: str = ""
    text: str


class Citation(BaseModel):
    n: int
    doc_id: str
    chunk_id: int
    title: str
    score: float


class Timings(BaseModel):
    retrieve_ms: float = 0.0
    ttft_ms: float = 0.0
    generate_ms: float = 0.0
    total_ms: float = 0.0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Answer(BaseModel):
    answer: str
    mode: str
    adapter: str | None = None
    snapshot: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    usage: Usage = Field(default_factory=Usage)
