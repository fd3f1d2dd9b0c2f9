"""`ragtune tune` and `ragtune adapters ...`: the tuning commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ragtune.core.cli_options import ConfigFile, Workspace, console, load_cli_config
from ragtune.core.errors import RagtuneError

app = typer.Typer()
adapters_app = typer.Typer(help="List and inspect trained adapters.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


@app.command()
def tune(
    data: Annotated[Path, typer.Option("--data", help="JSONL {question, answer, context?, title?, doc_id?}.")],
    name: Annotated[str, typer.Option("--name", help="Adapter name: written to WORKSPACE/adapters/NAME.")],
    epochs: Annotated[float | None, typer.Option("--epochs", help="Overrides tuning.epochs.")] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Fine-tune a LoRA adapter on question/answer pairs (loss on answers only)."""
    from ragtune.tuning.data import load_examples
    from ragtune.tuning.trainer import train_adapter

    cfg = load_cli_config(workspace, config)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise RagtuneError(f"adapter name '{name}' may use letters, digits, '-' and '_' only")
    result = train_adapter(load_examples(data), name, cfg, epochs=epochs)
    console.print(f"adapter '{name}' written to {result.path}")
    console.print(json.dumps(result.card.metrics))


@adapters_app.command("list")
def adapters_list(workspace: Workspace = None, config: ConfigFile = None) -> None:
    """Adapters in the workspace with their validation loss."""
    from ragtune.core.adapters import list_adapters

    cards = list_adapters(load_cli_config(workspace, config).adapters_dir)
    if not cards:
        console.print("no adapters yet: train one with `ragtune tune`")
    for c in cards:
        console.print(f"{c.name}\tbase={c.base_model}\tval_loss={c.metrics.get('val_loss')}\t{c.created_at}")


@adapters_app.command("show")
def adapters_show(name: str, workspace: Workspace = None, config: ConfigFile = None) -> None:
    """Print an adapter's card."""
    from ragtune.core.adapters import adapter_path, read_card

    print(read_card(adapter_path(load_cli_config(workspace, config).adapters_dir, name)).model_dump_json(indent=2))
