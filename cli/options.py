"""Options and helpers shared by every command module, so each `cli/*.py` stays small.

`--help` shows every option's default. Typer prints a default itself only when it is a value; an
option whose default comes from the config (None here) names that key with `show_default="..."`,
and an off flag says `OFF`. Typer renders those as plain text: a `[default: ...]` written into the
help string would be parsed as Rich markup and vanish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ragtune.core.config import Config, load_config

console = Console()

OFF = "off"  # the shown default of a flag that is off unless given


Workspace = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Folder holding the index and adapters.", show_default=".ragtune"),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (docs/configuration.md).", show_default="none"),
]


def load_cli_config(workspace: Path | None, config: Path | None, **overrides: object) -> Config:
    """The effective config for a command: file, environment, then the flags the user set."""
    return load_config(config, workspace=workspace, overrides={k: v for k, v in overrides.items() if v})
