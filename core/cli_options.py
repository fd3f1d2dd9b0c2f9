"""Options and helpers shared by every subsystem's commands, so each `*/commands.py` stays small."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ragtune.core.config import Config, load_config
from ragtune.core.config import check_mode as check_mode  # re-exported: the one mode check

console = Console()

Workspace = Annotated[
    Path | None, typer.Option("--workspace", "-w", help="Folder holding the index and adapters [default: .ragtune].")
]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (see docs/).")]


def load_cli_config(workspace: Path | None, config: Path | None, **overrides: object) -> Config:
    """The effective config for a command: file, environment, then the flags the user set."""
    return load_config(config, workspace=workspace, overrides={k: v for k, v in overrides.items() if v})
