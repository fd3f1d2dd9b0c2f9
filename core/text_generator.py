"""What the pipeline, the scheduler and the routers need from a generator, and the one place that
picks the backend (`models.generator_backend`).

transformers  `core/generator.py:Generator`, the model in this process (the default)
openai        `core/remote_generator.py:OpenAIGenerator`, any OpenAI-compatible server (vLLM,
              llama.cpp server, a hosted model, another `ragtune serve`) at `models.base_url`

Both take the prompt builder's output (the rendered prompt and the messages it came from), return
the same `Generation` records and stream the same text pieces, so citations, retrieval, snapshots,
auth, limits and metrics stay in ragtune whichever backend answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from ragtune.core.config import GenerationConfig, ModelsConfig
from ragtune.core.generator import Generation, RowRequest
from ragtune.core.options import Sampling
from ragtune.core.prompt import Messages


class TextGenerator(Protocol):
    """A generator backend: prompts (rendered text plus the chat messages) in, text/stream/usage out."""

    backend: str  # "transformers" | "openai"
    tokenizer: Any  # the generator's tokenizer: renders prompts and counts tokens for the prompt budget
    config: GenerationConfig

    @property
    def adapters(self) -> Mapping[str, Path]:
        """Loaded (in process) or registered (on the server) adapters by name."""
        ...

    @property
    def ready(self) -> bool:
        """Whether it can answer now (the model is loaded; a server was reachable at start)."""
        ...

    def load_adapter(self, name: str, path: Path) -> None: ...

    def unload_adapter(self, name: str) -> None: ...

    def warm_prefill(self, adapter: str | None) -> None: ...

    def prefill_precision(self, dtype: str | None = None) -> AbstractContextManager[Any]: ...

    def prefill_dtype_for(self, dtype: str | None = None) -> str:
        """The precision (float32 | bfloat16) a prompt's forward pass gets, `dtype` (a call's choice,
        auto allowed) or `generation.prefill_dtype` resolved for this device."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def generate(
        self,
        prompts: Sequence[str],
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
        messages: Sequence[Messages] | None = None,
        chunks: Sequence[tuple[str, ...]] | None = None,
    ) -> list[Generation]: ...

    def generate_rows(
        self,
        rows: Sequence[RowRequest],
        adapter: str | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
    ) -> list[Generation]: ...

    def stream(
        self,
        prompt: str,
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
        messages: Messages | None = None,
        chunks: tuple[str, ...] = (),
    ) -> Iterator[str | Generation]: ...


def make_generator(models: ModelsConfig, generation: GenerationConfig) -> TextGenerator:
    """The generator `models.generator_backend` names: the model loaded here, or a client of a server
    (which loads only the tokenizer, for prompt budgets)."""
    if models.generator_backend == "openai":
        from ragtune.core.remote_generator import OpenAIGenerator

        return OpenAIGenerator.from_config(models, generation)
    from ragtune.core.generator import Generator
    from ragtune.core.models import load_generator_model

    model, tok = load_generator_model(models.generator, models.cache_dir, device=models.device, dtype=models.dtype)
    return Generator(model, tok, generation)
