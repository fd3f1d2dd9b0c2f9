"""The knobs of one answer, passed per call: an eval arm, an HTTP request and the CLI all set them
here, so nothing has to change the pipeline's config for the length of a call.

None always means "the config's value" (`prompt.*`, `generation.*`, `retrieval.*`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragtune.core.config import Mode, SearchMode, check_mode
from ragtune.core.errors import ConfigError

MAX_STOPS = 4  # as the OpenAI API allows
MAX_STOP_CHARS = 100


class Sampling(BaseModel):
    """How tokens are picked and where the text ends; None keeps the `generation` config's choice
    (greedy by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    do_sample: bool | None = None
    temperature: float | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus cut; None: the model's own default")
    seed: int | None = None
    stop: tuple[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)], ...] = Field(
        (), max_length=MAX_STOPS, description="the text ends before the first of these strings"
    )

    def samples(self, default: bool) -> bool:
        """Whether tokens are drawn at random (else greedy); `default` is `generation.do_sample`."""
        return default if self.do_sample is None else self.do_sample


class AnswerOptions(BaseModel):
    """One call's mode and knobs; a field left None falls back to the config."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "hybrid"
    adapter: str | None = None
    top_k: int | None = Field(None, ge=1, le=50)
    search_mode: SearchMode | None = None
    filters: dict[str, Any] | None = None
    snapshot: str | None = Field(None, description="index snapshot to search; default: the current one")
    compress: Literal["none", "sentences"] | None = Field(None, description="context compression (prompt.compress)")
    max_context_tokens: int | None = Field(None, ge=64, description="budget for retrieved text in the prompt")
    system_prompt: str | None = None
    prefill_dtype: Literal["auto", "float32", "bfloat16"] | None = Field(
        None, description="precision of the prompt's forward pass (generation.prefill_dtype)"
    )
    max_new_tokens: int | None = Field(None, ge=1, le=2048)
    sampling: Sampling | None = None
    kv_reuse: bool | None = Field(None, description="reuse per-chunk KV caches (generation.kv_reuse)")


def with_fields(options: AnswerOptions | None, fields: dict[str, Any]) -> AnswerOptions:
    """`options` (or the defaults) with keyword fields on top, e.g. `answer(q, mode="rag", top_k=2)`.

    The fields are validated on their own first, so a bad one is a ConfigError naming it."""
    base = options if options is not None else AnswerOptions()
    if not fields:
        return base
    if "mode" in fields:
        check_mode(fields["mode"])
    try:
        checked = AnswerOptions.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(options)"
        raise ConfigError(f"answer option '{where}': {err['msg']}") from None
    return base.model_copy(update={key: getattr(checked, key) for key in fields})
