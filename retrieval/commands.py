"""`ragtune ingest|delete|search|index`: the retrieval commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ragtune.core.cli_options import ConfigFile, Workspace, console, load_cli_config
from ragtune.core.config import Config
from ragtune.core.errors import RagtuneError

app = typer.Typer()


def _index(cfg: Config):  # noqa: ANN202 - lazy import keeps --help fast
    from ragtune.retrieval.index import Index

    return Index(cfg.index_dir, cfg.retrieval, cfg.models.embedder)


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Folders of .txt/.md files, single files, or JSONL {id, text, title?, metadata?}."),
    ],
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Add or update documents: unchanged ones cost nothing, changed ones replace their chunks."""
    from ragtune.retrieval.loaders import load_documents

    cfg = load_cli_config(workspace, config)
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
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Remove documents and their chunks from the index."""
    console.print(_index(load_cli_config(workspace, config)).delete(doc_ids).summary())


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many hits.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Dense search over the index."""
    hits = _index(load_cli_config(workspace, config)).search(query, k)
    if as_json:
        print(json.dumps([h.model_dump() for h in hits], indent=2))
        return
    if not hits:
        console.print("no hits (is the index empty? run `ragtune ingest`)")
    for h in hits:
        console.print(f"[bold]{h.rank}. {h.chunk.title}[/] ({h.chunk.doc_id}#{h.chunk.id}, {h.score:.3f})")
        console.print("   " + h.chunk.text[:200].replace("\n", " "))


@app.command("index")
def index_stats(workspace: Workspace = None, config: ConfigFile = None) -> None:
    """Show the current snapshot, document and chunk counts, and past snapshots."""
    ix = _index(load_cli_config(workspace, config))
    print(json.dumps({**ix.stats(), "snapshots": ix.store.snapshots()}, indent=2))
