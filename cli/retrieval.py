"""`ragtune ingest|sync|delete|search|index`: the retrieval commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ragtune.cli.options import OFF, ConfigFile, Workspace, check_store, console, load_cli_config
from ragtune.core.config import Config, SearchMode
from ragtune.core.errors import RagtuneError

app = typer.Typer()
index_app = typer.Typer(help="Show the index: current snapshot and counts; `snapshots` lists kept snapshots.")
app.add_typer(index_app, name="index")


def _index(cfg: Config):  # noqa: ANN202 - lazy import keeps --help fast
    from ragtune.retrieval.index import Index

    check_store(cfg)
    return Index.from_config(cfg)


def _warn(errors: list[str]) -> None:
    for err in errors:
        console.print(f"[yellow]skipped[/] {err}", highlight=False, soft_wrap=True)


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Folders or files: .txt, .md, .html, .pdf, .csv, or JSONL {id, text, title?, metadata?}."),
    ],
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Add or update documents: unchanged ones cost nothing, changed ones replace their chunks.

    A bad file (undecodable, empty, malformed) is reported and skipped; the rest still goes in."""
    from ragtune.retrieval.loaders import SUPPORTED_TEXT, load_paths

    cfg = load_cli_config(workspace, config)
    loaded = load_paths(paths, cfg.retrieval)  # retrieval.max_file_bytes, max_ingest_bytes
    if not loaded.documents:
        if loaded.errors:
            raise RagtuneError("; ".join(loaded.errors))
        raise RagtuneError(f"no documents found in {', '.join(map(str, paths))} ({SUPPORTED_TEXT})")
    _warn(loaded.errors)
    report = _index(cfg).upsert(loaded.documents)
    console.print(
        report.summary() if report.changed else f"nothing changed ({len(report.unchanged)} documents up to date)"
    )


@app.command()
def sync(
    folder: Annotated[Path, typer.Argument(help="The folder to mirror: adds, edits, renames and deletions.")],
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Make the index mirror FOLDER; files whose bytes did not change are not even read."""
    from ragtune.retrieval.sync import sync_folder

    report = sync_folder(_index(load_cli_config(workspace, config)), folder)
    _warn(report.errors)
    if not report.changed:
        console.print(f"nothing changed ({len(report.unchanged)} documents up to date)")
        return
    console.print(report.summary())
    for old, new in report.renamed:
        console.print(f"renamed {old} -> {new}", highlight=False)


@app.command()
def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids to remove.")],
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Remove documents and their chunks from the index."""
    console.print(_index(load_cli_config(workspace, config)).delete(doc_ids).summary())


def _filter_value(item: str, value: str) -> Any:
    """A JSON value when it parses; plain text otherwise, unless it is meant as JSON (an object or list)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        if value.lstrip()[:1] in ("{", "["):
            raise RagtuneError(f"--filter '{item}': not valid JSON ({exc.msg}, column {exc.colno})") from None
        return value


def _parse_filters(raw: list[str] | None) -> dict[str, Any] | None:
    """`key=value` pairs; a key given twice matches either value; values are JSON when they parse.
    Checked against the filter grammar here, before the index or the embedder is opened."""
    from ragtune.retrieval.filters import parse_filters

    if not raw:
        return None
    out: dict[str, list[Any]] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RagtuneError(f"--filter '{item}': use key=value")
        out.setdefault(key, []).append(_filter_value(item, value))
    filters = {k: v[0] if len(v) == 1 else v for k, v in out.items()}
    try:
        parse_filters(filters)
    except RagtuneError as exc:
        raise RagtuneError(f"--filter: {exc}") from None
    return filters


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many hits.")] = 5,
    mode: Annotated[
        SearchMode | None, typer.Option("--mode", help="Ranking.", show_default="retrieval.search_mode")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="key=value on document metadata; repeatable.", show_default="no filter"),
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option("--snapshot", help="Search a kept snapshot instead.", show_default="current")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.", show_default=OFF)] = False,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Search the index: dense (FAISS), lexical (BM25) or hybrid (rank fusion)."""
    parsed = _parse_filters(filters)
    ix = _index(load_cli_config(workspace, config))
    hits = ix.search(query, k, mode=mode, filters=parsed, snapshot=snapshot)
    if as_json:
        print(json.dumps([h.model_dump() for h in hits], indent=2))
        return
    if not hits:
        console.print("no hits (is the index empty? run `ragtune ingest`)")
    for h in hits:
        console.print(f"[bold]{h.rank}. {h.chunk.title}[/] ({h.chunk.doc_id}#{h.chunk.id}, {h.score:.3f})")
        console.print("   " + h.chunk.text[:200].replace("\n", " "))


@index_app.callback(invoke_without_command=True)
def index_stats(ctx: typer.Context, workspace: Workspace = None, config: ConfigFile = None) -> None:
    """Show the current snapshot, document and chunk counts, and the kept snapshots."""
    if ctx.invoked_subcommand is not None:
        return
    ix = _index(load_cli_config(workspace, config))
    print(json.dumps({**ix.stats(), "snapshots": ix.snapshots()}, indent=2))


@index_app.command("snapshots")
def snapshots(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.", show_default=OFF)] = False,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """List the kept snapshots (oldest first); pin one with `search --snapshot ID`."""
    ix = _index(load_cli_config(workspace, config))
    snaps = ix.snapshots()
    if as_json:
        print(json.dumps(snaps, indent=2))
        return
    current = ix.snapshot
    for s in snaps:
        when = datetime.fromtimestamp(s["created_at"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = " (current)" if s["id"] == current else ""
        console.print(f"{s['id']}  {when} UTC  {s['documents']} documents  {s['chunks']} chunks{mark}")
    if not snaps:
        console.print("no snapshots yet (run `ragtune ingest`)")


@index_app.command("migrate")
def migrate(
    to: Annotated[Literal["postgres", "embedded"], typer.Option("--to", help="Backend to copy into.")],
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn", help="PostgreSQL connection string.", show_default="retrieval.dsn / RAGTUNE_RETRIEVAL__DSN"
        ),
    ] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Copy the index to the other backend, vectors included (nothing is embedded again).

    `--to postgres` copies the workspace's embedded index into the (empty) database at `--dsn`;
    `--to embedded` copies the PostgreSQL index into the workspace, e.g. for a local copy.
    """
    from ragtune.retrieval.index import Index
    from ragtune.retrieval.pg_index import PgIndex

    cfg = load_cli_config(workspace, config)
    url = dsn or (cfg.retrieval.dsn.get_secret_value() if cfg.retrieval.dsn else None)
    if to not in ("postgres", "embedded"):
        raise RagtuneError(f"--to {to!r}: choose postgres or embedded")
    if not url:
        raise RagtuneError("give --dsn (or set retrieval.dsn / RAGTUNE_RETRIEVAL__DSN)")
    embedded = Index(cfg.index_dir, cfg.retrieval, cfg.models.embedder)
    remote = PgIndex(url, cfg.retrieval, cfg.models.embedder)
    source, target = (embedded, remote) if to == "postgres" else (remote, embedded)
    snapshot = target.copy_from(source)
    stats = target.stats()
    console.print(
        f"copied {stats['documents']} documents, {stats['chunks']} chunks to {to} (snapshot {snapshot})",
        highlight=False,
    )
