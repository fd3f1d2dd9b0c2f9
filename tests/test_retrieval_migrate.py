"""`ragtune index migrate`: an embedded index copied to PostgreSQL and back, vectors and snapshot kept."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ragtune.cli import app
from ragtune.core.config import load_config
from ragtune.core.errors import DataError
from ragtune.retrieval.index import Index
from ragtune.retrieval.pg_index import PgIndex


def test_migrate_to_postgres_and_back(tmp_path, fact_docs, pg_dsn):
    cfg = load_config(workspace=tmp_path / "ws", environ={})
    src = Index.from_config(cfg)
    src.upsert(fact_docs, progress=False)
    src.delete(["zorblat-colours"])
    src.close()
    run = CliRunner().invoke(app, ["index", "migrate", "--to", "postgres", "--dsn", pg_dsn, "-w", str(cfg.workspace)])
    assert run.exit_code == 0, run.output
    pg = PgIndex(pg_dsn)
    assert pg.snapshot == src.snapshot and pg.document_ids() == src.document_ids()
    assert pg._model is None  # copied vectors: no embedder loaded
    ids, vecs = src.store.live_vectors(src.dim)
    pids, pvecs = pg.store.live_vectors(src.dim)
    assert np.array_equal(ids, pids) and np.allclose(vecs, pvecs)
    for mode in ("dense", "lexical", "hybrid"):
        assert pg.search("support hotline", k=1, mode=mode)[0].chunk.doc_id == "zorblat-hours"
    # the copy takes writes and reuses the copied vectors for identical text
    rep = pg.upsert([fact_docs[1].model_copy(update={"id": "hours-copy"}), fact_docs[2]], progress=False)
    assert rep.added == ["hours-copy", "zorblat-colours"] and rep.vectors_reused == 1
    again = CliRunner().invoke(app, ["index", "migrate", "--to", "postgres", "--dsn", pg_dsn, "-w", str(cfg.workspace)])
    assert again.exit_code != 0 and "not empty" in str(again.exception or again.output)
    # and back into a fresh workspace
    back = load_config(workspace=tmp_path / "ws2", environ={})
    run = CliRunner().invoke(app, ["index", "migrate", "--to", "embedded", "--dsn", pg_dsn, "-w", str(back.workspace)])
    assert run.exit_code == 0, run.output
    local = Index.from_config(back)
    assert local.snapshot == pg.snapshot and local.document_ids() == pg.document_ids()
    assert local.vector_count == 5 and local.search("mauve ochre", k=1)[0].chunk.doc_id == "zorblat-colours"
    with pytest.raises(DataError, match="not empty"):
        local.copy_from(pg)
