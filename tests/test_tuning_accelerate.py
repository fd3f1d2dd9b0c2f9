"""`ragtune tune --accelerate-config FILE` re-runs the same command under `accelerate launch`: the
command it builds, the one-line error for a missing file, and a real one-process CPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragtune.cli.tuning import accelerate_command
from ragtune.core.adapters import read_card

# trains or loads the language model (in process or in a subprocess): not in `make test-fast`
pytestmark = pytest.mark.model

ACCELERATE_CPU = """\
compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
num_processes: 1
num_machines: 1
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
"""


def _tune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", "from ragtune.cli import main; main()", "tune", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_the_command_is_the_same_tune_under_accelerate_launch():
    argv = ["tune", "--name", "x", "--accelerate-config", "ds.yaml", "--data", "t.jsonl", "--accelerate-config=b"]
    cmd = accelerate_command(Path("ds.yaml"), argv)
    assert cmd[:2] == [sys.executable, "-m"]
    assert cmd[3:6] == ["launch", "--config_file", "ds.yaml"]
    assert cmd[6:] == ["-m", "ragtune.cli", "tune", "--name", "x", "--data", "t.jsonl"]


def test_a_missing_accelerate_config_is_one_line_and_exit_2(tmp_path: Path):
    r = _tune("--name", "x", "--data", "t.jsonl", "--accelerate-config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"error: accelerate config file not found: {tmp_path / 'nope.yaml'}"


@pytest.mark.slow
def test_a_one_process_cpu_accelerate_config_trains_an_adapter(tmp_path: Path):
    config = tmp_path / "accelerate.yaml"
    config.write_text(ACCELERATE_CPU)
    data = tmp_path / "train.jsonl"
    rows = [
        {"question": f"Battery life in mode {m}?", "answer": f"In mode {m}: 31 hours.", "group": f"g{m % 3}"}
        for m in range(6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = tmp_path / "ragtune.yaml"
    settings.write_text("tuning:\n  batch_size: 2\n  max_length: 96\n  format_sample: 0\n  lora_r: 2\n")
    ws = tmp_path / "ws"
    r = _tune(
        "--name", "acc", "--data", str(data), "--max-steps", "1", "--workspace", str(ws), "--config", str(settings),
        "--accelerate-config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "accelerate_cli launch --config_file" in r.stdout and "'acc' written to" in r.stdout
    card = read_card(ws / "adapters" / "acc")
    assert card.hyperparameters["max_steps"] == 1 and card.hyperparameters["world_size"] == 1
