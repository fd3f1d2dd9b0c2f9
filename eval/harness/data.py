"""Eval sets: JSONL `{id, question, answers, doc_ids?, stale_answers?, version?}`.

`answers` may be empty only for retrieval-only items (they then need `doc_ids`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ragtune.core.errors import DataError

T = TypeVar("T")


class EvalItem(BaseModel):
    id: str
    question: str = Field(min_length=1)
    answers: list[str] = Field(default_factory=list)
    doc_ids: list[str] = Field(default_factory=list)
    stale_answers: list[str] = Field(default_factory=list, description="what was true before an update")
    version: str | None = Field(None, description="document version the answers hold for (freshness)")

    @model_validator(mode="after")
    def _something_to_score(self) -> EvalItem:
        if not self.answers and not self.doc_ids:
            raise ValueError("answers: give at least one answer (or doc_ids for a retrieval-only item)")
        return self

    @field_validator("id", mode="before")
    @classmethod
    def _str_id(cls, v: object) -> str:
        return str(v)


def load_items(path: Path) -> list[EvalItem]:
    if not path.is_file():
        raise DataError(f"eval data not found: {path}")
    items: list[EvalItem] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = EvalItem.model_validate(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            except ValidationError as exc:
                err = exc.errors()[0]
                raise DataError(f"{path}:{lineno}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
            if item.id in seen:
                raise DataError(f"{path}:{lineno}: duplicate id '{item.id}'")
            seen.add(item.id)
            items.append(item)
    if not items:
        raise DataError(f"eval data {path} holds no items")
    return items


def evenly_spaced(items: Sequence[T], n: int | None) -> list[T]:
    """n items evenly spaced over the set, so every document keeps its share of questions."""
    if n is None or n >= len(items):
        return list(items)
    return [items[round(i * len(items) / n)] for i in range(n)]
