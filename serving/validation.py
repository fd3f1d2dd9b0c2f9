"""Edge checks for what requests store: document text, title and metadata.

Pydantic (`serving.schemas`) checks shapes and static bounds; the checks here read their limits from
`serving.*` config, and are what makes every accepted write readable back as it was sent: strings are
valid UTF-8 with no NUL (PostgreSQL refuses NUL, a JSON response cannot carry a lone surrogate),
numbers are JSON-safe, metadata has bounded depth, key count and serialized size.
"""

from __future__ import annotations

import json
from typing import Any

from ragtune.core.config import ServingConfig
from ragtune.retrieval.filters import check_number, check_string
from ragtune.serving.errors import ApiError

MAX_METADATA_KEY_CHARS = 200


def invalid(where: str, problem: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{where}: {problem}")


def check_text(where: str, value: str, max_chars: int) -> None:
    problem = check_string(value, max_chars)
    if problem:
        raise invalid(where, problem)


class _Walk:
    """One pass over a metadata value: depth, key count and every string and number checked."""

    def __init__(self, cfg: ServingConfig) -> None:
        self.cfg = cfg
        self.keys = 0

    def value(self, where: str, v: Any, depth: int) -> None:
        if isinstance(v, dict | list) and depth > self.cfg.max_metadata_depth:
            raise invalid("metadata", f"nested deeper than {self.cfg.max_metadata_depth} levels")
        if isinstance(v, dict):
            self.keys += len(v)
            if self.keys > self.cfg.max_metadata_keys:
                raise invalid("metadata", f"more than {self.cfg.max_metadata_keys} keys")
            for k, item in v.items():
                check_text(f"{where} key", k, MAX_METADATA_KEY_CHARS)
                self.value(where, item, depth + 1)
        elif isinstance(v, list):
            for item in v:
                self.value(where, item, depth + 1)
        elif isinstance(v, str):
            check_text(where, v, self.cfg.max_metadata_bytes)
        elif isinstance(v, int | float):
            problem = check_number(v)
            if problem:
                raise invalid(where, f"{problem} (numbers must be JSON-safe)")


def check_metadata(metadata: dict[str, Any], cfg: ServingConfig) -> None:
    """Depth, key count and serialized size within `serving.max_metadata_*`; strings and numbers safe."""
    _Walk(cfg).value("metadata", metadata, 1)
    size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    if size > cfg.max_metadata_bytes:
        raise invalid("metadata", f"{size} bytes as JSON, more than {cfg.max_metadata_bytes}")


def check_document(where: str, text: str, title: str, metadata: dict[str, Any], cfg: ServingConfig) -> None:
    """A document write: text and title safe and within `serving.max_document_chars`, metadata bounded."""
    check_text(f"{where}text", text, cfg.max_document_chars)
    if not text.strip():
        raise invalid(f"{where}text", "is blank")
    check_text(f"{where}title", title, 500)
    check_metadata(metadata, cfg)
