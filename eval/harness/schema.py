"""The JSON schema of report.json (docs/eval.md describes each field); tests validate against it."""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 2

_NUM = {"type": ["number", "null"]}
_INTERVAL = {
    "type": "object",
    "required": ["mean", "low", "high", "n"],
    "properties": {"mean": _NUM, "low": _NUM, "high": _NUM, "n": {"type": "integer", "minimum": 0}},
}
_RECORD = {
    "type": "object",
    "required": ["id", "arm", "question", "answer", "extracted", "golds", "scores", "retrieved", "cited", "total_ms"],
    "properties": {
        "id": {"type": "string"},
        "arm": {"type": "string"},
        "mode": {"type": "string"},
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "extracted": {"type": "string"},
        "golds": {"type": "array", "items": {"type": "string"}},
        "scores": {"type": "object", "additionalProperties": {"type": "number"}},
        "retrieved": {"type": "array", "items": {"type": "string"}},
        "cited": {"type": "array", "items": {"type": "string"}},
        "snapshot": {"type": ["string", "null"]},
        "adapter": {"type": ["string", "null"]},
        "batched": {"type": "boolean"},
        "retrieve_ms": {"type": "number"},
        "ttft_ms": {"type": "number"},
        "total_ms": {"type": "number"},
    },
}
_TEST = {
    "type": "object",
    "required": ["metric", "a", "b", "n", "diff", "low", "high", "test", "p", "p_holm", "significant", "verdict"],
    "properties": {
        "metric": {"type": "string"},
        "a": {"type": "string"},
        "b": {"type": "string"},
        "n": {"type": "integer"},
        "diff": _NUM,
        "low": _NUM,
        "high": _NUM,
        "test": {"enum": ["paired bootstrap", "exact McNemar"]},
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "p_holm": {"type": "number", "minimum": 0, "maximum": 1},
        "significant": {"type": "boolean"},
        "winner": {"type": ["string", "null"]},
        "verdict": {"type": "string"},
    },
}

_RATIO = {
    "type": "object",
    "required": ["metric", "a", "b", "n", "ratio", "low", "high", "test", "p", "p_holm", "significant", "verdict"],
    "properties": {
        "n": {"type": "integer", "minimum": 2},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "low": {"type": "number"},
        "high": {"type": "number"},
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "p_holm": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ragtune eval report",
    "type": "object",
    "required": ["schema_version", "manifest", "arms", "summary", "intervals", "comparisons", "records"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "title": {"type": "string"},
        "manifest": {
            "type": "object",
            "required": ["created_at", "ragtune", "config_hash", "seed", "packages", "git_commit"],
            "properties": {
                "snapshot": {"type": ["string", "null"]},
                "adapters": {"type": "object", "additionalProperties": {"type": "string"}},
                "config_hash": {"type": "string"},
                "dataset_hash": {"type": ["string", "null"]},
                "packages": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                "git_commit": {"type": ["string", "null"]},
                "seed": {"type": "integer"},
            },
        },
        "arms": {"type": "array", "items": {"type": "object", "required": ["name", "mode"]}},
        "summary": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["n", "metrics", "p50_ms", "p95_ms", "p99_ms"],
            },
        },
        "intervals": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": _INTERVAL},
        },
        "comparisons": {"type": "array", "items": _TEST},
        "freshness": {"type": ["object", "null"]},
        "latency": {
            "type": ["object", "null"],
            "required": ["common_length", "n", "comparisons", "samples"],
            "properties": {
                "common_length": {"type": "number"},
                "n": {"type": "integer", "minimum": 0},
                "comparisons": {"type": "array", "items": _RATIO},
                "samples": {"type": "array", "items": {"type": "object", "required": ["id", "arm", "slot", "e2e_ms"]}},
            },
        },
        "load": {
            "type": ["object", "null"],
            "required": ["requests", "levels"],
            "properties": {
                "requests": {"type": "integer", "minimum": 1},
                "levels": {
                    "type": "array",
                    "items": {"type": "object", "required": ["arm", "level", "n", "errors", "requests_per_s"]},
                },
            },
        },
        "records": {"type": "array", "items": _RECORD},
    },
}
