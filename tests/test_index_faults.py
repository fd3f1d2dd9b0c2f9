"""Index faults through real processes (rounds in `index_faults.py`; `bench/faults.py` runs many more):
SIGKILL during `ragtune ingest` and `ragtune sync` and during a documents-API batch of `ragtune serve`
(three kills; with the two of test_retrieval_durability.py, five in the default run; PostgreSQL's
ingest and sync kills are marked slow); the FAISS file truncated or deleted; a commit that runs out of
space; two writers at once. test_retrieval_durability.py covers a killed in-process writer, a FAISS
file behind SQLite and a writer that waits for the lock.
"""

import random
import threading
from pathlib import Path

import pytest
from conftest import IndexOpener
from index_faults import (
    Target,
    api_rounds,
    check_consistent,
    disk_full_round,
    faiss_file_round,
    ingest_rounds,
    sync_rounds,
)

from ragtune.core.config import RetrievalConfig
from ragtune.core.types import Document
from ragtune.retrieval.index import Index


def _target(root: Path, open_index) -> Target:
    ws = root / "ws"
    ws.mkdir(parents=True)
    return Target(ws, open_index.workspace_env(ws / "index"), lambda: open_index(ws / "index"))


def _ingest_and_sync(tmp_path: Path, opener: IndexOpener) -> None:
    rng = random.Random(19)
    out = ingest_rounds(_target(tmp_path / "ingest", opener), 1, rng)
    out.add(sync_rounds(_target(tmp_path / "sync", opener), 1, rng))
    assert (out.kills, out.survived, out.records_lost, out.half_visible) == (2, 2, 0, 0), out.notes


@pytest.mark.slow
def test_sigkill_during_ingest_and_sync_loses_nothing_committed(tmp_path: Path):
    _ingest_and_sync(tmp_path, IndexOpener("embedded", None))


@pytest.mark.slow  # a minute more; test_retrieval_durability.py kills a PostgreSQL writer in the default run
def test_sigkill_during_ingest_and_sync_loses_nothing_committed_on_postgres(tmp_path: Path, pg_uri: str):
    _ingest_and_sync(tmp_path, IndexOpener("postgres", pg_uri))


@pytest.mark.slow  # a subprocess killed mid-batch (CI runs it; the local `make test` leaves it out)
@pytest.mark.model  # a subprocess that loads the embedder, killed mid-batch
def test_sigkill_during_an_api_batch_loses_nothing_committed(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    out = api_rounds(Target(ws, {}, lambda: Index(ws / "index")), 1, random.Random(19), max_delay=2.0)
    assert (out.kills, out.survived, out.records_lost, out.half_visible) == (1, 1, 0, 0), out.notes


def test_faiss_file_truncated_or_deleted_is_rebuilt(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    result = faiss_file_round(Target(ws, {}, lambda: Index(ws / "index")))
    assert result == {"truncated": True, "deleted": True, "ok": True}


@pytest.mark.slow
def test_a_commit_out_of_space_is_a_clear_error_and_the_index_stays_readable(tmp_path: Path):
    result = disk_full_round(tmp_path / "full")
    assert result["error"] == "IndexWriteError" and result["ok"], result


def test_two_writers_at_once_both_land(tmp_path: Path, open_index):
    path = tmp_path / "ix"
    writers = [open_index(path, RetrievalConfig(lock_timeout=120)) for _ in range(2)]
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for b in range(3):
                docs = [Document(id=f"w{w}-{b}-{i}", text=f"Writer {w} batch {b} line {i} is teal.") for i in range(5)]
                writers[w].upsert(docs, progress=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    reader = open_index(path)
    assert len(reader.document_ids()) == 30 and reader.store.seq() == 6 and check_consistent(reader) is None
