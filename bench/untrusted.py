"""Untrusted documents and a careful CLI: memory of a large ingest, the largest chunk, corrupted FAISS
files, prompt-injection cases contained, CLI bad inputs ending in a traceback.

- Peak memory: a fresh process loads the embedder, notes its RSS (idle), resets the kernel's peak
  counter, then runs `load_paths` + `Index.upsert` on one text file of 100 MB (`--quick`: 20 MB) and
  reads the peak (`VmHWM`). The file cycles through a few hundred distinct paragraphs of about one
  chunk each, so the run measures loading, chunking and storing 100 MB rather than embedding.
- Largest chunk: adversarial texts (30,000 characters without a space, runs of spaces and control
  characters, one long line of punctuation, CJK without spaces) chunked with the default budget and
  counted with WordPiece's long-word shortcut lifted (`Chunker.exact_counts`).
- Corrupted index: for each kind (bytes flipped at the start, the middle and the end, a zeroed 4 KiB
  page, another index's file of the same size copied over it) the index is reopened and searched;
  a case is "used silently" when its hits differ from before the corruption or no warning was logged.

- Prompt fence: every attack of `bench/untrusted_cases.py` (chat-template markers of six families,
  fence-tag variants, zero-width and homoglyph tricks) in every untrusted slot of the prompt, checked
  on the token ids of the built prompt (target: all contained).
- CLI: each command on the table of bad inputs of `bench/untrusted_cases.py` (non-UTF-8, corrupt
  store, bad filter, missing, empty, wrong fields): cases ending in a traceback (target 0).

Each figure is a function in `MEASURES` returning its section and targets. Prints one JSON object on
the last line, with `targets` as the other benches do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # untrusted_cases.py, shared with the tests

MB = 1_000_000
Targets = list[dict[str, Any]]


def target(name: str, value: float, goal: float, op: str) -> dict[str, Any]:
    met = value >= goal if op == ">=" else value <= goal
    return {"name": name, "value": value, "target": goal, "op": op, "met": met}


# peak memory of a large ingest (measured in a child process) -------------------------------------
def _status(field: str) -> int:
    """A `/proc/self/status` figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def write_corpus(path: Path, size: int, seed: int = 0) -> int:
    """`size` bytes of English-like text (words of the bundled sample domain) cycling through 300
    distinct paragraphs of about 150 words, a chunk or so each."""
    import re

    from ragtune.core.sample import sample_path

    rng = random.Random(seed)
    text = " ".join(f.read_text(encoding="utf-8") for f in sorted(sample_path("docs", "v1").rglob("*.*")))
    words = sorted(set(re.findall(r"[a-z]{2,}", text.lower())))
    pool = [" ".join(rng.choice(words) for _ in range(150)).capitalize() + "." for _ in range(300)]
    written = 0
    with path.open("w", encoding="utf-8") as fh:
        n = 0
        while written < size:
            block = pool[n % len(pool)] + "\n\n"
            fh.write(block)
            written += len(block)
            n += 1
    return written


def child_ingest(file: str, workspace: str) -> None:
    """Run in a fresh process: RSS after loading the embedder, then the peak of loading + upserting."""
    from ragtune.core.config import load_config
    from ragtune.retrieval.index import Index
    from ragtune.retrieval.loaders import load_paths

    cfg = load_config(workspace=workspace, environ={})
    ix = Index.from_config(cfg)
    ix.embed(["warm up the embedder"])
    idle = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    loaded = load_paths([file], cfg.retrieval)
    report = ix.upsert(loaded.documents, progress=False)
    del loaded
    peak = _status("VmHWM")
    out = {
        "idle_mb": round(idle / MB, 1),
        "peak_mb": round(peak / MB, 1),
        "peak_over_idle_mb": round((peak - idle) / MB, 1),
        "chunks": report.chunks_written,
        "embedded": report.chunks_written - report.vectors_reused,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out))


def measure_memory(quick: bool, root: Path) -> tuple[dict[str, Any], Targets]:
    size = (20 if quick else 100) * MB
    root.mkdir(parents=True, exist_ok=True)
    file = root / "big.txt"
    written = write_corpus(file, size)
    proc = subprocess.run(
        [sys.executable, __file__, "--child-ingest", str(file), str(root / "ws")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the ingest child failed: {proc.stderr.strip()[-2000:]}")
    figures = {"file_mb": round(written / MB, 1), **json.loads(proc.stdout.strip().splitlines()[-1])}
    file.unlink()
    return figures, [
        target(f"peak_rss_over_idle_mb_ingesting_{written // MB}mb", figures["peak_over_idle_mb"], 1000, "<=")
    ]


# the largest chunk of adversarial text --------------------------------------------------------------
def adversarial_texts(seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(30_000))
    return {
        "no_spaces_30kb": blob,
        "space_runs": ("word " + " " * 3000) * 20,
        "control_chars": "start " + "\x01\x02\x03" * 5000 + " end",
        "punctuation_line": "-=+*#" * 6000,
        "cjk_without_spaces": "".join(chr(0x4E00 + rng.randrange(20000)) for _ in range(20_000)),
        "long_url": "https://example.com/" + "a/b?c=d&" * 4000,
    }


def measure_chunks(quick: bool, root: Path) -> tuple[dict[str, Any], Targets]:
    from ragtune.core.config import RetrievalConfig
    from ragtune.core.models import load_embedder
    from ragtune.core.types import Document
    from ragtune.retrieval.chunker import Chunker

    cfg = RetrievalConfig()
    tokenizer = load_embedder("bundled:all-minilm-l6-v2").tokenizer
    largest: dict[str, int] = {}
    for strategy in ("recursive", "markdown", "fixed"):
        chunker = Chunker(tokenizer, cfg.chunk_tokens, cfg.chunk_overlap, strategy)
        for name, text in adversarial_texts().items():
            counts = chunker.exact_counts(chunker.split(Document(id=name, text=text)))
            largest[f"{strategy}:{name}"] = max(counts)
    worst = max(largest.values())
    figures = {"budget": cfg.chunk_tokens, "largest_by_case": largest}
    return figures, [target("largest_chunk_tokens", worst, cfg.chunk_tokens, "<=")]


# corrupted FAISS files ------------------------------------------------------------------------------
def _build(path: Path, colour: str) -> None:
    from ragtune.core.types import Document
    from ragtune.retrieval.index import Index

    with Index(path) as ix:
        ix.upsert(
            [Document(id=f"d{i}", text=f"Lamp {i} is {colour}, model {i * 7}.") for i in range(40)], progress=False
        )


def _corrupt(kind: str, path: Path, other: Path) -> None:
    f = next(path.glob("vectors-*.faiss"))
    data = bytearray(f.read_bytes())
    spots = {"flip_start": 8, "flip_middle": len(data) // 2, "flip_end": len(data) - 64}
    if kind in spots:
        for pos in range(spots[kind], spots[kind] + 32):
            data[pos] ^= 0xA5
        f.write_bytes(bytes(data))
    elif kind == "zeroed_page":
        page = len(data) // 2 // 4096 * 4096
        data[page : page + 4096] = bytes(len(data[page : page + 4096]))
        f.write_bytes(bytes(data))
    else:  # swapped: the other index's file, same size, under this one's name
        shutil.copy(next(other.glob("vectors-*.faiss")), f)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _case(kind: str, root: Path) -> dict[str, Any]:
    from ragtune.retrieval.index import Index

    path, other = root / kind / "a", root / kind / "b"
    _build(path, "red")
    _build(other, "blue")
    queries = [f"Lamp {i} red model" for i in range(40)]
    with Index(path) as ix:
        before = [[h.chunk.id for h in hits] for hits in ix.search_many(queries, 3)]
    _corrupt(kind, path, other)
    seen = _Warnings()
    logging.getLogger("ragtune.retrieval").addHandler(seen)
    try:
        with Index(path) as ix:
            after = [[h.chunk.id for h in hits] for hits in ix.search_many(queries, 3)]
    except Exception as exc:  # noqa: BLE001 - a crash is not silent, but it is a failure to report
        return {"kind": kind, "detected": False, "same_hits": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        logging.getLogger("ragtune.retrieval").removeHandler(seen)
    detected = any("checksum" in m for m in seen.messages)
    return {"kind": kind, "detected": detected, "same_hits": after == before}


def measure_corruption(quick: bool, root: Path) -> tuple[dict[str, Any], Targets]:
    kinds = ["flip_start", "flip_middle", "flip_end", "zeroed_page", "swapped"]
    cases = [_case(kind, root) for kind in kinds]
    silent = sum(1 for c in cases if not (c["detected"] and c["same_hits"]))
    return {"cases": cases}, [target("corrupted_index_cases_used_silently", silent, 0, "<=")]


def _split(figure: dict[str, Any]) -> tuple[dict[str, Any], Targets]:
    return {k: v for k, v in figure.items() if k != "targets"}, figure["targets"]


def measure_fence(quick: bool, root: Path) -> tuple[dict[str, Any], Targets]:
    from untrusted_cases import fence_figure

    return _split(fence_figure())


def measure_cli(quick: bool, root: Path) -> tuple[dict[str, Any], Targets]:
    from untrusted_cases import cli_figure

    root.mkdir(parents=True, exist_ok=True)
    return _split(cli_figure(root))


MEASURES: list[tuple[str, Callable[[bool, Path], tuple[dict[str, Any], Targets]]]] = [
    ("memory", measure_memory),
    ("chunks", measure_chunks),
    ("corruption", measure_corruption),
    ("fence", measure_fence),
    ("cli", measure_cli),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20 MB file instead of 100 MB")
    parser.add_argument("--child-ingest", nargs=2, metavar=("FILE", "WORKSPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ingest:
        child_ingest(*args.child_ingest)
        return
    out: dict[str, Any] = {"bench": "untrusted", "quick": args.quick}
    targets: Targets = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rt-untrusted-") as tmp:
        for name, measure in MEASURES:
            figures, found = measure(args.quick, Path(tmp) / name)
            out[name] = figures
            targets.extend(found)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["targets"] = targets
    print(json.dumps(out))


if __name__ == "__main__":
    main()
