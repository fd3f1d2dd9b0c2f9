"""`ragtune tune` and `ragtune adapters list|show|merge`: the tuning commands.

`--raft` and `--objective causal-lm` read the index: this module opens retrieval's `Index` (lazily) and
hands it to tuning, whose library code only sees the `SearchIndex` protocol.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ragtune.cli.options import OFF, ConfigFile, Workspace, check_store, console, load_cli_config
from ragtune.core.config import Config
from ragtune.core.errors import DataError, RagtuneError

app = typer.Typer()
adapters_app = typer.Typer(help="List, inspect and merge trained adapters.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


def _index(cfg: Config) -> Any:
    from ragtune.retrieval.index import Index, index_exists

    if not index_exists(cfg):
        raise DataError(f"no index in {cfg.workspace}: run `ragtune ingest PATH` first")
    check_store(cfg)
    return Index.from_config(cfg)


def _corpus(index: Any) -> list[str]:
    docs = [index.get_document(d) for d in index.document_ids()]
    return [f"{d.title}\n{d.text}" if d.title else d.text for d in docs]


ACCELERATE_FLAG = "--accelerate-config"


def accelerate_command(config_file: Path, argv: list[str]) -> list[str]:
    """`accelerate launch --config_file FILE -m ragtune.cli` + this command's arguments without the flag,
    run by this interpreter (so the same environment): DeepSpeed, FSDP or multi-GPU come from the file."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == ACCELERATE_FLAG:
            skip = True
        elif not arg.startswith(f"{ACCELERATE_FLAG}="):
            args.append(arg)
    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file", str(config_file)]
    return [*launch, "-m", "ragtune.cli", *args]


def _relaunch(config_file: Path) -> None:
    if not config_file.is_file():
        raise RagtuneError(f"accelerate config file not found: {config_file}")
    argv = sys.argv[1:]
    if not any(a == ACCELERATE_FLAG or a.startswith(f"{ACCELERATE_FLAG}=") for a in argv):  # not from a shell
        raise RagtuneError("--accelerate-config re-runs the `ragtune tune` command line; call it from the shell")
    cmd = accelerate_command(config_file, argv)
    console.print("running: " + " ".join(cmd), soft_wrap=True, highlight=False)
    code = subprocess.run(cmd, check=False).returncode
    if code:
        raise typer.Exit(code)


def _init_adapter(cfg: Config, ref: str | None) -> Path | None:
    if ref is None:
        return None
    from ragtune.core.adapters import adapter_path

    path = Path(ref)
    return path if path.is_dir() else adapter_path(cfg.adapters_dir, ref)


@app.command()
def tune(  # noqa: PLR0913 - each parameter is a command-line option
    name: Annotated[str, typer.Option("--name", help="Adapter name: written to WORKSPACE/adapters/NAME.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="JSONL/CSV or a saved `datasets` folder: {question, answer, context?, doc_id?|group?}, "
            "{instruction, input?, output} or {messages}. Not needed with --objective causal-lm.",
            show_default="none",
        ),
    ] = None,
    epochs: Annotated[
        float | None, typer.Option("--epochs", help="Passes over the data.", show_default="tuning.epochs")
    ] = None,
    raft: Annotated[
        bool, typer.Option("--raft", help="Contexts from the live index: gold kept with p.", show_default=OFF)
    ] = False,
    raft_p: Annotated[
        float | None,
        typer.Option("--raft-p", help="Share of RAFT rows keeping the gold passage.", show_default="tuning.raft_p"),
    ] = None,
    raft_k: Annotated[
        int | None, typer.Option("--raft-k", help="Passages per RAFT row.", show_default="tuning.raft_k")
    ] = None,
    objective: Annotated[
        Literal["sft", "causal-lm"] | None,
        typer.Option(
            "--objective", help="sft (answers) or causal-lm (indexed corpus text).", show_default="tuning.objective"
        ),
    ] = None,
    method: Annotated[
        Literal["lora", "full"] | None,
        typer.Option("--method", help="LoRA adapter or full weights.", show_default="tuning.method"),
    ] = None,
    init_adapter: Annotated[
        str | None,
        typer.Option("--from", help="Continue training this adapter (name or folder).", show_default="none"),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after this many steps.", show_default="the epochs'")
    ] = None,
    accelerate_config: Annotated[
        Path | None,
        typer.Option(
            ACCELERATE_FLAG,
            help="Re-run this command under `accelerate launch --config_file FILE` (multi-GPU, DeepSpeed, FSDP).",
            show_default="none: this process",
        ),
    ] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Fine-tune (LoRA or full) with loss on answers only; writes the model and its adapter_card.json."""
    from ragtune.tuning.data import load_examples
    from ragtune.tuning.trainer import train_adapter

    if accelerate_config is not None:
        _relaunch(accelerate_config)
        return

    if not name.replace("-", "").replace("_", "").isalnum():
        raise RagtuneError(f"adapter name '{name}' may use letters, digits, '-' and '_' only")
    tuning = {"objective": objective, "method": method, "raft_p": raft_p, "raft_k": raft_k}
    cfg = load_cli_config(workspace, config, tuning={k: v for k, v in tuning.items() if v is not None})
    snapshot: str | None = None
    corpus: list[str] | None = None
    examples = []
    if cfg.tuning.objective == "causal-lm":
        if raft:
            raise RagtuneError("--raft builds question/answer examples; it does not combine with causal-lm")
        corpus = _corpus(_index(cfg))
        snapshot = _index(cfg).snapshot
    else:
        if data is None:
            raise RagtuneError("--data is required (unless --objective causal-lm)")
        examples = load_examples(data)
        if raft:
            from ragtune.tuning.raft import RaftReport, RaftSettings, build_raft_examples

            report = RaftReport()
            examples = build_raft_examples(examples, _index(cfg), RaftSettings.from_tuning(cfg.tuning), report=report)
            snapshot = report.snapshot
            for line in report.lines():
                console.print(line)
    result = train_adapter(
        examples,
        name,
        cfg,
        epochs=epochs,
        init_adapter=_init_adapter(cfg, init_adapter),
        corpus=corpus,
        snapshot=snapshot,
        max_steps=max_steps,
        extra_card={"hyperparameters": {"raft": raft}} if raft else None,
    )
    console.print(f"'{name}' written to {result.path}")
    console.print(json.dumps(result.card.metrics))


@adapters_app.command("list")
def adapters_list(workspace: Workspace = None, config: ConfigFile = None) -> None:
    """Adapters in the workspace with their validation loss."""
    from ragtune.core.adapters import list_adapters

    cards = list_adapters(load_cli_config(workspace, config).adapters_dir)
    if not cards:
        console.print("no adapters yet: train one with `ragtune tune`")
    for c in cards:
        console.print(
            f"{c.name}\tbase={c.base_model}\tval_loss={c.metrics.get('val_loss')}\t"
            f"snapshot={c.snapshot or '-'}\t{c.created_at}",
            highlight=False,
            soft_wrap=True,
        )


@adapters_app.command("show")
def adapters_show(name: str, workspace: Workspace = None, config: ConfigFile = None) -> None:
    """Print an adapter's card."""
    from ragtune.core.adapters import adapter_path, read_card

    print(read_card(adapter_path(load_cli_config(workspace, config).adapters_dir, name)).model_dump_json(indent=2))


@adapters_app.command("merge")
def adapters_merge(
    name: str,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where the merged model goes.", show_default="WORKSPACE/models/NAME-merged"),
    ] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Fold the adapter into the base model; serve it by setting models.generator to the folder."""
    from ragtune.tuning.merge import merge_adapter

    path = merge_adapter(load_cli_config(workspace, config), name, out)
    console.print(f"merged model written to {path}; serve it with models.generator: {path}", soft_wrap=True)
