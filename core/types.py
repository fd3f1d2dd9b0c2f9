"""Records that cross room boundaries (retrieval -> serving -> eval -> HTTP)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MAX_DOC_ID_CHARS = 512  # ids made from file paths may be long; the HTTP API allows 200


def doc_id_problem(doc_id: str) -> str | None:
    """Why `doc_id` cannot be a document id (empty, too long, not printable: NUL, control, format or
    lone-surrogate characters), or None. Ids are shown in answers, logs and terminals, and named again
    in URLs and `ragtune delete`, so they must print as what they are."""
    if not doc_id:
        return "is empty"
    if len(doc_id) > MAX_DOC_ID_CHARS:
        return f"is longer than {MAX_DOC_ID_CHARS} characters"
    if not doc_id.isprintable():
        bad = next(ch for ch in doc_id if not ch.isprintable())
        return f"holds a non-printable character (U+{ord(bad):04X})"
    return None


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
