"""What the routers and the eval harness need from a pipeline, as a protocol, so they depend on
these methods rather than on `Pipeline` itself (tests and tools can hand in their own)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ragtune.core.config import Config, ModelsConfig
from ragtune.core.generator import Generation
from ragtune.core.options import AnswerOptions
from ragtune.core.prompt import Messages
from ragtune.core.text_generator import TextGenerator
from ragtune.core.types import Answer, Citation
from ragtune.retrieval.filters import Matched
from ragtune.retrieval.index import Index

T = TypeVar("T")


@dataclass
class Prepared:
    """A question made ready for the generator: its prompt (rendered, and the chat messages it was
    rendered from, which a chat backend sends) and what the answer will cite."""

    mode: str
    adapter: str | None
    prompt: str
    citations: list[Citation]
    snapshot: str | None
    retrieve_ms: float
    messages: Messages = field(default_factory=list)
    chunks: tuple[str, ...] = ()  # the prompt's retrieved pieces whose KV caches are reused (kv_reuse)


class AnswerPipeline(Protocol):
    """Question in, `Answer` out; `fields` are `AnswerOptions` fields on top of `options`."""

    @property
    def config(self) -> Config: ...

    @property
    def generator(self) -> TextGenerator: ...

    @property
    def index(self) -> Index | None: ...

    @property
    def index_lock(self) -> AbstractContextManager[Any]:
        """Held by callers that need several index reads to agree."""
        ...

    def prepare(
        self,
        question: str,
        options: AnswerOptions | None = None,
        history: Messages | None = None,
        matched: Matched | None = None,
        **fields: Any,
    ) -> Prepared:
        """One question, after a conversation's earlier user/assistant turns (`history`); `matched`
        stands in for the options' filters."""
        ...

    def match_filters(self, opts: AnswerOptions) -> Matched | None:
        """The ids a request's filters match, evaluated off the model thread."""
        ...

    def prepare_chat(self, messages: Messages, options: AnswerOptions) -> Prepared:
        """A client's own chat messages made ready as they are (`serving.engine_api`): no retrieval."""
        ...

    def prepare_many(
        self,
        questions: Sequence[str],
        options: AnswerOptions | None = None,
        matched: Matched | None = None,
        **fields: Any,
    ) -> list[Prepared]: ...

    def finish(self, prep: Prepared, gen: Generation, total_ms: float, ttft_ms: float | None = None) -> Answer: ...

    def answer(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Answer: ...

    def answer_many(
        self, questions: Sequence[str], options: AnswerOptions | None = None, **fields: Any
    ) -> list[Answer]: ...

    def stream(self, question: str, options: AnswerOptions | None = None, **fields: Any) -> Iterator[str | Answer]: ...

    def write_index(self, change: Callable[[Index], T]) -> T: ...

    def load_adapter(self, name: str, path: Path | None = None) -> None: ...

    def with_models(self, models: ModelsConfig) -> AnswerPipeline:
        """The same pipeline (index, prompt, retrieval, generation settings) answering through the
        generator `models` describes (an eval arm's own)."""
        ...
