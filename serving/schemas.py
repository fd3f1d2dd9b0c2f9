"""HTTP request and response bodies for the answer, document, index and adapter routes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ragtune.core.config import Mode
from ragtune.core.errors import DataError
from ragtune.core.options import MAX_STOP_CHARS, MAX_STOPS, Sampling
from ragtune.core.types import Answer
from ragtune.retrieval.filters import parse_filters

DOC_ID_PATTERN = r"^[^/\s\x00-\x1f\x7f]+$"
SNAPSHOT_PATTERN = r"^[A-Za-z0-9._-]+$"


def check_doc_id(value: str) -> str:
    """Ids that a GET can name again and a terminal shows as they are: no '/', whitespace, control,
    format (zero-width, bidi) or other non-printable characters, not '.' or '..'."""
    if value in (".", ".."):
        raise ValueError("'.' and '..' are not document ids")
    if not value.isprintable():
        bad = next(ch for ch in value if not ch.isprintable())
        raise ValueError(f"a document id holds only printable characters, not U+{ord(bad):04X}")
    return value


DocId = Annotated[str, Field(min_length=1, max_length=200, pattern=DOC_ID_PATTERN), AfterValidator(check_doc_id)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
SEED_RANGE = 2**63


class SamplingFields(BaseModel):
    """The OpenAI sampling fields, shared by `/v1/answer` and `/v1/chat/completions`. Left out, the
    server's `generation.*` config decides (greedy by default)."""

    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; above 0: sampled at this temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling cut, when sampling")
    seed: int | None = Field(
        None, ge=-SEED_RANGE, lt=SEED_RANGE, description="the same seed and request give the same text"
    )
    stop: StopString | list[StopString] | None = Field(
        None, description=f"up to {MAX_STOPS} strings; the answer ends before the first that appears"
    )

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        return value

    def sampling(self) -> Sampling | None:
        """These fields as the generator's `Sampling`; None when the request sets none of them."""
        stop = tuple([self.stop] if isinstance(self.stop, str) else self.stop or [])
        if self.temperature is None and self.top_p is None and self.seed is None and not stop:
            return None
        do_sample = None if self.temperature is None else self.temperature > 0
        return Sampling(
            do_sample=do_sample, temperature=self.temperature or None, top_p=self.top_p, seed=self.seed, stop=stop
        )


class AnswerRequest(SamplingFields, _Body):
    question: str = Field(min_length=1, max_length=8000)
    mode: Mode | None = Field(None, description="base | ft | rag | hybrid; default from serving.default_mode")
    adapter: str | None = Field(None, min_length=1, max_length=200, description="a name from GET /v1/adapters")
    top_k: int | None = Field(None, ge=1, le=50)
    filters: dict[str, Any] | None = Field(
        None,
        description='metadata filter: {key: value | [values] | {"$op": value}}; doc_id, title, updated_at too. '
        "At most 32 keys and 256 values per $in; integers within +-2^53 (retrieval/filters.py)",
    )
    snapshot: str | None = Field(
        None, min_length=1, max_length=100, pattern=SNAPSHOT_PATTERN, description="index snapshot to search"
    )
    max_new_tokens: int | None = Field(None, ge=1, le=2048, description="capped by serving.max_new_tokens_cap")
    stream: bool = Field(False, description="server-sent events: `token` events, then one `done` event")
    ignore_eos: bool = Field(False, description="generate exactly max_new_tokens (for benchmarks)")

    @field_validator("filters")
    @classmethod
    def _filters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:  # the index's own parser: the edge and the index accept exactly the same grammar
            parse_filters(value)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        return value


AnswerResponse = Answer


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class DocumentIn(_Body):
    text: str = Field(min_length=1, description="at most serving.max_document_chars; valid UTF-8, no NUL")
    title: str = Field("", max_length=500)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="JSON object within serving.max_metadata_bytes, _depth and _keys"
    )


class DocumentWithId(DocumentIn):
    id: DocId


class BatchRequest(_Body):
    upsert: list[DocumentWithId] = Field(default_factory=list, max_length=1000)
    delete: list[DocId] = Field(default_factory=list, max_length=1000)


class WriteResult(BaseModel):
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    snapshot: str | None = None


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    chunks: int
    snapshot: str | None


class SnapshotInfo(BaseModel):
    id: str
    seq: int
    created_at: float
    documents: int
    chunks: int


class IndexInfo(BaseModel):
    snapshot: str | None
    documents: int
    chunks: int
    embedder: str | None = None
    snapshots: list[SnapshotInfo] = Field(default_factory=list)


class AdapterInfo(BaseModel):
    name: str
    loaded: bool
    base_model: str | None = None
    created_at: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}
