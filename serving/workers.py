"""`ragtune serve`: one or several uvicorn worker processes over the same workspace.

Each worker loads its own model and opens the same index; the index's writer lock keeps document
writes one at a time across processes, and every search catches up to the newest committed
snapshot, so all workers answer from the same data. Without an API key the server only listens on
loopback, whatever host was asked for.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI

from ragtune.core.config import Config, load_config
from ragtune.serving.security import is_loopback

SPEC_ENV = "_RAGTUNE_SERVE_SPEC"  # no RAGTUNE_ prefix: it is not a config key
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeSpec:
    """What a worker process needs to rebuild the parent's config (passed through the environment)."""

    workspace: str
    config_file: str | None
    torch_threads: int | None = None


@dataclass(frozen=True)
class Bind:
    host: str
    port: int
    workers: int
    note: str | None  # said to the user before the server starts


def plan_bind(cfg: Config, host: str | None, port: int | None, workers: int | None) -> Bind:
    """Where to listen: loopback only when no API key is configured, and say so."""
    s = cfg.serving
    want = host or s.host
    note = None
    if not s.api_keys:
        if not is_loopback(want):
            note = f"no API key is configured (serving.api_keys): listening on {LOOPBACK} only, not {want}"
            want = LOOPBACK
        else:
            note = f"no API key is configured: open to loopback clients only ({want})"
    return Bind(host=want, port=port or s.port, workers=workers or s.workers, note=note)


def worker_app() -> FastAPI:
    """uvicorn app factory run inside each worker process."""
    from ragtune.serving.app import create_app
    from ragtune.serving.pipeline import Pipeline

    spec = ServeSpec(**json.loads(os.environ[SPEC_ENV]))
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)  # N workers share the cores instead of fighting over them
    cfg = load_config(spec.config_file, workspace=spec.workspace)
    return create_app(Pipeline.from_config(cfg).warm())


def run(cfg: Config, config_file: Path | None, bind: Bind) -> None:
    """Start uvicorn: the app in this process for one worker, a factory per process for several."""
    import uvicorn

    if bind.workers == 1:
        from ragtune.serving.app import create_app
        from ragtune.serving.pipeline import Pipeline

        uvicorn.run(create_app(Pipeline.from_config(cfg).warm()), host=bind.host, port=bind.port)
        return
    threads = max(1, (os.cpu_count() or 1) // bind.workers)
    spec = ServeSpec(
        workspace=str(Path(cfg.workspace).resolve()),
        config_file=str(Path(config_file).resolve()) if config_file else None,
        torch_threads=threads,
    )
    os.environ[SPEC_ENV] = json.dumps(asdict(spec))
    uvicorn.run(
        "ragtune.serving.workers:worker_app", factory=True, host=bind.host, port=bind.port, workers=bind.workers
    )
