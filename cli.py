"""`ragtune` command line. Each subsystem owns its commands (`*/commands.py`); this file joins them.
User mistakes print one line and exit with status 2."""

from __future__ import annotations

import sys

import typer

from ragtune.core.errors import RagtuneError
from ragtune.eval.commands import app as eval_commands
from ragtune.eval.verdict_command import app as verdict_commands
from ragtune.retrieval.commands import app as retrieval_commands
from ragtune.serving.commands import app as serving_commands
from ragtune.tuning.commands import app as tuning_commands

app = typer.Typer(
    help="Fine-tune, retrieve, or both: build a domain chatbot and measure which setup wins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for commands in (retrieval_commands, tuning_commands, serving_commands, eval_commands, verdict_commands):
    app.add_typer(commands)


def main() -> None:
    try:
        app()
    except RagtuneError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")  # one line, never wrapped
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
