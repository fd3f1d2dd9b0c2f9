"""Session fixtures: the bundled models load once; a tiny adapter trains once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from net import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragtune.core.config import Config, load_config  # noqa: E402
from ragtune.core.generator import Generator  # noqa: E402
from ragtune.core.models import load_generator_model  # noqa: E402
from ragtune.core.types import Document  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

FACTS = [
    (
        "zorblat-pricing",
        "Zorblat Pricing",
        "The Zorblat Basic plan costs 17 florins a month. The Pro plan costs 45 florins.",
    ),
    (
        "zorblat-hours",
        "Zorblat Support Hours",
        "Zorblat support answers on Wednesdays from 9 to 13. The hotline is 555-0199.",
    ),
    ("zorblat-colours", "Zorblat Colours", "The Zorblat lamp ships in mauve, ochre and slate. Mauve is the default."),
    ("zorblat-battery", "Zorblat Battery", "A Zorblat lamp battery lasts 31 hours. Charging takes 90 minutes."),
]


# Fixtures that load the generator or train: a test that uses any of them (directly or through another
# fixture) is marked `model`, so `make test-fast` (-m "not model and not slow") leaves it out.
MODEL_FIXTURES = {"model_and_tokenizer", "tiny_adapter", "generator", "pipeline_factory", "serving_pipeline"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def fact_docs() -> list[Document]:
    return [Document(id=i, title=t, text=x) for i, t, x in FACTS]


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    return load_config(workspace=tmp_path / "ws", environ={})


@pytest.fixture(scope="session")
def model_and_tokenizer():
    return load_generator_model("bundled:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter trained for a few steps on the house style: one real training run per session."""
    from ragtune.tuning.data import Example
    from ragtune.tuning.trainer import train_adapter

    ws = tmp_path_factory.mktemp("adapter-ws")
    cfg = load_config(
        workspace=ws,
        environ={},
        overrides={"tuning": {"epochs": 3, "batch_size": 4, "learning_rate": 2e-3, "val_fraction": 0.25}},
    )
    examples = [
        Example(
            question=f"How long does a Zorblat lamp battery last in mode {m}?",
            answer=f"In mode {m} the battery lasts 31 hours.\nSources: Zorblat Battery",
            context=[{"title": "Zorblat Battery", "text": FACTS[3][2]}],
            group=f"g{m % 4}",
        )
        for m in range(16)
    ]
    return train_adapter(examples, "tiny", cfg, progress=False).path


@pytest.fixture(scope="session")
def generator(model_and_tokenizer) -> Generator:
    model, tok = model_and_tokenizer
    return Generator(model, tok)


@pytest.fixture(scope="session")
def pipeline_factory(tmp_path_factory: pytest.TempPathFactory, fact_docs, tiny_adapter: Path):
    """Build a Pipeline over a fact index with the tiny adapter in its workspace.

    The pipeline gets its own model copy: loading an adapter edits the model in place.
    """
    import shutil

    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline

    ws = tmp_path_factory.mktemp("pipe-ws")
    cfg = load_config(workspace=ws, environ={}, overrides={"generation": {"max_new_tokens": 24}})
    shutil.copytree(tiny_adapter, cfg.adapters_dir / "tiny")
    Index.from_config(cfg).upsert(fact_docs, progress=False)
    pipeline = Pipeline.from_config(cfg)

    def make() -> Pipeline:
        return pipeline

    return make


@pytest.fixture(scope="session")
def serving_pipeline(pipeline_factory, tmp_path_factory: pytest.TempPathFactory, fact_docs):
    """Make a Pipeline for serving tests that shares the session's model (with the tiny adapter).

    `serving` overrides the serving config section; `own_index=True` gives a fresh workspace with
    its own index of the fact documents, for tests that write documents.
    """
    import shutil

    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline

    shared = pipeline_factory()

    def make(serving: dict | None = None, own_index: bool = False) -> Pipeline:
        ws = tmp_path_factory.mktemp("serve-ws") if own_index else shared.config.workspace
        overrides = {"generation": {"max_new_tokens": 8}, "serving": serving or {}}
        cfg = load_config(workspace=ws, environ={}, overrides=overrides)
        index = shared.index
        if own_index:
            shutil.copytree(shared.config.adapters_dir, cfg.adapters_dir)
            index = Index.from_config(cfg)
            index.upsert(fact_docs, progress=False)
        return Pipeline(cfg, shared.generator, index)

    return make


@pytest.fixture(scope="session")
def live_server():
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL."""
    import contextlib
    import threading
    import time

    import uvicorn

    @contextlib.contextmanager
    def run(app):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)

    return run


# --- index backends: every retrieval test that takes `open_index` runs on both --------------------


@pytest.fixture(scope="session")
def pg_uri(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL server with pgvector (the `pgserver` wheel), started once per session."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))
    try:
        import pgserver
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("pgserver is not installed (make install adds it)")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def new_database(uri: str) -> str:
    """A fresh, empty database on the session's server; returns its DSN."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return uri.replace("/postgres?", f"/{name}?")


@pytest.fixture()
def pg_dsn(pg_uri: str) -> str:
    """A fresh database for one test."""
    return new_database(pg_uri)


class IndexOpener:
    """`open_index(path, config)`: the parametrised backend's index; the same path opens the same index."""

    def __init__(self, backend: str, uri: str | None) -> None:
        self.backend, self.uri = backend, uri
        self.dsns: dict[Path, str] = {}

    def target(self, path: Path) -> str:
        """What names this index to another process: the folder, or the database's DSN."""
        if self.backend == "embedded":
            return str(path)
        if path not in self.dsns:
            assert self.uri is not None
            self.dsns[path] = new_database(self.uri)
        return self.dsns[path]

    def __call__(self, path: Path, config=None):
        from ragtune.retrieval.index import Index
        from ragtune.retrieval.pg_index import PgIndex

        if self.backend == "embedded":
            return Index(path, config)
        return PgIndex(self.target(path), config)

    def workspace_env(self, path: Path) -> dict[str, str]:
        """Environment that points `ragtune` commands at this index."""
        return (
            {}
            if self.backend == "embedded"
            else {
                "RAGTUNE_RETRIEVAL__BACKEND": "postgres",
                "RAGTUNE_RETRIEVAL__DSN": self.target(path),
            }
        )


@pytest.fixture(params=["embedded", "postgres"])
def open_index(request: pytest.FixtureRequest) -> IndexOpener:
    uri = request.getfixturevalue("pg_uri") if request.param == "postgres" else None
    return IndexOpener(request.param, uri)
