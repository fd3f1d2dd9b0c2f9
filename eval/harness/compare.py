"""`ragtune eval compare A.json B.json`: what changed between two runs, with the same statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragtune.core.errors import DataError
from ragtune.eval.harness.analysis import compare_runs
from ragtune.eval.harness.latency import COMPARED, LatencySample, RatioTest, compare_latency
from ragtune.eval.harness.report import comparison_table, ratio_table
from ragtune.eval.harness.runner import Record
from ragtune.eval.harness.stats import PairTest

TRACKED = ("snapshot", "config_hash", "dataset_hash", "adapters", "git_commit", "seed", "generator")


def read_report(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"report not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or "records" not in doc:
        raise DataError(f"{path} is not a ragtune eval report (no records)")
    return doc


def compare_reports(
    old_path: Path, new_path: Path, resamples: int = 2000, alpha: float = 0.05
) -> tuple[list[PairTest], str]:
    """Paired tests per arm and metric (new - old) on the questions both runs answered, plus markdown."""
    old, new = read_report(old_path), read_report(new_path)
    old_r = [Record.model_validate(r) for r in old["records"]]
    new_r = [Record.model_validate(r) for r in new["records"]]
    seed = int(new.get("manifest", {}).get("seed", 0) or 0)
    tests = compare_runs(old_r, new_r, resamples, seed, alpha)
    om, nm = old.get("manifest", {}), new.get("manifest", {})
    changed = [f"- {k}: {om.get(k)} -> {nm.get(k)}" for k in TRACKED if om.get(k) != nm.get(k)]
    only_old = sorted({r.arm for r in old_r} - {r.arm for r in new_r})
    only_new = sorted({r.arm for r in new_r} - {r.arm for r in old_r})
    lines = [f"# ragtune eval compare: {old_path} -> {new_path}", "", "## What differs in the manifests", ""]
    lines += changed or ["- nothing tracked (snapshot, config, dataset, adapters, commit, seed, model)"]
    if only_old or only_new:
        lines += ["", f"Arms only in the old run: {only_old or '–'}; only in the new run: {only_new or '–'}"]
    lines += [
        "",
        "## Changes per arm (new − old, paired on question ids, Holm-corrected per metric)",
        "",
        comparison_table(tests) if tests else "(no arm and question in common)",
        "",
        *latency_lines(old, new, resamples, seed, alpha),
    ]
    return tests, "\n".join(lines)


def _samples(doc: dict[str, Any], tag: str) -> list[LatencySample]:
    raw = (doc.get("latency") or {}).get("samples", [])
    return [LatencySample.model_validate({**s, "arm": f"{s['arm']} ({tag})"}) for s in raw]


def latency_lines(old: dict[str, Any], new: dict[str, Any], resamples: int, seed: int, alpha: float) -> list[str]:
    """Each run's paired latency ratios as stored, and each arm new / old on the questions both timed."""
    lines = ["## Latency", ""]
    for tag, doc in (("old", old), ("new", new)):
        stored = [RatioTest.model_validate(t) for t in (doc.get("latency") or {}).get("comparisons", [])]
        lines += [f"Within the {tag} run (interleaved, paired):", ""]
        lines += [ratio_table(stored) if stored else "(no interleaved latency sample)", ""]
    samples = _samples(old, "old") + _samples(new, "new")
    arms = [a for a in dict.fromkeys(s.arm[: -len(" (new)")] for s in samples if s.arm.endswith("(new)"))]
    pairs = [(f"{a} (new)", f"{a} (old)") for a in arms if any(s.arm == f"{a} (old)" for s in samples)]
    between = compare_latency(samples, COMPARED, resamples, seed, alpha, pairs) if pairs else []
    lines += [
        "Each arm new / old, paired on question ids (the two runs were not interleaved, so machine drift "
        "between them is part of the ratio):",
        "",
        ratio_table(between) if between else "(no arm timed in both runs)",
        "",
    ]
    return lines
