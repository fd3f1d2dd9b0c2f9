"""The CLI as a user meets it: --help everywhere, one clear line and exit 2 on a mistake."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_user_mistakes_are_one_line_and_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n{broken\n")
    cases = [
        (["ingest", str(tmp_path / "missing")], "path not found"),
        (["ingest", str(bad)], "bad.jsonl:2: malformed JSON"),
        (["ask", "hello", "--mode", "turbo"], "unknown mode 'turbo'"),
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
