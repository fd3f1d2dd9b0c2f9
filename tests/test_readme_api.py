"""README's Python example runs as written (in a fresh interpreter, in an empty folder), so the
notebook API it shows cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# trains or loads the language model (in process or in a subprocess): not in `make test-fast`
pytestmark = pytest.mark.model

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_one_python_example_using_the_public_api() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    assert "from ragtune import" in blocks[0]


@pytest.mark.slow  # a subprocess that loads the model (CI runs it; the local `make test` leaves it out)
def test_readme_python_example_runs(tmp_path: Path) -> None:
    code = python_blocks(README.read_text(encoding="utf-8"))[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 added, 0 updated, 0 unchanged, 0 deleted" in r.stdout
    assert "Tidemoss T4 Overview" in r.stdout  # among the rag answer's citations
    assert "'rag': 1.0" in r.stdout  # the question's document is retrieved
    assert (tmp_path / "my_eval" / "report.md").is_file()
    assert (tmp_path / "my_workspace" / "index").is_dir()
