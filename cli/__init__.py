"""`ragtune` command line: one module per group of commands (`cli/*.py`); this file joins them.

The error contract: a user mistake (bad or missing file, corrupt index, bad flag value) prints one
line, `error: <what>` naming the file (and line or byte) and what to do, and exits with status 2; a
bug prints one `internal error` line and exits with 1. `--debug` (or RAGTUNE_DEBUG=1) shows the
traceback instead.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import Annotated

import typer

from ragtune.cli.demo import app as demo_commands
from ragtune.cli.eval import app as eval_commands
from ragtune.cli.options import OFF, last_index_store
from ragtune.cli.retrieval import app as retrieval_commands
from ragtune.cli.serving import app as serving_commands
from ragtune.cli.tuning import app as tuning_commands
from ragtune.cli.verdict import app as verdict_commands
from ragtune.core.errors import RagtuneError

DEBUG_ENV = "RAGTUNE_DEBUG"
USER_ERROR, BUG = 2, 1

app = typer.Typer(
    help="Fine-tune, retrieve, or both: build a domain chatbot and measure which setup wins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# the order here is the order `ragtune --help` lists the commands in
for commands in (retrieval_commands, tuning_commands, serving_commands, demo_commands, eval_commands, verdict_commands):
    app.add_typer(commands)

_debug = {"on": False}


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Show tracebacks (also {DEBUG_ENV}=1).", show_default=OFF)
    ] = False,
) -> None:
    """Fine-tune, retrieve, or both: build a domain chatbot and measure which setup wins."""
    _debug["on"] = _debug["on"] or debug


def _store_error(exc: sqlite3.Error) -> str:
    where = last_index_store()
    return (
        f"{where or 'the index database'}: unreadable ({exc}); move it away and run `ragtune ingest` "
        "to rebuild the index, or restore a backup"
    )


def user_error(exc: BaseException) -> str | None:
    """The one line a user mistake deserves, or None when `exc` is a bug."""
    if isinstance(exc, RagtuneError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"input is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    if isinstance(exc, sqlite3.DatabaseError):
        return _store_error(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())  # never wrapped, never multi-line


def main(argv: list[str] | None = None) -> None:
    """The `ragtune` console script: runs the command, turning any error into one line and an exit status."""
    _debug["on"] = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        app(args=argv, prog_name="ragtune")
    except Exception as exc:  # the one place every error becomes a line
        if _debug["on"]:
            raise
        message = user_error(exc)
        if message is None:
            sys.stderr.write(
                f"internal error: {_one_line(f'{type(exc).__name__}: {exc}')} "
                f"(a bug: rerun with --debug for the traceback and report it)\n"
            )
            raise SystemExit(BUG) from None
        sys.stderr.write(f"error: {_one_line(message)}\n")
        raise SystemExit(USER_ERROR) from None
