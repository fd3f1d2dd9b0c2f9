"""One `ragtune eval` run end to end: items -> arms -> journaled records -> statistics -> reports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragtune.core.config import Config
from ragtune.core.errors import ConfigError
from ragtune.eval.harness.arms import ArmSpec, EvalSuite
from ragtune.eval.harness.backends import Backend, HttpBackend, InProcessBackend
from ragtune.eval.harness.baselines import with_baselines
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.freshness import freshness_markdown, run_freshness
from ragtune.eval.harness.labels import label_markdown, label_report
from ragtune.eval.harness.latency import LatencySample, latency_items, run_latency, summarize_latency, timed_arms
from ragtune.eval.harness.load import HttpLoadTarget, LoadTarget, load_doc, loadable, run_load, serve_locally
from ragtune.eval.harness.loaders import load_eval_set, seeded_sample
from ragtune.eval.harness.manifest import adapter_hashes, dataset_hash, manifest
from ragtune.eval.harness.report import ReportExtras, write_report
from ragtune.eval.harness.runner import (
    Journal,
    Record,
    RunSettings,
    Scoring,
    check_run_key,
    run_arms,
    summarize,
)


@dataclass
class EvalRun:
    json_path: Path
    md_path: Path
    records: list[Record]
    summary: dict[str, dict[str, Any]]


def _finished_by_all(records: list[Record], arms: list[str]) -> set[str]:
    """Question ids every arm has a record for (all of them unless a deadline stopped the run)."""
    by_arm = {a: {r.id for r in records if r.arm == a} for a in arms}
    return set.intersection(*by_arm.values()) if by_arm else set()


def baseline_sections(records: list[Record], notes: list[str]) -> dict[str, str]:
    """Report sections on what the baselines are and, for a label task, what each arm predicts."""
    sections: dict[str, str] = {}
    if notes:
        sections["Baselines"] = "\n".join(f"- {n}" for n in notes)
    labels = label_report(records)
    if labels is not None:
        sections["Label task"] = label_markdown(labels)
    return sections


def latency_pass(
    config: Config,
    backend: Backend,
    items: list[EvalItem],
    arms: list[ArmSpec],
    out_dir: Path,
    seed: int,
    pin: str | None,
    progress: bool,
) -> list[LatencySample]:
    """The interleaved single-request sample (eval/harness/latency.py), kept in latency.jsonl: a resumed
    run reuses a complete sample and redoes a partial one whole, so its pairs share one time window."""
    n = config.eval.latency_samples
    chosen = latency_items(items, None if n == "all" else n, seed)
    path = out_dir / "latency.jsonl"
    want = {(a.name, it.id) for a in timed_arms(arms) for it in chosen}
    if path.is_file():
        old = [LatencySample.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]
        if {(s.arm, s.id) for s in old} == want:
            return old
    timed = run_latency(backend, chosen, arms, seed, pin, progress)
    path.write_text("".join(s.model_dump_json() + "\n" for s in timed))
    return timed


@contextlib.contextmanager
def load_target(backend: Backend) -> Iterator[tuple[LoadTarget, str]]:
    """A streaming client for the backend's server: the endpoint's, or the pipeline served on loopback
    (so concurrency goes through the serving scheduler); with a description for the report."""
    if isinstance(backend, HttpBackend):
        target = HttpLoadTarget(backend.url, backend.token, backend.load_api, backend.load_model)
        yield target, f"{backend.url} ({backend.load_api} API)"
    elif isinstance(backend, InProcessBackend):
        with serve_locally(backend.pipeline) as url:
            yield HttpLoadTarget(url), "the pipeline served locally (ragtune serve)"
    else:
        raise ConfigError(f"--load needs an in-process or HTTP backend, not {backend.name}")


def load_pass(
    config: Config, backend: Backend, levels: list[int], items: list[EvalItem], arms: list[ArmSpec], pin: str | None
) -> dict[str, Any]:
    """Every timed arm at every level (eval/harness/load.py); report.json's `load`."""
    requests = config.eval.load_requests
    with load_target(backend) as (target, where):
        table, _ = run_load(target, [it.question for it in items], arms, levels, requests, pin)
    return load_doc(table, requests, where, loadable(arms)[1])


def suite_items(suite: EvalSuite, seed: int) -> list[EvalItem]:
    if suite.data is None:
        raise ConfigError("no eval data: give --data FILE (or `data:` in the suite file)")
    return seeded_sample(load_eval_set(suite.dataset, suite.data, suite.split, seed).items, suite.limit, seed)


def evaluate(
    config: Config,
    suite: EvalSuite,
    backend: Backend,
    out_dir: Path,
    items: list[EvalItem] | None = None,
    settings: RunSettings | None = None,
    title: str = "ragtune eval",
    extra_meta: dict[str, Any] | None = None,
) -> EvalRun:
    """Run (or resume) every arm of the suite on the same items and write the reports.

    `settings` gives progress, fresh, block and deadline; with a deadline, the reports cover the
    questions every arm finished by then (see `run_arms`). Scoring, pinning, the journal and the
    latency sample come from the suite and the config; the suite's `load` levels add the closed-loop run under load.
    """
    given = settings or RunSettings()
    fresh, progress = given.fresh, given.progress
    seed = suite.seed if suite.seed is not None else config.generation.seed
    items = items if items is not None else suite_items(suite, seed)
    scoring = Scoring.from_config(
        config,
        answer_regex=suite.answer_regex,
        format_regex=suite.format_regex,
        format_schema=suite.format_schema,
    )
    suite, baseline_notes = with_baselines(config, suite, items, backend, scoring.answer_regex)
    data_hash = dataset_hash(items)
    key = {
        "config_hash": config.digest(),
        "dataset_hash": data_hash,
        "arms": [a.model_dump(mode="json") for a in suite.arms],
        "scoring": scoring.model_dump(mode="json"),
        "backend": backend.name,
    }
    check_run_key(out_dir / "run.json", key, fresh)
    journal = Journal(out_dir / "records.jsonl")
    if fresh:
        journal.path.unlink(missing_ok=True)
        for name in ("freshness-before.jsonl", "freshness-after.jsonl", "latency.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
    run = replace(given, scoring=scoring, snapshot=suite.snapshot, journal=journal, latency_samples=0)
    records = run_arms(backend, items, suite.arms, config, run)
    planned = len(items)
    finished = _finished_by_all(records, [a.name for a in suite.arms])
    if len(finished) < planned:
        records = [r for r in records if r.id in finished]
        items = [it for it in items if it.id in finished]
    pin = next((r.snapshot for r in records if r.snapshot), suite.snapshot)
    timed = latency_pass(config, backend, items, suite.arms, out_dir, seed, pin, progress)
    summary = summarize(records, summarize_latency(timed))
    load_table = load_pass(config, backend, suite.load, items, suite.arms, pin) if suite.load else None
    sections = baseline_sections(records, baseline_notes)
    fresh_doc: dict[str, Any] | None = None
    if suite.update is not None:
        if not isinstance(backend, InProcessBackend):
            raise ConfigError("the freshness scenario applies the update in-process; run it without --endpoint")
        fr = run_freshness(backend, items, suite.arms, config, suite.update, out_dir, scoring, progress)
        sections["Freshness"] = f"Update {suite.update.name}: {fr['update']['summary']}\n\n" + freshness_markdown(
            fr["arms"]
        )
        fresh_doc = {k: v for k, v in fr.items() if k not in ("before", "after")}
    adapters = adapter_hashes(config.adapters_dir, [r.adapter for r in records])
    meta = manifest(
        config,
        {
            "snapshot": next((r.snapshot for r in records if r.snapshot), None),
            "adapters": adapters,
            "dataset": str(suite.data) if suite.data else None,
            "dataset_kind": suite.dataset,
            "dataset_hash": data_hash,
            "questions": len(items),
            "questions_planned": planned,
            "seed": seed,
            "backend": backend.name,
            "alpha": config.eval.alpha,
            "bootstrap_resamples": config.eval.bootstrap_resamples,
            **(extra_meta or {}),
        },
    )
    json_path, md_path = write_report(
        out_dir,
        summary,
        records,
        meta,
        title=title,
        sections=sections,
        extras=ReportExtras([a.model_dump(mode="json") for a in suite.arms], fresh_doc, timed, load_table),
    )
    return EvalRun(json_path, md_path, records, summary)
