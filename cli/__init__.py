"""`ragtune` command line: one module per group of commands (`cli/*.py`); this file joins them.
User mistakes print one line and exit with status 2."""

from __future__ import annotations

import sys

import typer

from ragtune.cli.demo import app as demo_commands
from ragtune.cli.eval import app as eval_commands
from ragtune.cli.retrieval import app as retrieval_commands
from ragtune.cli.serving import app as serving_commands
from ragtune.cli.tuning import app as tuning_commands
from ragtune.cli.verdict import app as verdict_commands
from ragtune.core.errors import RagtuneError

app = typer.Typer(
    help="Fine-tune, retrieve, or both: build a domain chatbot and measure which setup wins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# the order here is the order `ragtune --help` lists the commands in
for commands in (retrieval_commands, tuning_commands, serving_commands, demo_commands, eval_commands, verdict_commands):
    app.add_typer(commands)


def main() -> None:
    try:
        app()
    except RagtuneError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")  # one line, never wrapped
        raise SystemExit(2) from None
