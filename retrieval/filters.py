"""The metadata filter grammar, parsed once and rendered to each backend's SQL.

`{key: value | [values] | {"$op": value}}`: a bare value is `$eq`, a list is `$in`. `doc_id`,
`title` and `updated_at` are chunk columns; any other key is looked up in the chunk metadata, where a
list value (e.g. tags) matches when any element matches. Keys are restricted to a safe alphabet, so
they can name a JSON path; values always travel as query parameters.

The grammar is bounded, and the HTTP edge (`serving.schemas`) validates with this same parser, so what
a request may send is exactly what the index accepts: at most `MAX_KEYS` keys of at most
`MAX_KEY_CHARS` characters, at most `MAX_VALUES` values in one `$in`/`$nin`, strings of at most
`MAX_STRING_CHARS` characters (valid UTF-8, no NUL), integers within +-2^53 (exact in every JSON
reader), finite floats; `doc_id`/`title` compare with strings and `updated_at` with numbers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ragtune.core.errors import DataError

KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
OPS = {"$eq": "=", "$ne": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$in": "IN", "$nin": "IN"}
COLUMN_KEYS = ("doc_id", "title", "updated_at")
Scalar = str | int | float | bool

MAX_KEYS = 32
MAX_KEY_CHARS = 64
MAX_VALUES = 256
MAX_STRING_CHARS = 1000
SAFE_INT = 2**53
_COLUMN_TYPES: dict[str, tuple[type, ...]] = {"doc_id": (str,), "title": (str,), "updated_at": (int, float)}


@dataclass(frozen=True)
class Matched:
    """The chunk ids live at snapshot `seq` that pass a filter, evaluated ahead of the search.

    The server evaluates a request's filter in the thread pool on its own connection (`Index.match`),
    so a costly filter never runs on the model thread that every request waits for; the search then
    takes these ids in place of the filter (an indexed id lookup) and is pinned to the same snapshot."""

    seq: int
    snapshot: str
    ids: tuple[int, ...]


Filters = dict[str, Any] | Matched | None  # what the index's searches take


@dataclass(frozen=True)
class Condition:
    """One test on one key: `op` from `OPS`, `values` one for a comparison, several for `$in`/`$nin`."""

    key: str
    op: str
    values: tuple[Scalar, ...]

    @property
    def negated(self) -> bool:
        return self.op in ("$ne", "$nin")

    @property
    def sql_op(self) -> str:
        return OPS[self.op]

    @property
    def is_column(self) -> bool:
        return self.key in COLUMN_KEYS


def check_string(value: str, max_chars: int) -> str | None:
    """Why `value` cannot be stored and read back as it is (too long, NUL, lone surrogate), or None."""
    if len(value) > max_chars:
        return f"longer than {max_chars} characters"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a lone surrogate)"
    return None


def check_number(value: int | float) -> str | None:
    """Why a number is not JSON-safe (beyond +-2^53, NaN or infinite), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not -SAFE_INT <= value <= SAFE_INT:
        return "an integer beyond +-2^53"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    return None


def _scalar_problem(key: str, v: Any) -> str | None:
    if not isinstance(v, str | int | float | bool):
        return f"values must be strings, numbers or booleans, got {type(v).__name__}"
    want = _COLUMN_TYPES.get(key)
    if want is not None and (isinstance(v, bool) or not isinstance(v, want)):
        return f"'{key}' compares with {'strings' if want == (str,) else 'numbers'}"
    problem = check_string(v, MAX_STRING_CHARS) if isinstance(v, str) else check_number(v)
    return f"a value is {problem}" if problem else None


def _values(key: str, op: str, value: Any) -> tuple[Scalar, ...]:
    values = value if op in ("$in", "$nin") else [value]
    if not isinstance(values, list) or not values:
        raise DataError(f"filter on '{key}': {op} needs a non-empty list")
    if len(values) > MAX_VALUES:
        raise DataError(f"filter on '{key}': {op} takes at most {MAX_VALUES} values, got {len(values)}")
    for v in values:
        problem = _scalar_problem(key, v)
        if problem:
            raise DataError(f"filter on '{key}': {problem}")
    return tuple(values)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY.match(key) or len(key) > MAX_KEY_CHARS:
        shown = key[:40] if isinstance(key, str) else key
        raise DataError(f"filter key {shown!r}: use up to {MAX_KEY_CHARS} letters, digits, '_' or '-'")
    return key


def _operators(key: str, cond: Any) -> dict[str, Any]:
    if not isinstance(cond, dict):
        return {"$in": cond} if isinstance(cond, list) else {"$eq": cond}
    if not cond:
        raise DataError(f"filter on '{key}': an operator object needs at least one of {', '.join(OPS)}")
    return cond


def parse_filters(filters: dict[str, Any] | None) -> list[Condition]:
    """The conditions a filter object asks for, all of which must hold; a `DataError` names a bad one."""
    if filters is None:
        return []
    if not isinstance(filters, dict):
        raise DataError('filters must be an object {key: value | [values] | {"$op": value}}')
    if len(filters) > MAX_KEYS:
        raise DataError(f"filters: at most {MAX_KEYS} keys, got {len(filters)}")
    out: list[Condition] = []
    for key, cond in filters.items():
        _check_key(key)
        for op, value in _operators(key, cond).items():
            if op not in OPS:
                shown = op[:40] if isinstance(op, str) else op
                raise DataError(f"filter on '{key}': unknown operator {shown!r} (use {', '.join(OPS)})")
            out.append(Condition(key, op, _values(key, op, value)))
    return out
