"""Training examples: read JSONL, CSV or a saved `datasets` dataset in any of three row shapes.

Shapes: `{question, answer, context?}`, `{instruction, input?, output}` and chat `{messages: [...]}`.
Every row becomes one `Example`; a row that cannot is reported with its line (or row) number, so
the user can fix the file instead of reading a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from ragtune.core.errors import DataError
from ragtune.core.inputs import as_path, jsonl_rows, read_text, rows_of
from ragtune.core.types import ContextBlock

__all__ = ["Example", "ExamplesInput", "data_hash", "examples_from", "load_examples", "row_to_example"]


class Example(BaseModel):
    question: str
    answer: str
    context: list[ContextBlock] = Field(default_factory=list)
    group: str | None = None
    doc_id: str | None = None
    title: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, row: Any) -> Any:
        """Accept `context` as a string (with optional `title`) or a list of {title, text}."""
        if not isinstance(row, dict):
            raise ValueError("expected a JSON object")
        row = dict(row)
        ctx = row.get("context")
        if isinstance(ctx, str):
            row["context"] = [{"title": row.get("title") or "", "text": ctx}] if ctx.strip() else []
        elif ctx is None:
            row["context"] = []
        if row.get("doc_id") is not None:
            row["doc_id"] = str(row["doc_id"])
        group = row.get("group") or row.get("doc_id")
        row["group"] = None if group is None else str(group)
        keep = ("question", "answer", "context", "group", "doc_id", "title")
        return {k: row[k] for k in keep if k in row}


# what the Python API takes as training data: Examples or dicts (a list or a datasets.Dataset), or a path
ExamplesInput = Iterable[Example | Mapping[str, Any]] | str | os.PathLike[str]


def _from_messages(row: dict[str, Any]) -> dict[str, Any]:
    """The last user turn is the question and the assistant turn after it the answer."""
    msgs = row["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        raise ValueError("'messages' must be a list of {role, content} objects")
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise ValueError("'messages' has no user turn")
    replies = [m for m in msgs[last_user + 1 :] if m.get("role") == "assistant"]
    if not replies:
        raise ValueError("answer missing: no assistant turn after the last user turn")
    out = {k: v for k, v in row.items() if k != "messages"}
    out["question"] = msgs[last_user].get("content", "")
    out["answer"] = replies[0].get("content", "")
    return out


def _from_instruction(row: dict[str, Any]) -> dict[str, Any]:
    if "output" not in row:
        raise ValueError("answer missing: 'output' field required with 'instruction'")
    extra = str(row.get("input") or "").strip()
    out = {k: v for k, v in row.items() if k not in ("instruction", "input", "output")}
    out["question"] = f"{row['instruction']}\n\n{extra}" if extra else row["instruction"]
    out["answer"] = row["output"]
    return out


def row_to_example(row: Any) -> Example:
    """One raw row in any supported shape -> Example (ValueError/ValidationError if it cannot be)."""
    if not isinstance(row, dict):
        raise ValueError("expected an object with question/answer, instruction/output or messages")
    if "messages" in row:
        row = _from_messages(row)
    elif "instruction" in row:
        row = _from_instruction(row)
    elif "question" in row and "answer" not in row:
        raise ValueError("answer missing: row has a question but no 'answer'")
    elif "question" not in row:
        raise ValueError("unknown row shape: expected question/answer, instruction/output or messages")
    for key in ("question", "answer"):
        if row.get(key) is None:
            raise ValueError(f"{key} missing")
        if not isinstance(row[key], str):
            row[key] = str(row[key])
    return Example.model_validate(row)


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with io.StringIO(read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more fields than the header has")
            clean = {k: v for k, v in row.items() if k and v not in (None, "")}
            if "messages" in clean:
                try:
                    clean["messages"] = json.loads(clean["messages"])
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{reader.line_num}: 'messages' is not JSON ({exc.msg})") from None
            yield f"{path}:{reader.line_num}", clean


def _disk_rows(path: Path) -> Iterator[tuple[str, Any]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path} is not a saved `datasets` dataset: {exc}") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path} holds splits {list(ds)}; expected one named 'train'")
        ds = ds["train"]
    assert isinstance(ds, Dataset)
    for i, row in enumerate(ds):
        yield f"{path}[row {i}]", row


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        return _disk_rows(path)
    if path.suffix.lower() == ".csv":
        return _csv_rows(path)
    return jsonl_rows(path)


def _examples(rows: Iterable[tuple[str, Any]]) -> list[Example]:
    """Each (where, row) as an Example; the first bad row is a DataError that names where it is."""
    examples: list[Example] = []
    for where, row in rows:
        if isinstance(row, Example):
            examples.append(row)
            continue
        try:
            examples.append(row_to_example(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(map(str, err["loc"]))
            raise DataError(f"{where}: {loc + ': ' if loc else ''}{err['msg']}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{where}: {exc}") from None
    return examples


def load_examples(path: Path) -> list[Example]:
    """All rows of a JSONL/CSV file or a `datasets.save_to_disk` folder; the first bad row is an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"training data not found: {path}")
    examples = _examples(_rows(path))
    if not examples:
        raise DataError(f"training data {path} holds no examples")
    return examples


def examples_from(data: ExamplesInput, what: str = "examples") -> list[Example]:
    """Training examples from a path (as `load_examples`) or in memory: Examples, dicts in any of the
    three row shapes, or a `datasets.Dataset` with those columns."""
    if isinstance(data, str | os.PathLike):
        return load_examples(as_path(data))
    examples = _examples(rows_of(data, what))
    if not examples:
        raise DataError(f"{what}: no training examples given")
    return examples


def data_hash(examples: list[Example]) -> str:
    blob = "\n".join(e.model_dump_json() for e in examples)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
