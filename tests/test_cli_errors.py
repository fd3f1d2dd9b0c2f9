"""The CLI error contract (issue 22): every command ends a user mistake with one line naming the file
(and line), exit status 2, and no traceback unless `--debug` or RAGTUNE_DEBUG=1 asks for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.core.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the shared bad-input table
from untrusted_cases import CLI_CASES, _files, case_argv, cli_problems, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad-inputs")
    _files(path)
    return path


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.name)
def test_a_bad_input_is_one_line_and_exit_2(root: Path, case):
    """Commands that would load a model are run with a config naming models that do not exist: the
    error must be about the input, so the input was checked before any model was loaded."""
    outcome = run_cli(case_argv(case, root))
    assert not cli_problems(case, outcome), (cli_problems(case, outcome), outcome.stderr)


def test_a_non_utf8_file_names_its_line_and_byte(root: Path):
    out = run_cli(["eval", "--data", str(root / "latin1.jsonl"), "--workspace", str(root / "ws")])
    assert "latin1.jsonl:2: not UTF-8 text" in out.stderr and "at byte 106" in out.stderr
    assert "save the file as UTF-8" in out.stderr


def test_debug_shows_the_traceback(root: Path, monkeypatch: pytest.MonkeyPatch):
    argv = ["index", "--workspace", str(root / "corrupt")]
    with pytest.raises(DataError, match="store.sqlite"):
        main(["--debug", *argv])
    monkeypatch.setenv("RAGTUNE_DEBUG", "1")
    with pytest.raises(DataError):
        main(argv)
    monkeypatch.setenv("RAGTUNE_DEBUG", "0")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_the_console_script_keeps_the_contract(root: Path):
    """The real process: one line on stderr, status 2, no traceback; with --debug the traceback."""
    cmd = [sys.executable, "-m", "ragtune.cli", "index", "--workspace", str(root / "corrupt")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "corrupt/index/store.sqlite" in r.stderr
    r = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr
