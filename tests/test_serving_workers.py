"""`ragtune serve --workers 2`: two processes over one workspace, loopback only without keys."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from net import free_port

from ragtune.core.config import load_config
from ragtune.serving.workers import plan_bind


def fresh_get(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as c:  # a new connection each time, so any worker may take it
        return c.get(url)


def test_plan_bind_keeps_keyless_servers_on_loopback(tmp_path: Path):
    open_cfg = load_config(workspace=tmp_path, environ={})
    forced = plan_bind(open_cfg, "0.0.0.0", 9000, 3)
    assert (forced.host, forced.port, forced.workers) == ("127.0.0.1", 9000, 3) and "127.0.0.1 only" in forced.note
    keyed = load_config(
        workspace=tmp_path, environ={}, overrides={"serving": {"api_keys": [{"key": "k" * 20}], "workers": 2}}
    )
    assert plan_bind(keyed, "0.0.0.0", None, None) == plan_bind(keyed, "0.0.0.0", 8000, 2)
    assert plan_bind(keyed, "0.0.0.0", None, None).note is None


@pytest.mark.slow
def test_two_workers_serve_one_index_and_see_each_others_writes(serving_pipeline):
    ws = serving_pipeline(own_index=True).config.workspace
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = ws / "serve.log"
    cmd = [sys.executable, "-c", "from ragtune.cli import main; main()", "serve", "--workers", "2"]
    cmd += ["--host", "0.0.0.0", "--port", str(port), "--workspace", str(ws)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if fresh_get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"server not ready: {log.read_text()}")
        assert "127.0.0.1 only" in log.read_text()  # asked for 0.0.0.0 without a key: told, and kept local
        children = psutil.Process(proc.pid).children(recursive=True)
        worker_pids = {p.pid for p in children if "spawn_main" in " ".join(p.cmdline())}
        assert len(worker_pids) == 2

        with httpx.Client(timeout=120) as c:
            put = c.put(
                f"{base}/v1/documents/zorblat-warranty", json={"title": "Zorblat Warranty", "text": "Seven years."}
            )
        assert put.status_code == 200, put.text
        snapshot = put.json()["snapshot"]
        seen: set[int] = set()
        deadline = time.monotonic() + 180  # the second worker may still be loading its model
        while len(seen) < 2 and time.monotonic() < deadline:  # every worker sees the write
            body = fresh_get(f"{base}/healthz").json()
            assert body["index"]["snapshot"] == snapshot and body["index"]["documents"] == 5
            seen.add(body["pid"])
            time.sleep(0.05)
        assert seen == worker_pids
    finally:
        proc.terminate()
        proc.wait(timeout=60)
