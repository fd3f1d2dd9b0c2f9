"""The metadata filter grammar, parsed once and rendered to each backend's SQL.

`{key: value | [values] | {"$op": value}}`: a bare value is `$eq`, a list is `$in`. `doc_id`,
`title` and `updated_at` are chunk columns; any other key is looked up in the chunk metadata, where a
list value (e.g. tags) matches when any element matches. Keys are restricted to a safe alphabet, so
they can name a JSON path; values always travel as query parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ragtune.core.errors import DataError

KEY = re.compile(r"^[A-Za-z0-9_\-]+$")
OPS = {"$eq": "=", "$ne": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$in": "IN", "$nin": "IN"}
COLUMN_KEYS = ("doc_id", "title", "updated_at")
Scalar = str | int | float | bool


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


def _values(key: str, op: str, value: Any) -> tuple[Scalar, ...]:
    values = value if op in ("$in", "$nin") else [value]
    if not isinstance(values, list) or not values:
        raise DataError(f"filter on '{key}': {op} needs a non-empty list")
    for v in values:
        if not isinstance(v, str | int | float | bool):
            raise DataError(f"filter on '{key}': values must be strings, numbers or booleans, got {v!r}")
    return tuple(values)


def parse_filters(filters: dict[str, Any] | None) -> list[Condition]:
    """The conditions a filter object asks for, all of which must hold; a `DataError` names a bad one."""
    out: list[Condition] = []
    for key, cond in (filters or {}).items():
        if not isinstance(key, str) or not KEY.match(key):
            raise DataError(f"filter key {key!r}: use letters, digits, '_' or '-'")
        conds = cond if isinstance(cond, dict) else {"$in": cond} if isinstance(cond, list) else {"$eq": cond}
        for op, value in conds.items():
            if op not in OPS:
                raise DataError(f"filter on '{key}': unknown operator {op!r} (use {', '.join(OPS)})")
            out.append(Condition(key, op, _values(key, op, value)))
    return out
