"""Freshness: evaluate, apply a document update, evaluate again, and report who followed it.

The items are questions whose answer the update changes: `answers` hold after the update and
`stale_answers` held before it (an item's `version` names the document version its `answers`
hold for). Before the update each arm is scored against the old answers, after it against the new
ones; an arm *followed* the change when, after the update, more of its answers carry the new fact
than the stale one and at least half carry the new fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.backends import InProcessBackend
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.markdown import md_table
from ragtune.eval.harness.runner import Journal, Record, RunSettings, Scoring, run_arms


def as_of_before(items: Sequence[EvalItem]) -> list[EvalItem]:
    """The same questions scored against what was true before the update."""
    return [it.model_copy(update={"answers": it.stale_answers, "stale_answers": [], "version": None}) for it in items]


def apply_update(backend: InProcessBackend, path: Path) -> dict[str, Any]:
    """Upsert the new document versions (a folder or JSONL); returns the ingest summary."""
    from ragtune.retrieval.loaders import load_documents

    if not path.exists():
        raise DataError(f"update not found: {path}")
    docs = load_documents([path])
    report = backend.pipeline.write_index(lambda ix: ix.upsert(docs, progress=False))
    return {"snapshot": report.snapshot or backend.current_snapshot(), "summary": report.summary()}


def freshness_table(before: Sequence[Record], after: Sequence[Record]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm in dict.fromkeys(r.arm for r in [*before, *after]):
        b = [r.contains for r in before if r.arm == arm]
        a = [r for r in after if r.arm == arm]
        right = sum(r.contains for r in a) / len(a) if a else None
        stale = sum((r.stale or 0.0) for r in a) / len(a) if a else None
        out[arm] = {
            "n": len(a),
            "before": sum(b) / len(b) if b else None,
            "after": right,
            "stale_after": stale,
            "followed": bool(right is not None and stale is not None and right > stale and right >= 0.5),
        }
    return out


def freshness_markdown(table: dict[str, dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}%"

    rows = [
        [a, f["n"], pct(f["before"]), pct(f["after"]), pct(f["stale_after"]), "yes" if f["followed"] else "no"]
        for a, f in table.items()
    ]
    header = ["arm", "n", "correct before (old facts)", "correct after (new facts)", "stale after", "followed"]
    return md_table(header, rows, "lrrrrl")


def run_freshness(
    backend: InProcessBackend,
    items: Sequence[EvalItem],
    arms: Sequence[ArmSpec],
    config: Config,
    update: Path,
    out_dir: Path,
    scoring: Scoring | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate before, apply `update`, evaluate after; records are journaled per phase."""
    changed = [it for it in items if it.stale_answers]
    if not changed:
        raise DataError("freshness needs items with stale_answers (what was true before the update)")
    # pinned to the journal's snapshot when resuming, else the current one
    run = RunSettings(scoring=scoring, latency_samples=0, progress=progress)
    before = run_arms(
        backend, as_of_before(changed), arms, config, replace(run, journal=Journal(out_dir / "freshness-before.jsonl"))
    )
    upd = apply_update(backend, update)
    after_run = replace(run, journal=Journal(out_dir / "freshness-after.jsonl"), snapshot=upd["snapshot"])
    after = run_arms(backend, changed, arms, config, after_run)
    table = freshness_table(before, after)
    snap0 = next((r.snapshot for r in before if r.snapshot), None)
    return {"snapshot_before": snap0, "update": upd, "arms": table, "before": before, "after": after}
