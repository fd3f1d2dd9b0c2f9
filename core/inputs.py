"""In-memory inputs for the Python API: a list of dicts or a `datasets.Dataset`, read as numbered rows.

File loaders name the line of a bad row; these name its position (`documents[3]`), so a notebook user
can find it. `datasets` is imported only when a Dataset is actually given, to keep imports light.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ragtune.core.errors import DataError

SHAPES = "a list of dicts, a datasets.Dataset or a file path"


def as_path(data: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(data))


def _split(data: Any, what: str) -> Any:
    """A DatasetDict with one split is that split; with several, the caller must choose."""
    splits = list(data)
    if len(splits) != 1:
        raise DataError(f"{what}: a DatasetDict with splits {splits}; pass one of them, e.g. ds['{splits[0]}']")
    return data[splits[0]]


def _dataset_rows(data: Any, what: str) -> Iterator[tuple[str, Any]]:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        data = _split(data, what)
    if not isinstance(data, datasets.Dataset):
        raise DataError(f"{what}: expected {SHAPES}; got {type(data).__name__}")
    for i, row in enumerate(data):
        # Arrow fills a column a row lacks with None: treat it as absent, as a JSONL row would be
        yield f"{what}[{i}]", {k: v for k, v in row.items() if v is not None}


def rows_of(data: Any, what: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of a list (any iterable) or a `datasets` Dataset; the caller checks rows."""
    if type(data).__module__.split(".")[0] == "datasets":
        yield from _dataset_rows(data, what)
        return
    if isinstance(data, Mapping):
        raise DataError(f"{what}: got one dict; pass a list of dicts (e.g. [row])")
    if type(data).__name__ == "DataFrame":
        raise DataError(f"{what}: got a DataFrame; pass df.to_dict('records') or datasets.Dataset.from_pandas(df)")
    if isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise DataError(f"{what}: expected {SHAPES}; got {type(data).__name__}")
    for i, row in enumerate(data):
        yield f"{what}[{i}]", row


def need_mapping(where: str, row: Any, keys: str) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a dict with {keys}; got {type(row).__name__}")
    return row


def missing_keys(where: str, row: Mapping[str, Any], required: tuple[str, ...]) -> None:
    """A DataError naming the absent keys and the ones the row has (a typo shows at once)."""
    absent = [k for k in required if row.get(k) is None]
    if absent:
        have = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{where}: missing key {', '.join(repr(k) for k in absent)} (keys given: {have})")


def not_utf8(path: Path, exc: UnicodeDecodeError, line: int, at: int) -> DataError:
    """The error for a file that is not UTF-8: where (line, byte offset of the file) and what to do."""
    return DataError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {at}); save the file as UTF-8")


def read_text(path: Path) -> str:
    """A whole text file, UTF-8; a file that is not UTF-8 is a DataError naming its line and byte offset."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, data[: exc.start].count(b"\n") + 1, exc.start) from None


def jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(path:line, parsed row) for each non-blank line; bad UTF-8 or JSON is a DataError naming the line."""
    offset = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(path, exc, lineno, offset + exc.start) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
