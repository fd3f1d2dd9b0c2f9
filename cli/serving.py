"""`ragtune ask|serve`: the serving commands."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ragtune.cli.options import OFF, ConfigFile, Workspace, check_store, console, load_cli_config
from ragtune.core.config import Mode

app = typer.Typer()


def _adapter_ref(pipeline: Any, ref: str | None) -> str | None:
    """A registered adapter's name as it is; a folder path (CLI only, never HTTP) checked, then loaded."""
    from pathlib import Path

    from ragtune.core.adapters import check_adapter_dir, is_adapter_name

    if ref is None or is_adapter_name(ref):
        return ref
    path = Path(ref).expanduser().resolve()
    check_adapter_dir(path)  # exists, is a PEFT adapter with weights: a clear error otherwise
    pipeline.load_adapter(path.name, path)
    return path.name


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    mode: Annotated[
        Mode | None, typer.Option("--mode", "-m", help="Answer mode.", show_default="serving.default_mode")
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option(
            "--adapter",
            help="Adapter name for ft/hybrid, or a PEFT adapter folder path.",
            show_default="serving.default_adapter or the newest",
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("-k", min=1, max=50, help="Chunks to retrieve.", show_default="retrieval.top_k")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole answer record as JSON.", show_default=OFF)
    ] = False,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Answer one question, streaming the text, then the citations and timings."""
    from ragtune.core.config import check_mode
    from ragtune.core.types import Answer
    from ragtune.serving.pipeline import Pipeline

    cfg = load_cli_config(workspace, config)
    mode = check_mode(mode or cfg.serving.default_mode)
    check_store(cfg)  # a corrupt index fails now, not after the model has loaded
    pipeline = Pipeline.from_config(cfg)
    adapter = _adapter_ref(pipeline, adapter)
    if as_json:
        print(pipeline.answer(question, mode=mode, adapter=adapter, top_k=top_k).model_dump_json(indent=2))
        return
    final: Answer | None = None
    for piece in pipeline.stream(question, mode=mode, adapter=adapter, top_k=top_k):
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
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address.", show_default="serving.host: 127.0.0.1")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port.", show_default="serving.port: 8000")] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, max=64, help="Worker processes.", show_default="serving.workers: 1"),
    ] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Serve the HTTP API and the chat page (OpenAPI at /docs); loopback only unless API keys are set."""
    from ragtune.serving.workers import plan_bind, run

    cfg = load_cli_config(workspace, config)
    check_store(cfg)
    bind = plan_bind(cfg, host, port, workers)
    if bind.note:
        console.print(f"note: {bind.note}", style="yellow")
    console.print(f"serving on http://{bind.host}:{bind.port} with {bind.workers} worker(s)", style="dim")
    run(cfg, config, bind)
