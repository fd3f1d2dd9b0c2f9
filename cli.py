"""`ragtune` command line. Every command takes --workspace and --config; user mistakes print one
line and exit with status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ragtune.core.config import MODES, Config, load_config
from ragtune.core.errors import RagtuneError

app = typer.Typer(
    help="Fine-tune, retrieve, or both: build a domain chatbot and measure which setup wins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
adapters_app = typer.Typer(help="List and inspect trained adapters.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")
console = Console()

Workspace = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder holding the index and adapters [default: .ragtune].")
]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (see docs/).")]
WS_DEFAULT = None


def _cfg(workspace: Path | None, config: Path | None, **overrides: object) -> Config:
    return load_config(config, workspace=workspace, overrides={k: v for k, v in overrides.items() if v})


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise RagtuneError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    return mode


def _index(cfg: Config):  # noqa: ANN202 - lazy import keeps --help fast
    from ragtune.retrieval.index import Index

    return Index(cfg.index_dir, cfg.retrieval, cfg.models.embedder)


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Folders of .txt/.md files, single files, or JSONL {id, text, title?, metadata?}."),
    ],
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Add or update documents: unchanged ones cost nothing, changed ones replace their chunks."""
    from ragtune.retrieval.loaders import load_documents

    cfg = _cfg(workspace, config)
    docs = load_documents(paths)
    if not docs:
        raise RagtuneError(f"no documents found in {', '.join(map(str, paths))} (.txt, .md or .jsonl)")
    report = _index(cfg).upsert(docs)
    console.print(
        report.summary() if report.changed else f"nothing changed ({len(report.unchanged)} documents up to date)"
    )


@app.command()
def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids to remove.")],
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Remove documents and their chunks from the index."""
    console.print(_index(_cfg(workspace, config)).delete(doc_ids).summary())


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many hits.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Dense search over the index."""
    hits = _index(_cfg(workspace, config)).search(query, k)
    if as_json:
        print(json.dumps([h.model_dump() for h in hits], indent=2))
        return
    if not hits:
        console.print("no hits (is the index empty? run `ragtune ingest`)")
    for h in hits:
        console.print(f"[bold]{h.rank}. {h.chunk.title}[/] ({h.chunk.doc_id}#{h.chunk.id}, {h.score:.3f})")
        console.print("   " + h.chunk.text[:200].replace("\n", " "))


@app.command("index")
def index_stats(workspace: Workspace = WS_DEFAULT, config: ConfigFile = None) -> None:
    """Show the current snapshot, document and chunk counts, and past snapshots."""
    ix = _index(_cfg(workspace, config))
    print(json.dumps({**ix.stats(), "snapshots": ix.store.snapshots()}, indent=2))


@app.command()
def tune(
    data: Annotated[Path, typer.Option("--data", help="JSONL {question, answer, context?, title?, doc_id?}.")],
    name: Annotated[str, typer.Option("--name", help="Adapter name: written to WORKSPACE/adapters/NAME.")],
    epochs: Annotated[float | None, typer.Option("--epochs", help="Overrides tuning.epochs.")] = None,
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Fine-tune a LoRA adapter on question/answer pairs (loss on answers only)."""
    from ragtune.tuning.data import load_examples
    from ragtune.tuning.trainer import train_adapter

    cfg = _cfg(workspace, config)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise RagtuneError(f"adapter name '{name}' may use letters, digits, '-' and '_' only")
    result = train_adapter(load_examples(data), name, cfg, epochs=epochs)
    console.print(f"adapter '{name}' written to {result.path}")
    console.print(json.dumps(result.card.metrics))


@adapters_app.command("list")
def adapters_list(workspace: Workspace = WS_DEFAULT, config: ConfigFile = None) -> None:
    """Adapters in the workspace with their validation loss."""
    from ragtune.core.adapters import list_adapters

    cards = list_adapters(_cfg(workspace, config).adapters_dir)
    if not cards:
        console.print("no adapters yet: train one with `ragtune tune`")
    for c in cards:
        console.print(f"{c.name}\tbase={c.base_model}\tval_loss={c.metrics.get('val_loss')}\t{c.created_at}")


@adapters_app.command("show")
def adapters_show(name: str, workspace: Workspace = WS_DEFAULT, config: ConfigFile = None) -> None:
    """Print an adapter's card."""
    from ragtune.core.adapters import adapter_path, read_card

    print(read_card(adapter_path(_cfg(workspace, config).adapters_dir, name)).model_dump_json(indent=2))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    mode: Annotated[
        str | None, typer.Option("--mode", "-m", help="base | ft | rag | hybrid [default: serving.default_mode]")
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="Adapter for ft/hybrid (default: newest).")] = None,
    top_k: Annotated[int | None, typer.Option("-k", min=1, max=50, help="Chunks to retrieve.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer record as JSON.")] = False,
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Answer one question, streaming the text, then the citations and timings."""
    from ragtune.core.types import Answer
    from ragtune.serving.pipeline import Pipeline

    cfg = _cfg(workspace, config)
    mode = _mode(mode or cfg.serving.default_mode)
    pipeline = Pipeline.from_config(cfg)
    if as_json:
        print(pipeline.answer(question, mode, adapter, top_k).model_dump_json(indent=2))
        return
    final: Answer | None = None
    for piece in pipeline.stream(question, mode, adapter, top_k):
        if isinstance(piece, Answer):
            final = piece
        else:
            sys.stdout.write(piece)
            sys.stdout.flush()
    print()
    if final is not None:
        for c in final.citations:
            console.print(f"[{c.n}] {c.title} ({c.doc_id})", style="dim")
        t = final.timings
        console.print(
            f"mode={final.mode} adapter={final.adapter} snapshot={final.snapshot} "
            f"retrieve={t.retrieve_ms:.0f}ms ttft={t.ttft_ms:.0f}ms total={t.total_ms:.0f}ms",
            style="dim",
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 8000).")] = None,
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Serve the HTTP API (POST /v1/answer, GET /healthz; OpenAPI at /docs)."""
    import uvicorn

    from ragtune.serving.app import create_app
    from ragtune.serving.pipeline import Pipeline

    cfg = _cfg(workspace, config)
    app_ = create_app(Pipeline.from_config(cfg))
    uvicorn.run(app_, host=host or cfg.serving.host, port=port or cfg.serving.port)


@app.command("eval")
def eval_cmd(
    data: Annotated[Path, typer.Option("--data", help="JSONL {id, question, answers, doc_ids?}.")],
    arms: Annotated[
        str | None, typer.Option("--arms", help="Comma-separated modes [default: eval.arms, all four].")
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="Adapter for ft/hybrid arms.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json and report.md.")] = Path("eval-out"),
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N questions.")] = None,
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """Run each arm on the same questions and snapshot; write report.json and report.md."""
    from ragtune.eval.data import load_items
    from ragtune.eval.report import manifest, write_report
    from ragtune.eval.runner import run_arm, summarize
    from ragtune.serving.pipeline import Pipeline

    cfg = _cfg(workspace, config)
    arm_list = [_mode(a.strip()) for a in arms.split(",") if a.strip()] if arms is not None else list(cfg.eval.arms)
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
    workspace: Workspace = WS_DEFAULT,
    config: ConfigFile = None,
) -> None:
    """The whole story on the bundled sample domain: ingest, tune, eval 4 arms, update, report."""
    from ragtune.eval.demo import run_demo

    run_demo(_cfg(workspace, config), retrain=retrain, limit=limit, console=console)


def main() -> None:
    try:
        app()
    except RagtuneError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")  # one line, never wrapped
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
