"""report.json (records + summary + manifest) and report.md (tables a person reads)."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragtune import __version__
from ragtune.core.config import Config
from ragtune.eval.runner import Record

COLUMNS = [
    ("accuracy", "accuracy", "pct"),
    ("exact_match", "EM", "pct"),
    ("f1", "F1", "pct"),
    ("format", "format", "pct"),
    ("hit_at_k", "hit@k", "pct"),
    ("p50_ms", "p50 ms", "ms"),
    ("p95_ms", "p95 ms", "ms"),
    ("ttft_p50_ms", "TTFT p50 ms", "ms"),
]


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if kind == "pct" else f"{value:.0f}"


def table(summary: dict[str, dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    head = "| arm | n | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|---:|" + "---:|" * len(columns)
    rows = [
        f"| {arm} | {s['n']} | " + " | ".join(_cell(s.get(key), kind) for key, _, kind in columns) + " |"
        for arm, s in summary.items()
    ]
    return "\n".join([head, sep, *rows])


def manifest(config: Config, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ragtune": __version__,
        "config_hash": config.digest(),
        "generator": config.models.generator,
        "embedder": config.models.embedder,
        "seed": config.generation.seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **(extra or {}),
    }


def write_report(
    out_dir: Path,
    summary: dict[str, dict[str, Any]],
    records: Sequence[Record],
    meta: dict[str, Any],
    title: str = "ragtune eval",
    sections: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"manifest": meta, "summary": summary, "records": [r.model_dump() for r in records]}
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(data, indent=2))
    lines = [f"# {title}", "", table(summary), ""]
    lines += [
        "accuracy = gold answer contained in the reply (SQuAD-normalised); EM/F1 on the extracted answer; "
        "format = house-style regex; latency from single (unbatched) requests.",
        "",
    ]
    for heading, body in (sections or {}).items():
        lines += [f"## {heading}", "", body, ""]
    lines += ["## Manifest", "", *[f"- {k}: {v}" for k, v in meta.items()], ""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path
