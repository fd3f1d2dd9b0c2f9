"""`ragtune eval [compare]`: the evaluation commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ragtune.cli.options import OFF, ConfigFile, Workspace, check_store, console, load_cli_config
from ragtune.core.errors import ConfigError
from ragtune.eval.harness.arms import DatasetKind

app = typer.Typer()
eval_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
app.add_typer(eval_app, name="eval", help="Run arms on one eval set and report (or `eval compare A.json B.json`).")


@eval_app.callback()
def eval_cmd(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Eval data: JSONL {id, question, answers}.", show_default="the suite's data"),
    ] = None,
    suite_file: Annotated[
        Path | None, typer.Option("--suite", help="Suite YAML: data, arms, variants.", show_default="none")
    ] = None,
    dataset: Annotated[
        DatasetKind | None,
        typer.Option("--dataset", help="How to read --data.", show_default="the suite's, else jsonl"),
    ] = None,
    arms: Annotated[
        str | None,
        typer.Option("--arms", help="Comma-separated modes.", show_default="the suite's, else eval.arms"),
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option(
            "--adapter", help="Adapter for ft/hybrid arms.", show_default="serving.default_adapter or the newest"
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint", help="Evaluate a running server (POST URL/v1/answer) instead.", show_default="in-process"
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="RAGTUNE_TOKEN", help="Token for --endpoint.", show_default="none"),
    ] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Snapshot to pin.", show_default="current")] = None,
    update: Annotated[
        Path | None,
        typer.Option(
            "--update", help="Freshness: documents applied between a before and an after run.", show_default="none"
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for records and reports.")] = Path("eval-out"),
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="A seeded sample of N questions.", show_default="all")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Discard records of an earlier run in --out.", show_default=OFF)
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar per arm.")] = True,
    latency: Annotated[
        str | None,
        typer.Option(
            "--latency",
            help="Questions timed one request at a time, all arms interleaved: N or 'all'.",
            show_default="eval.latency_samples (32)",
        ),
    ] = None,
    load: Annotated[
        str | None,
        typer.Option(
            "--load",
            help="Also run each arm closed-loop at these concurrency levels (e.g. 1,4,8) through a server: "
            "throughput and TTFT/TPOT/e2e percentiles per level, load.png.",
            show_default="none",
        ),
    ] = None,
    load_api: Annotated[
        Literal["ragtune", "openai"],
        typer.Option("--load-api", help="API --load streams from at --endpoint: /v1/answer or /v1/chat/completions."),
    ] = "ragtune",
    load_model: Annotated[
        str | None,
        typer.Option(
            "--load-model", help="OpenAI `model` for every arm (--load-api openai).", show_default="ragtune-<mode>"
        ),
    ] = None,
    workspace: Workspace = None,
    config: ConfigFile = None,
) -> None:
    """Run each arm on the same questions, snapshot and seed; write report.json/.md/.html (resumable)."""
    if ctx.invoked_subcommand is not None:
        return
    from ragtune.eval.harness.arms import EvalSuite, arm, load_suite
    from ragtune.eval.harness.backends import Backend, HttpBackend, InProcessBackend
    from ragtune.eval.harness.load import parse_levels
    from ragtune.eval.harness.runner import RunSettings
    from ragtune.eval.harness.session import evaluate, suite_items

    cfg = load_cli_config(workspace, config)
    suite = load_suite(suite_file) if suite_file else EvalSuite(arms=[arm(a) for a in cfg.eval.arms])
    updates: dict[str, object] = {}
    if data is not None:
        updates["data"] = data
    if dataset is not None:
        updates["dataset"] = dataset
    if limit is not None:
        updates["limit"] = limit
    if snapshot is not None:
        updates["snapshot"] = snapshot
    if update is not None:
        updates["update"] = update
    if load is not None:
        updates["load"] = parse_levels(load)
    if arms is not None:
        chosen = [arm(a.strip()) for a in arms.split(",") if a.strip()]
        if not chosen:
            raise ConfigError("--arms is empty")
        updates["arms"] = chosen
    suite = EvalSuite.model_validate({**suite.model_dump(), **updates})
    if adapter:
        suite.arms = [arm(a, adapter) for a in suite.arms]
    if suite.seed is not None:
        cfg = load_cli_config(workspace, config, generation={**cfg.generation.model_dump(), "seed": suite.seed})
    if latency is not None:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"latency_samples": latency_option(latency)})})
    # read and check the questions before any model loads: bad data fails in a second, not a minute
    items = suite_items(suite, suite.seed if suite.seed is not None else cfg.generation.seed)
    backend: Backend
    if endpoint:
        backend = HttpBackend(
            endpoint, token, concurrency=cfg.generation.batch_size, load_api=load_api, load_model=load_model
        )
    else:
        from ragtune.serving.pipeline import Pipeline

        check_store(cfg)
        backend = InProcessBackend(Pipeline.from_config(cfg))
    run = evaluate(cfg, suite, backend, out, items=items, settings=RunSettings(fresh=fresh, progress=progress))
    console.print(run.md_path.read_text().split("\n## Manifest")[0])
    console.print(f"reports: {run.json_path.parent}/report.{{json,md,html}}")


def latency_option(value: str) -> int | Literal["all"]:
    """--latency: a count of questions, or 'all'."""
    if value.strip().lower() == "all":
        return "all"
    if not value.strip().isdigit():
        raise ConfigError(f"--latency takes a number of questions or 'all', not {value!r}")
    return int(value)


@eval_app.command("compare")
def compare_cmd(
    old: Annotated[Path, typer.Argument(help="The earlier report.json.")],
    new: Annotated[Path, typer.Argument(help="The later report.json.")],
    out: Annotated[Path | None, typer.Option("--out", help="Also write the comparison as markdown here.")] = None,
) -> None:
    """What changed between two runs: manifests, and paired tests per arm and metric."""
    from ragtune.eval.harness.compare import compare_reports

    _, md = compare_reports(old, new)
    if out is not None:
        out.write_text(md)
    console.print(md)
