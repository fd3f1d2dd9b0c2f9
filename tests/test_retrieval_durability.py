"""Crash safety, the FAISS cache rebuilt or caught up from SQLite, one writer, readers never blocked.

The crash, writer and reader tests run on both backends (`open_index`); the FAISS ones on the embedded one.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import filelock
import pytest

from ragtune.core.config import RetrievalConfig
from ragtune.core.types import Document
from ragtune.retrieval.index import Index, IndexLockedError

BATCH = 80
CHILD = textwrap.dedent(
    """
    import sys
    from ragtune.core.types import Document
    from ragtune.retrieval.index import Index
    from ragtune.retrieval.pg_index import PgIndex

    def batch(b):
        return [Document(id=f"d{b}-{i}", text=f"Record {b}-{i}: widget w{b}x{i} weighs {b * 1000 + i} grams.")
                for i in range({batch})]

    ix = PgIndex(sys.argv[1]) if sys.argv[1].startswith("postgresql") else Index(sys.argv[1])
    for b in range(1000):
        deletes = [f"d{b - 1}-{i}" for i in range(0, {batch}, 2)] if b else []
        report = ix.apply(batch(b), deletes, progress=False)
        print(report.snapshot, flush=True)
    """
).replace("{batch}", str(BATCH))


def _expected_ids(n_commits: int) -> set[str]:
    ids = {f"d{b}-{i}" for b in range(n_commits) for i in range(BATCH)}
    return ids - {f"d{b}-{i}" for b in range(n_commits - 1) for i in range(0, BATCH, 2)}


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_the_last_commit(tmp_path: Path, open_index):
    path = tmp_path / "ix"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), open_index.target(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    printed = [child.stdout.readline().strip() for _ in range(3)]
    time.sleep(random.uniform(0.05, 0.6))  # somewhere inside the next, larger commit
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    printed += [line.strip() for line in child.stdout.read().splitlines()]  # commits finished before the kill
    assert all(printed) and len(printed) >= 3, printed

    ix = open_index(path)  # no manual step
    seq = ix.store.seq()
    # the commit under way at the kill either finished just before it (its line unprinted) or left no trace
    assert seq in (len(printed), len(printed) + 1), (seq, len(printed))
    assert ix.snapshot == printed[-1] or seq == len(printed) + 1
    assert set(ix.document_ids()) == _expected_ids(seq)
    n_chunks = ix.store.counts()[1]
    assert n_chunks == len(_expected_ids(seq)) == ix.vector_count
    if open_index.backend == "embedded":
        fts = ix.store.conn.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
        assert fts == ix.store.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    assert ix.search("widget w2x7", k=1, mode="lexical")[0].chunk.doc_id == "d2-7"
    assert ix.search("Record 2-7: widget w2x7 weighs 2007 grams.", k=1)[0].chunk.doc_id == "d2-7"
    assert [s["seq"] for s in ix.snapshots()][-1] == seq
    report = ix.upsert([Document(id="after", text="The index takes writes again after the crash.")], progress=False)
    assert report.added == ["after"] and ix.store.seq() == seq + 1


def test_faiss_file_lost_or_behind_is_rebuilt_from_sqlite(tmp_path: Path, fact_docs):
    path = tmp_path / "ix"
    ix = Index(path, RetrievalConfig(checkpoint_ratio=100.0))  # write the FAISS file only when there is none
    ix.upsert(fact_docs, progress=False)
    first_file = next(path.glob("vectors-*.faiss"))
    edited = fact_docs[2].model_copy(update={"text": "The Zorblat lamp now ships in teal only."})
    ix.upsert([edited], progress=False)
    ix.delete(["zorblat-pricing"])
    assert list(path.glob("vectors-*.faiss")) == [first_file]  # behind SQLite by two commits
    ix.store.close()

    behind = Index(path, RetrievalConfig(checkpoint_ratio=100.0))
    assert behind.vector_count == 3
    assert behind.search("lamp colour teal", k=1)[0].chunk.text == edited.text
    assert all(h.chunk.doc_id != "zorblat-pricing" for h in behind.search("price per month", k=3))
    behind.close()

    for f in path.glob("vectors-*.faiss"):
        f.unlink()
    lost = Index(path)
    assert lost.vector_count == 3 and list(path.glob(f"vectors-{lost.snapshot}.faiss"))
    assert lost._model is None  # rebuilt from stored vectors: no embedder was loaded
    assert lost.search("lamp colour teal", k=1)[0].chunk.doc_id == "zorblat-colours"


class _OtherWriter:
    """Another process's writer lock: the embedded index's file lock, or PostgreSQL's advisory lock
    held on a connection of its own."""

    def __init__(self, open_index, path: Path) -> None:
        self.embedded = open_index.backend == "embedded"
        if self.embedded:
            self.lock = filelock.FileLock(str(path / "writer.lock"), thread_local=False)
            self.lock.acquire()
        else:
            import psycopg

            from ragtune.retrieval.pg_index import WRITER_LOCK

            self.conn = psycopg.connect(open_index.target(path), autocommit=True)
            self.conn.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK,))
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release() if self.embedded else self.conn.close()


def test_second_writer_waits_or_gets_a_clear_error(tmp_path: Path, fact_docs, open_index):
    path = tmp_path / "ix"
    open_index(path).upsert(fact_docs[:2], progress=False)
    other = _OtherWriter(open_index, path)
    try:
        with pytest.raises(IndexLockedError, match="being written by another process"):
            open_index(path, RetrievalConfig(lock_timeout=0.2)).upsert(fact_docs[2:], progress=False)
        timer = threading.Timer(0.5, other.release)
        timer.start()
        report = open_index(path, RetrievalConfig(lock_timeout=10)).upsert(fact_docs[2:], progress=False)
        assert len(report.added) == 2
    finally:
        other.release()


def test_readers_never_blocked_and_never_see_half_a_commit(tmp_path: Path, fact_docs, open_index):
    path = tmp_path / "ix"
    writer = open_index(path)
    writer.upsert(fact_docs, progress=False)
    reader = open_index(path)
    # a writer in the middle of a transaction: the reader goes on, on the last commit
    writer.store.begin()
    writer.store.remove_documents(["zorblat-hours"], 99)
    t0 = time.perf_counter()
    assert reader.search("support hotline", k=1, mode="hybrid")[0].chunk.doc_id == "zorblat-hours"
    assert time.perf_counter() - t0 < 5
    writer.store.rollback()

    # commits that change two documents together: a reader sees both or neither
    def pair(n: int) -> list[Document]:
        return [Document(id=x, text=f"{x} counter reads {n} today.") for x in ("left", "right")]

    writer.upsert(pair(0), progress=False)
    seen: list[set[str]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(40):
                hits = reader.search("counter reads today", k=2, mode="lexical")
                seen.append({h.chunk.text.split()[3] for h in hits})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    for n in range(1, 6):
        writer.upsert(pair(n), progress=False)
    thread.join(timeout=60)
    assert not errors and seen and all(len(s) == 1 for s in seen), seen
    assert reader.search("counter reads today", k=1, mode="dense")[0].chunk.text.endswith("5 today.")
