"""`ragtune eval|demo`: the evaluation commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragtune.core.cli_options import ConfigFile, Workspace, check_mode, console, load_cli_config
from ragtune.core.errors import RagtuneError

app = typer.Typer()


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Option("--data", help="JSONL {id, question, answers, doc_ids?}.")],
    arms: Annotated[
        str | None, typer.Option("--arms", help="Comma-separated modes [default: eval.arms, all four].")
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="Adapter for ft/hybrid arms.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json and report.md.")] = Path("eval-out"),
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N questions.")] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Run each arm on the same questions and snapshot; write report.json and report.md."""
    from ragtune.eval.data import load_items
    from ragtune.eval.report import manifest, write_report
    from ragtune.eval.runner import run_arm, summarize
    from ragtune.serving.pipeline import Pipeline

    cfg = load_cli_config(workspace, config)
    chosen = arms.split(",") if arms is not None else list(cfg.eval.arms)
    arm_list = [check_mode(a.strip()) for a in chosen if a.strip()]
    if not arm_list:
        raise RagtuneError("--arms is empty")
    items = load_items(data)[:limit]
    pipeline = Pipeline.from_config(cfg)
    records = [r for arm in arm_list for r in run_arm(pipeline, items, arm, cfg, adapter)]
    summary = summarize(records)
    snap = pipeline.index.snapshot if pipeline.index else None
    _, md = write_report(out, summary, records, manifest(cfg, {"snapshot": snap, "data": str(data)}))
    console.print(md.read_text().split("\n## Manifest")[0])


@app.command()
def demo(
    retrain: Annotated[bool, typer.Option("--retrain", help="Train the adapter even if one fits.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=4, help="Eval questions, spread over the set (160 = all of them).")
    ] = 96,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """The whole story on the bundled sample domain: ingest, tune, eval 4 arms, update, report."""
    from ragtune.eval.demo import run_demo

    run_demo(load_cli_config(workspace, config), retrain=retrain, limit=limit, console=console)
