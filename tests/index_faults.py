"""SIGKILL rounds against real index writers (shared by tests/test_index_faults.py and bench/faults.py).

Three writers, each a real process killed at a random moment: `ragtune ingest` of a JSONL batch,
`ragtune sync` of a folder that changed, and `ragtune serve` in the middle of `POST /v1/documents:batch`
calls. After each kill the index is opened by the next process with no manual step and checked:
every write the writer reported done is there (nothing committed lost), and every batch is there
whole or not at all (nothing half-visible), with FAISS, rows and the lexical index agreeing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from net import free_port

from ragtune.retrieval.index import Index

BATCH = 24


@dataclass
class Outcome:
    kills: int = 0
    survived: int = 0
    records_lost: int = 0
    half_visible: int = 0
    rounds: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        for k in ("kills", "survived", "records_lost", "half_visible", "rounds"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.notes += other.notes


@dataclass
class Target:
    """Where the index lives: a workspace folder, plus the environment that points `ragtune` at it."""

    workspace: Path
    env: dict[str, str]
    opener: Callable[[], Any]  # opens the index in this process


def _env(target: Target) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **target.env}


def cli(target: Target, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli_args(target, *args), env=_env(target), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def kill_at_random(proc: subprocess.Popen[bytes], rng: random.Random, low: float, high: float) -> bool:
    """SIGKILL after a random delay; True if the process was still running (a real kill)."""
    deadline = time.monotonic() + rng.uniform(low, high)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return alive


def check_consistent(ix: Any) -> str | None:
    """FAISS (or pgvector), the chunk rows and the lexical index agree; None if so."""
    n_docs, n_chunks = ix.store.counts()
    if n_docs != len(ix.document_ids()):
        return f"document count {n_docs} != ids {len(ix.document_ids())}"
    if n_chunks != ix.vector_count:
        return f"chunks {n_chunks} != vectors {ix.vector_count}"
    if isinstance(ix, Index) and type(ix) is Index:
        fts = ix.store.conn.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
        rows = ix.store.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        if fts != rows:
            return f"lexical rows {fts} != chunk rows {rows}"
    return None


def _batch_docs(tag: str) -> list[dict[str, str]]:
    return [
        {"id": f"{tag}-{i}", "text": f"Batch {tag} record {i}: gadget {tag}x{i} costs {i * 7} florins."}
        for i in range(BATCH)
    ]


def _judge(out: Outcome, ix: Any, done: list[str], maybe: list[str]) -> None:
    """Batches in `done` must be whole; the one in `maybe` whole or absent; no other ids."""
    ids = set(ix.document_ids())
    for tag in done:
        have = sum(f"{tag}-{i}" in ids for i in range(BATCH))
        out.records_lost += BATCH - have
    for tag in maybe:
        have = sum(f"{tag}-{i}" in ids for i in range(BATCH))
        if have not in (0, BATCH):
            out.half_visible += 1
            out.notes.append(f"batch {tag}: {have} of {BATCH} visible")
    problem = check_consistent(ix)
    if problem:
        out.half_visible += 1
        out.notes.append(problem)


def _close(ix: Any) -> None:
    if hasattr(ix, "close"):
        ix.close()


def _timed(proc: subprocess.Popen[bytes]) -> float:
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args!r} failed: {err.decode()[-500:]}")
    return time.monotonic() - t0


def _jsonl(target: Target, tag: str) -> str:
    src = target.workspace.parent / f"{tag}.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in _batch_docs(tag)))
    return str(src)


def ingest_rounds(target: Target, kills: int, rng: random.Random) -> Outcome:
    """`ragtune ingest` of a JSONL batch of new ids, killed at a random moment of a run (the window is
    calibrated on one whole run first), until `kills` runs were killed."""
    out = Outcome()
    done = ["warm"]
    whole = _timed(cli(target, "ingest", _jsonl(target, "warm")))
    r = 0
    while out.kills < kills and r < 3 * kills:
        tag = f"i{r}"
        r += 1
        t0 = time.monotonic()
        proc = cli(target, "ingest", _jsonl(target, tag))
        killed = kill_at_random(proc, rng, 0.4 * whole, 1.05 * whole)
        whole = whole if killed else 0.9 * (time.monotonic() - t0)  # finished first: the machine got faster
        out.rounds += 1
        ix = target.opener()
        before = (out.records_lost, out.half_visible)
        _judge(out, ix, done, [tag] if killed else [])
        if not killed and proc.returncode != 0:
            out.notes.append(f"ingest exited {proc.returncode}")
        elif not killed or f"{tag}-0" in set(ix.document_ids()):
            done.append(tag)  # finished, or committed just before the kill: from now on it must stay
        out.kills += killed
        out.survived += killed and (out.records_lost, out.half_visible) == before
        _close(ix)
    return out


def _mirror_round(folder: Path, r: int, rng: random.Random) -> None:
    """Change the folder: a few files edited, deleted and added."""
    files = sorted(folder.glob("*.txt"))
    for f in rng.sample(files, min(3, len(files))):
        f.unlink()
    for f in rng.sample(sorted(folder.glob("*.txt")), min(3, len(files) - 3)):
        f.write_text(f"{f.stem} was edited in round {r}: the sprocket now costs {r * 11 + 3} florins.\n")
    for i in range(6):
        (folder / f"m{r}-{i}.txt").write_text(f"File m{r}-{i} added in round {r}: widget {r}x{i} is blue.\n")


def _texts(ix: Any) -> set[str]:
    return {ix.get_document(d).text.strip() for d in ix.document_ids()}


def _folder_texts(folder: Path) -> set[str]:
    return {f.read_text().strip() for f in folder.glob("*.txt")}


def sync_rounds(target: Target, kills: int, rng: random.Random) -> Outcome:
    """Change a folder, `ragtune sync` it, kill at a random moment, until `kills` runs were killed; the
    index must then equal the folder before the round or after it, never a mix."""
    out = Outcome()
    folder = target.workspace.parent / "mirror"
    folder.mkdir(exist_ok=True)
    for i in range(12):
        (folder / f"base-{i}.txt").write_text(f"Base file {i}: the gizmo weighs {i * 3 + 1} grams.\n")
    whole = _timed(cli(target, "sync", str(folder)))
    ix = target.opener()
    committed = _texts(ix)
    _close(ix)
    r = 0
    while out.kills < kills and r < 3 * kills:
        _mirror_round(folder, r, rng)
        r += 1
        wanted = _folder_texts(folder)
        t0 = time.monotonic()
        proc = cli(target, "sync", str(folder))
        killed = kill_at_random(proc, rng, 0.4 * whole, 1.05 * whole)
        whole = whole if killed else 0.9 * (time.monotonic() - t0)
        out.rounds += 1
        ix = target.opener()
        now = _texts(ix)
        ok = now == wanted or (killed and now == committed)
        problem = check_consistent(ix)
        if not ok or problem:
            out.half_visible += 1
            out.records_lost += len((committed & wanted) - now)
            out.notes.append(problem or f"sync round {r}: the index is neither the old nor the new folder")
        out.kills += killed
        out.survived += killed and ok and not problem
        committed = now
        _close(ix)
    return out


def cli_args(target: Target, *args: str) -> list[str]:
    return [sys.executable, "-m", "ragtune.cli", *args, "--workspace", str(target.workspace)]


def _serve(target: Target) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        cli_args(target, "serve", "--port", str(port)),
        env=_env(target),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:  # readyz wants an index: none yet
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ragtune serve did not become ready")


def api_rounds(target: Target, rounds: int, rng: random.Random, max_delay: float = 4.0) -> Outcome:
    """Each round: `ragtune serve`, batches of upserts posted one after another, SIGKILL at a random moment."""
    out = Outcome()
    done: list[str] = []
    for r in range(rounds):
        proc, url = _serve(target)
        sent: list[str] = []
        stop_at = time.monotonic() + rng.uniform(0.3, max_delay)
        with httpx.Client(timeout=120) as c:
            n = 0
            while True:
                tag = f"a{r}b{n}"
                sent.append(tag)
                n += 1
                try:
                    left = max(0.0, stop_at - time.monotonic())
                    resp = c.post(f"{url}/v1/documents:batch", json={"upsert": _batch_docs(tag)}, timeout=0.05 + left)
                    if resp.status_code == 200:
                        done.append(tag)
                except httpx.TimeoutException:
                    break  # the kill comes while this batch is in flight
                if time.monotonic() >= stop_at:
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        out.rounds += 1
        out.kills += 1
        ix = target.opener()
        before = (out.records_lost, out.half_visible)
        in_flight = [t for t in sent if t not in done]
        _judge(out, ix, done, in_flight)
        ids = set(ix.document_ids())
        done += [t for t in in_flight if f"{t}-0" in ids]
        out.survived += (out.records_lost, out.half_visible) == before
        _close(ix)
    return out


def _small_docs(tag: str, n: int) -> list[Any]:
    from ragtune.core.types import Document

    return [Document(id=d["id"], text=d["text"]) for d in _batch_docs(tag)[:n]]


def faiss_file_round(target: Target) -> dict[str, Any]:
    """The FAISS file truncated, then deleted: each time the next open rebuilds it from the stored rows."""
    path = target.workspace / "index"
    ix = Index(path)
    ix.upsert(_small_docs("f", 12), progress=False)
    ix.close()
    result: dict[str, Any] = {}
    for fault in ("truncated", "deleted"):
        for f in path.glob("vectors-*.faiss"):
            if fault == "truncated":
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
            else:
                f.unlink()
        again = Index(path)
        hit = again.search("gadget fx5 costs 35 florins", k=1, mode="dense")
        result[fault] = (
            again.vector_count == 12
            and check_consistent(again) is None
            and bool(hit)
            and hit[0].chunk.doc_id == "f-5"
            and any(path.glob(f"vectors-{again.snapshot}.faiss"))
        )
        again.close()
    result["ok"] = all(result.values())
    return result


DISK_FULL_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from ragtune.core.types import Document
from ragtune.retrieval.index import Index

path = Path(sys.argv[1])
ix = Index(path)
ix.embed(["warm up: load the embedder before the limit"])
docs = [Document(id=f"big-{i}", text=f"Big record {i}: " + "lorem ipsum dolor " * 40) for i in range(150)]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, not a signal
biggest = max(f.stat().st_size for f in path.rglob("*") if f.is_file())
resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + 16384, resource.RLIM_INFINITY))
try:
    ix.upsert(docs, progress=False)
    print(json.dumps({"error": None}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def disk_full_round(root: Path) -> dict[str, Any]:
    """A commit that cannot be written (a file-size limit: a real EFBIG from the kernel) gives a clear
    error; the index then opens unchanged and takes writes again."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "index"
    ix = Index(path)
    ix.upsert(_small_docs("d", 6), progress=False)
    before = (ix.snapshot, sorted(ix.document_ids()))
    ix.close()
    script = root / "child.py"
    script.write_text(DISK_FULL_CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, str(script), str(path)], env=env, capture_output=True, text=True, timeout=600)
    lines = run.stdout.strip().splitlines()
    child = json.loads(lines[-1]) if lines else {"error": f"child exited {run.returncode}: {run.stderr[-300:]}"}
    again = Index(path)
    unchanged = (again.snapshot, sorted(again.document_ids())) == before and check_consistent(again) is None
    readable = bool(again.search("gadget dx3", k=1, mode="lexical"))
    writes = again.upsert(_small_docs("after", 2), progress=False).added == ["after-0", "after-1"]
    again.close()
    clear = child.get("error") == "IndexWriteError" and "rolled back" in child.get("message", "")
    return {
        "error": child.get("error"),
        "message": child.get("message", "")[:200],
        "ok": clear and unchanged and readable and writes,
    }
