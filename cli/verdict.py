"""`ragtune verdict`: the measured "fine-tune, retrieve, or both" report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragtune.cli.options import OFF, ConfigFile, Workspace, console, load_cli_config
from ragtune.core.errors import RagtuneError

app = typer.Typer()
NEEDED = "none: needed unless --sample or --suite"


@app.command()
def verdict(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Eval JSONL {id, question, answers, doc_ids?}.", show_default=NEEDED),
    ] = None,
    train: Annotated[
        Path | None, typer.Option("--train", help="Training JSONL {question, answer, ...}.", show_default=NEEDED)
    ] = None,
    docs: Annotated[
        list[Path] | None,
        typer.Option("--docs", help="Documents: folder(s), files or JSONL; repeatable.", show_default=NEEDED),
    ] = None,
    update: Annotated[
        Path | None,
        typer.Option("--update", help="New versions of some documents, to measure update cost.", show_default="none"),
    ] = None,
    update_data: Annotated[
        Path | None,
        typer.Option(
            "--update-data",
            help="Eval JSONL about the changed facts (answers = new, stale_answers = old).",
            show_default="none",
        ),
    ] = None,
    sample: Annotated[
        bool,
        typer.Option("--sample", help="Use the bundled sample domain for every input not given.", show_default=OFF),
    ] = False,
    suite: Annotated[
        Path | None,
        typer.Option(
            "--suite",
            help="Verdict suite YAML declaring the inputs (or dataset: cmu_qa); docs/verdict.md.",
            show_default="none",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for verdict.md/.html/.json.")] = Path("verdict-out"),
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Train, index and evaluate base, few-shot, ft, rag and hybrid on your data; measure accuracy with
    confidence, latency, update cost, set-up cost and a learning curve; write a recommendation that
    cites every figure it rests on. Knobs: the `verdict` config section."""
    from ragtune.core.sample import sample_path
    from ragtune.eval.verdict.inputs import VerdictSuite, load_suite, load_verdict_data
    from ragtune.eval.verdict.run import run_verdict

    flags = any(v for v in (data, train, docs, update, update_data))
    if suite is not None:
        if flags or sample:
            raise RagtuneError("give either --suite or the input flags (--data, --train, --docs, ...), not both")
        spec = load_suite(suite)
    else:
        if sample:
            data = data or sample_path("eval.jsonl")
            train = train or sample_path("train.jsonl")
            docs = docs or [sample_path("docs", "v1")]
            update = update or sample_path("docs", "v2")
            update_data = update_data or sample_path("eval_update.jsonl")
        missing = [flag for flag, v in (("--data", data), ("--train", train), ("--docs", docs)) if not v]
        if missing:
            raise RagtuneError(f"missing {', '.join(missing)} (or pass --sample, or --suite FILE)")
        if update is not None and update_data is None:
            raise RagtuneError("--update needs --update-data: questions whose answers the update changes")
        spec = VerdictSuite(data=data, train=train, docs=docs or [], update=update, update_data=update_data)
    cfg = load_cli_config(workspace, config)
    run_verdict(cfg, load_verdict_data(spec), out, console)
