"""Index faults at full size: SIGKILL during `ragtune ingest`, `ragtune sync` and a documents-API batch.

Each writer is a real process killed at a random moment over many rounds (`tests/index_faults.py`);
after every kill the index is opened by a new process and checked: every write reported done is
there (records_lost counts the missing ones), every batch is whole or absent and FAISS (or pgvector),
rows and the lexical index agree (half_visible counts the breaches). Also: the FAISS file truncated
and deleted (rebuilt), and a commit that runs out of space (RLIMIT_FSIZE: a real EFBIG) gives a clear
error and a readable, unchanged index. Prints one JSON object on the last line.

`--quick` kills 3 + 3 + 2 times on the embedded backend (under two minutes); the default kills
20 + 18 + 12 times (50); `--postgres` repeats the rounds on a PostgreSQL index (the `pgserver` wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared fault rounds

from index_faults import Outcome, Target, api_rounds, disk_full_round, faiss_file_round, ingest_rounds, sync_rounds  # noqa: E402  # noqa: E402

from ragtune.retrieval.index import Index  # noqa: E402


def target(name: str, value: float, goal: float, op: str) -> dict[str, Any]:
    met = value >= goal if op == ">=" else value <= goal
    return {"name": name, "value": value, "target": goal, "op": op, "met": met}


def embedded(root: Path, name: str) -> Target:
    ws = root / name / "ws"
    ws.mkdir(parents=True)
    return Target(ws, {}, lambda: Index(ws / "index"))


def postgres(root: Path, name: str, uri: str) -> Target:
    import psycopg

    from ragtune.retrieval.pg_index import PgIndex

    db = f"f_{name}_{random.randrange(1 << 30)}"
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    dsn = uri.replace("/postgres?", f"/{db}?")
    ws = root / "postgres" / name / "ws"  # beside the embedded rounds' folders of the same names
    ws.mkdir(parents=True)
    env = {"RAGTUNE_RETRIEVAL__BACKEND": "postgres", "RAGTUNE_RETRIEVAL__DSN": dsn}
    return Target(ws, env, lambda: PgIndex(dsn))


def run_backend(make: Any, kills: tuple[int, int, int], rng: random.Random) -> dict[str, Outcome]:
    return {
        "ingest": ingest_rounds(make("ingest"), kills[0], rng),
        "sync": sync_rounds(make("sync"), kills[1], rng),
        "api_batch": api_rounds(make("api"), kills[2], rng),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 + 3 + 2 kills, embedded only")
    ap.add_argument("--postgres", action="store_true", help="also run the kill rounds on PostgreSQL")
    ap.add_argument("--seed", type=int, default=19)
    args = ap.parse_args()
    kills = (3, 3, 2) if args.quick else (20, 18, 12)
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    results: dict[str, dict[str, Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="rt-faults-") as tmp:
        root = Path(tmp)
        results["embedded"] = run_backend(lambda n: embedded(root, n), kills, rng)
        extra = {"faiss_file": faiss_file_round(embedded(root, "faiss")), "disk_full": disk_full_round(root / "full")}
        if args.postgres and not args.quick:
            import pgserver

            print(f"embedded rounds done in {time.monotonic() - t0:.0f} s; now PostgreSQL", file=sys.stderr)
            server = pgserver.get_server(root / "pg", cleanup_mode="stop")
            try:
                results["postgres"] = run_backend(lambda n: postgres(root, n, server.get_uri()), (5, 5, 3), rng)
            finally:
                server.cleanup()
    total = Outcome()
    for per in results.values():
        for o in per.values():
            total.add(o)
    for note in total.notes[:20]:
        print("note:", note, file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "faults",
                "seconds": round(time.monotonic() - t0, 1),
                "kills": total.kills,
                "survived": total.survived,
                "records_lost": total.records_lost,
                "half_visible": total.half_visible,
                "rounds": total.rounds,
                "by_writer": {
                    f"{b}/{w}": {"kills": o.kills, "survived": o.survived, "lost": o.records_lost}
                    for b, per in results.items()
                    for w, o in per.items()
                },
                **extra,
                "targets": [
                    target("kills", total.kills, sum(kills), ">="),
                    target("survived", total.survived, total.kills, ">="),
                    target("records_lost", total.records_lost, 0, "<="),
                    target("half_visible", total.half_visible, 0, "<="),
                    target("faiss_file_rebuilt", int(extra["faiss_file"]["ok"]), 1, ">="),
                    target("disk_full_clear_and_readable", int(extra["disk_full"]["ok"]), 1, ">="),
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
