"""Eval sets: JSONL `{id, question, answers, doc_ids?, stale_answers?, version?}`.

`answers` may be empty only for retrieval-only items (they then need `doc_ids`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ragtune.core.errors import DataError
from ragtune.core.inputs import as_path, jsonl_rows, need_mapping, rows_of

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


KEYS = "id, question and answers"


def _items(rows: Iterable[tuple[str, Any]]) -> list[EvalItem]:
    """Each (where, row) as an EvalItem, ids unique; the first bad row is a DataError naming where it is."""
    items: list[EvalItem] = []
    seen: set[str] = set()
    for where, row in rows:
        try:
            item = row if isinstance(row, EvalItem) else EvalItem.model_validate(need_mapping(where, row, KEYS))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(map(str, err["loc"]))
            raise DataError(f"{where}: {f'field {loc!r}: ' if loc else ''}{err['msg']}") from None
        if item.id in seen:
            raise DataError(f"{where}: duplicate id '{item.id}'")
        seen.add(item.id)
        items.append(item)
    return items


def load_items(path: Path) -> list[EvalItem]:
    if not path.is_file():
        raise DataError(f"eval data not found: {path}")
    items = _items(jsonl_rows(path))
    if not items:
        raise DataError(f"eval data {path} holds no items")
    return items


# what the Python API takes as eval questions: EvalItems or dicts (a list or a datasets.Dataset), or a JSONL path
ItemsInput = Iterable[EvalItem | Mapping[str, Any]] | str | os.PathLike[str]


def items_from(data: ItemsInput, what: str = "questions") -> list[EvalItem]:
    """Eval questions from a JSONL path (as `load_items`) or in memory: EvalItems, dicts
    {id, question, answers, doc_ids?} or a `datasets.Dataset` with those columns."""
    if isinstance(data, str | os.PathLike):
        return load_items(as_path(data))
    items = _items(rows_of(data, what))
    if not items:
        raise DataError(f"{what}: no eval questions given")
    return items


def evenly_spaced(items: Sequence[T], n: int | None) -> list[T]:
    """n items evenly spaced over the set, so every document keeps its share of questions."""
    if n is None or n >= len(items):
        return list(items)
    return [items[round(i * len(items) / n)] for i in range(n)]
