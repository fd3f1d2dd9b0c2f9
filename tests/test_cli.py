"""The CLI as a user meets it: --help everywhere, one clear line and exit 2 on a mistake."""

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from ragtune.cli import app

runner = CliRunner()
COMMANDS = ["ingest", "delete", "search", "index", "tune", "ask", "serve", "eval", "demo", "adapters"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_explains_itself(cmd):
    r = runner.invoke(app, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output
    if cmd not in {"adapters"}:
        assert "--workspace" in r.output


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from ragtune.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.slow  # many CLI subprocesses (CI runs it; the local `make test` leaves it out)
def test_user_mistakes_are_one_line_and_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n{broken\n")
    cases = [
        (["ingest", str(tmp_path / "missing")], "path not found"),
        (["ingest", str(bad)], "bad.jsonl:2: malformed JSON"),
        (["eval", "--data", str(bad), "--arms", "base,warp"], "unknown mode 'warp'"),
        (["tune", "--data", str(tmp_path / "none.jsonl"), "--name", "x"], "training data not found"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((["ingest", str(empty)], "no documents found"))
    for args, needle in cases:
        r = _run(*args, "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and needle in r.stderr.replace("\n", ""), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_bad_choice_names_the_choices_and_exits_2(tmp_path: Path):
    r = _run("ask", "hello", "--mode", "turbo", "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'turbo' is not one of 'base', 'ft', 'rag', 'hybrid'" in " ".join(r.stderr.replace("│", " ").split())


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command and sub-command with the words that invoke it."""
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _commands(sub, (*path, name))
    return out


def test_help_shows_every_options_default():
    """Each optional option prints `[default: ...]` (the help once lost the ones written into its text to
    Rich markup, and options defaulting to a config key showed nothing)."""
    for path, cmd in _commands(typer.main.get_command(app)):
        options = [p for p in cmd.params if isinstance(p, click.Option) and not p.required and p.name != "help"]
        if not options:
            continue
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert r.exit_code == 0, path
        assert r.output.count("[default:") == len(options), (path, r.output)
        assert "[default: ()]" not in r.output


def test_help_shows_choices_and_config_defaults():
    ask = runner.invoke(app, ["ask", "--help"], env={"COLUMNS": "200"}).output
    assert "<base|ft|rag|hybrid>" in ask and "[default: (serving.default_mode)]" in ask
    assert "[default: (.ragtune)]" in ask and "[default: (retrieval.top_k)]" in ask
    search = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    assert "<dense|lexical|hybrid>" in search and "[default: 5]" in search
    migrate = runner.invoke(app, ["index", "migrate", "--help"], env={"COLUMNS": "200"}).output
    assert "<postgres|embedded>" in migrate
    assert "<jsonl|cmu_qa|scifact|hotpotqa>" in runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output


def test_ingest_search_roundtrip(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lamp.md").write_text("# Lamp Facts\n\nThe lamp battery lasts 31 hours.")
    ws = ["--workspace", str(tmp_path / "ws")]
    r = runner.invoke(app, ["ingest", str(docs), *ws])
    assert r.exit_code == 0 and "1 added" in r.output
    r = runner.invoke(app, ["ingest", str(docs), *ws])
    assert "nothing changed" in r.output
    r = runner.invoke(app, ["search", "battery", "--json", *ws])
    assert json.loads(r.output)[0]["chunk"]["doc_id"] == "lamp"
