"""`ragtune demo`: the whole story on the bundled sample domain, with no download.

ingest v1 -> tune the house-style adapter -> eval base/ft/rag/hybrid -> apply the v2 update ->
show which arms follow it -> report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ragtune.core.adapters import CARD_NAME, read_card
from ragtune.core.config import Config
from ragtune.core.sample import sample_path
from ragtune.eval.harness.data import evenly_spaced, load_items
from ragtune.eval.harness.freshness import as_of_before, freshness_markdown, freshness_table
from ragtune.eval.harness.report import ReportExtras, manifest, ms_cell, table, write_report
from ragtune.eval.harness.runner import Record, run_arm, summarize
from ragtune.retrieval.loaders import load_documents
from ragtune.serving.pipeline import Pipeline
from ragtune.tuning.data import data_hash, load_examples
from ragtune.tuning.trainer import train_adapter

ADAPTER = "house-style"
ARMS = ["base", "ft", "rag", "hybrid"]


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _rich_table(title: str, summary: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=title)
    for col in ("arm", "accuracy", "format", "hit@k", "latency n", "p50 ms", "p95 ms"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for arm, s in summary.items():
        cells = [_pct(s["accuracy"]), _pct(s["format"]), _pct(s["hit_at_k"]), str(s.get("latency_n", "–"))]
        t.add_row(arm, *cells, ms_cell(s, "p50_ms"), ms_cell(s, "p95_ms"))
    return t


def _freshness_rich(title: str, fresh: dict[str, dict[str, Any]]) -> Table:
    t = Table(title=title)
    for col in ("arm", "correct before (v1 facts)", "correct after (v2 facts)", "stale after", "followed"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for arm, f in fresh.items():
        t.add_row(arm, _pct(f["before"]), _pct(f["after"]), _pct(f["stale_after"]), "yes" if f["followed"] else "no")
    return t


def run_demo(config: Config, retrain: bool = False, limit: int | None = None, console: Console | None = None) -> Path:
    console = console or Console()
    t_start = time.time()
    config.workspace.mkdir(parents=True, exist_ok=True)

    console.rule("1. ingest the sample documents (version 1)")
    pipeline = Pipeline.from_config(config, with_index=False)
    from ragtune.retrieval.index import Index

    pipeline.index = Index.from_config(config)
    report = pipeline.index.upsert(load_documents([sample_path("docs", "v1")]))
    console.print(report.summary())

    console.rule("2. fine-tune the house-style adapter (LoRA)")
    examples = load_examples(sample_path("train.jsonl"))
    card_file = config.adapters_dir / ADAPTER / CARD_NAME
    reuse = (
        not retrain
        and card_file.is_file()
        and read_card(card_file.parent).data_hash == data_hash(examples)
        and read_card(card_file.parent).base_model == config.models.generator
    )
    if reuse:
        console.print(f"adapter '{ADAPTER}' already trained on this data; reusing it (--retrain to redo)")
    else:
        result = train_adapter(examples, ADAPTER, config)
        console.print(
            f"adapter written to {result.path} in {result.card.wall_time_s:.0f} s; metrics {result.card.metrics}"
        )
    card = read_card(config.adapters_dir / ADAPTER)

    console.rule("3. evaluate base / ft / rag / hybrid on the sample eval set")
    items = evenly_spaced(load_items(sample_path("eval.jsonl")), limit)
    records: list[Record] = []
    for arm in ARMS:
        records += run_arm(pipeline, items, arm, config, adapter=ADAPTER)
    summary = summarize(records)
    console.print(_rich_table(f"sample domain, {len(items)} questions, snapshot {pipeline.index.snapshot}", summary))

    console.rule("4. documents change: apply version 2 and see who follows")
    updates = load_items(sample_path("eval_update.jsonl"))
    updates = evenly_spaced(updates, max(4, limit // 4)) if limit and limit < len(updates) * 4 else updates
    before = [
        r
        for arm in ARMS
        for r in run_arm(pipeline, as_of_before(updates), arm, config, adapter=ADAPTER, desc=f"before {arm}")
    ]
    t0 = time.perf_counter()
    upd = pipeline.index.upsert(load_documents([sample_path("docs", "v2")]))
    update_s = time.perf_counter() - t0
    console.print(f"update: {upd.summary()} in {update_s:.1f} s")
    after = [r for arm in ARMS for r in run_arm(pipeline, updates, arm, config, adapter=ADAPTER, desc=f"after {arm}")]
    fresh = freshness_table(before, after)
    console.print(_freshness_rich(f"freshness: {len(updates)} questions whose answer changed", fresh))

    out = config.workspace / "demo-report"
    fresh_md = freshness_markdown(fresh)
    meta = manifest(
        config,
        {
            "snapshot_v1": report.snapshot,
            "snapshot_v2": upd.snapshot,
            "adapter": ADAPTER,
            "adapter_data_hash": card.data_hash,
            "adapter_val_loss": card.metrics.get("val_loss"),
            "update_ingest_s": round(update_s, 2),
            "wall_time_s": round(time.time() - t_start, 1),
        },
    )
    update = {"snapshot": upd.snapshot, "summary": upd.summary()}
    fresh_doc: dict[str, Any] = {"snapshot_before": report.snapshot, "update": update, "arms": fresh}
    _, md = write_report(  # statistics on the main run only; the freshness answers are in their own table
        out,
        summary,
        records,
        meta,
        title="ragtune demo: sample domain",
        sections={"Freshness": fresh_md, "Main table (plain)": table(summary)},
        extras=ReportExtras(freshness=fresh_doc),
    )
    console.rule("done")
    console.print(f"report: {md}  (wall time {time.time() - t_start:.0f} s)")
    ws = config.workspace
    console.print(
        "next:\n"
        f'  ragtune ask --workspace {ws} --mode hybrid "<a question about the sample product>"\n'
        f"  ragtune serve --workspace {ws}   # then POST /v1/answer, OpenAPI at http://127.0.0.1:8000/docs"
    )
    return md
