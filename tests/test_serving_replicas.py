"""Two `ragtune serve` replicas over one PostgreSQL index: a write on one is answered from on the
other with the new snapshot, and both keep answering while a third process runs `ragtune sync`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from net import free_port

from ragtune.retrieval.pg_index import PgIndex

pytestmark = pytest.mark.slow


def _serve(ws: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port), "--workspace", str(ws)]
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"replica not ready: {log.read_text()}")


def _ask(client: httpx.Client, base: str, question: str) -> dict:
    r = client.post(f"{base}/v1/answer", json={"question": question, "mode": "rag", "max_new_tokens": 4})
    assert r.status_code == 200, r.text
    return r.json()


def test_two_replicas_share_one_postgres_index(pg_dsn: str, tmp_path: Path, fact_docs):
    dsn = pg_dsn
    PgIndex(dsn).upsert(fact_docs, progress=False)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAGTUNE_RETRIEVAL__BACKEND": "postgres",
        "RAGTUNE_RETRIEVAL__DSN": dsn,
        "RAGTUNE_GENERATION__MAX_NEW_TOKENS": "4",
    }
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    logs = [tmp_path / f"replica{i}.log" for i in (0, 1)]
    procs = [_serve(tmp_path / f"ws{i}", ports[i], env, logs[i]) for i in (0, 1)]
    try:
        for base, proc, log in zip(bases, procs, logs, strict=True):
            _wait_ready(base, proc, log)
        with httpx.Client(timeout=120) as c:
            put = c.put(
                f"{bases[0]}/v1/documents/zorblat-warranty",
                json={"title": "Zorblat Warranty", "text": "Every Zorblat lamp carries a warranty of seven years."},
            )
            assert put.status_code == 200, put.text
            snapshot = put.json()["snapshot"]
            other = _ask(c, bases[1], "How long is the Zorblat lamp warranty?")
            assert other["snapshot"] == snapshot
            assert other["citations"][0]["doc_id"] == "zorblat-warranty"
            assert c.get(f"{bases[1]}/v1/documents/zorblat-warranty").json()["title"] == "Zorblat Warranty"

            folder = tmp_path / "docs"
            folder.mkdir()
            for i in range(40):
                (folder / f"note{i}.txt").write_text(
                    f"Zorblat service note {i}: filter {i} is replaced every {i + 2} weeks."
                )
            sync = subprocess.Popen(
                [sys.executable, "-m", "ragtune.cli", "sync", str(folder), "--workspace", str(tmp_path / "ws-sync")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            answered = 0
            while sync.poll() is None or answered < 4:  # both replicas keep answering during the sync
                for base in bases:
                    _ask(c, base, "On which day does Zorblat support answer?")
                    answered += 1
            out = sync.communicate()[0]
            assert sync.returncode == 0, out
            after = [c.get(f"{b}/v1/index").json() for b in bases]
            assert after[0]["snapshot"] == after[1]["snapshot"] != snapshot
            assert after[0]["documents"] == after[1]["documents"] == 45
        print(f"replicas answered {answered} questions during the sync; both on snapshot {after[0]['snapshot']}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)
