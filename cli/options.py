"""Options and helpers shared by every command module, so each `cli/*.py` stays small.

`--help` shows every option's default. Typer prints a default itself only when it is a value; an
option whose default comes from the config (None here) names that key with `show_default="..."`,
and an off flag says `OFF`. Typer renders those as plain text: a `[default: ...]` written into the
help string would be parsed as Rich markup and vanish.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ragtune.core.config import Config, load_config
from ragtune.core.errors import DataError

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


_store: dict[str, Path] = {}  # the index database of the command's config, for error lines


def load_cli_config(workspace: Path | None, config: Path | None, **overrides: object) -> Config:
    """The effective config for a command: file, environment, then the flags the user set."""
    cfg = load_config(config, workspace=workspace, overrides={k: v for k, v in overrides.items() if v})
    _store["path"] = cfg.index_dir / "store.sqlite"
    return cfg


def last_index_store() -> Path | None:
    """The index database of the config a command loaded: an sqlite error is about this file."""
    return _store.get("path")


def check_store(cfg: Config) -> None:
    """Fail with one clear line, before any model loads, when the workspace's index database is not one
    (garbage bytes, a truncated or foreign file); a missing store is fine (it is created on first write)."""
    path = cfg.index_dir / "store.sqlite"
    if cfg.retrieval.backend == "postgres" or not path.is_file():
        return
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        return  # busy, or read-only WAL without its side files: the real open decides
    except sqlite3.DatabaseError as exc:
        raise DataError(
            f"{path}: not a readable index database ({exc}); move it away and run `ragtune ingest` to rebuild "
            "the index, or restore a backup"
        ) from None
