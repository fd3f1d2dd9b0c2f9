"""`ragtune demo`: the whole story on the bundled sample domain."""

from __future__ import annotations

from typing import Annotated

import typer

from ragtune.cli.options import OFF, ConfigFile, Workspace, console, load_cli_config

app = typer.Typer()


@app.command()
def demo(
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Train the adapter even if one fits.", show_default=OFF)
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=4, help="Eval questions, spread over the set (160 = all of them).")
    ] = 96,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """The whole story on the bundled sample domain: ingest, tune, eval 4 arms, update, report."""
    from ragtune.eval.demo.run import run_demo

    run_demo(load_cli_config(workspace, config), retrain=retrain, limit=limit, console=console)
