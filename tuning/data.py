"""Training examples: load, validate, split by group so no document straddles train and validation."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

from ragtune.core.errors import DataError
from ragtune.core.types import ContextBlock


class Example(BaseModel):
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    context: list[ContextBlock] = Field(default_factory=list)
    group: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, row: dict) -> dict:
        """Accept `context` as a string (with optional `title`) or a list of {title, text}."""
        if not isinstance(row, dict):
            raise ValueError("expected a JSON object")
        row = dict(row)
        ctx = row.get("context")
        if isinstance(ctx, str):
            row["context"] = [{"title": row.get("title", ""), "text": ctx}] if ctx.strip() else []
        elif ctx is None:
            row["context"] = []
        row["group"] = row.get("group") or row.get("doc_id")
        for key in ("question", "answer"):
            if isinstance(row.get(key), str) and not row[key].strip():
                raise ValueError(f"'{key}' is empty")
        return {k: row[k] for k in ("question", "answer", "context", "group") if k in row}


def load_examples(path: Path) -> list[Example]:
    if not path.is_file():
        raise DataError(f"training data not found: {path}")
    examples: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            try:
                examples.append(Example.model_validate(row))
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(map(str, err["loc"]))
                raise DataError(f"{path}:{lineno}: {where + ': ' if where else ''}{err['msg']}") from None
    if not examples:
        raise DataError(f"training data {path} holds no examples")
    return examples


def data_hash(examples: list[Example]) -> str:
    blob = "\n".join(e.model_dump_json() for e in examples)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_by_group(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded split over groups (documents); examples without a group are their own group."""
    if val_fraction <= 0 or len(examples) < 4:
        return examples, []
    groups = sorted({e.group or f"__row{i}" for i, e in enumerate(examples)})
    random.Random(seed).shuffle(groups)
    n_val = max(1, round(len(groups) * val_fraction))
    if n_val >= len(groups):
        return examples, []
    val_groups = set(groups[:n_val])
    train: list[Example] = []
    val: list[Example] = []
    for i, e in enumerate(examples):
        (val if (e.group or f"__row{i}") in val_groups else train).append(e)
    return train, val
