"""What the routers and the eval harness need from a pipeline, as a protocol, so they depend on
these methods rather than on `Pipeline` itself (tests and tools can hand in their own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ragtune.core.config import Config
from ragtune.core.generator import Generation, Generator
from ragtune.core.options import AnswerOptions
from ragtune.core.types import Answer, Citation
from ragtune.retrieval.index import Index

T = TypeVar("T")


@dataclass
class Prepared:
    """A question made ready for the generator: its prompt and what the answer will cite."""

    mode: str
    adapter: str | None
    prompt: str
    citations: list[Citation]
    snapshot: str | None
    retrieve_ms: float


class AnswerPipeline(Protocol):
    """Question in, `Answer` out; `fields` are `AnswerOptions` fields on top of `options`."""

    @property
    def config(self) -> Config: ...

    @property
    def generator(self) -> Generator: ...

    @property
    def index(self) -> Index | None: ...

    @property
    def index_lock(self) -> AbstractContextManager[Any]:
        """Held by callers that need several index reads to agree."""
        ...

    def prepare(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Prepared: ...

    def prepare_many(
        self, questions: Sequence[str], options: AnswerOptions | None = None, **fields: Any
    ) -> list[Prepared]: ...

    def finish(self, prep: Prepared, gen: Generation, total_ms: float, ttft_ms: float | None = None) -> Answer: ...

    def answer(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Answer: ...

    def answer_many(
        self, questions: Sequence[str], options: AnswerOptions | None = None, **fields: Any
    ) -> list[Answer]: ...

    def stream(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Iterator[str | Answer]: ...

    def write_index(self, change: Callable[[Index], T]) -> T: ...

    def load_adapter(self, name: str, path: Path | None = None) -> None: ...
