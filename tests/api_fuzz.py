"""Targeted property-based fuzz of the HTTP API (shared by tests/test_serving_fuzz.py and bench/fuzz.py).

Hypothesis draws requests aimed at the fields requests can abuse: document ids, text, titles and
metadata (deep nesting, big numbers, NaN, lone surrogates, NUL, RTL marks, very long strings),
filters (the grammar and everything around it), adapter names (paths, `..`), snapshot ids and chat
model names. Each case is sent as raw JSON (so lone surrogates and NaN reach the server as a client
could send them) to a real app over a real workspace. Checked per case: no 5xx; every refusal in the
error envelope; every accepted write read back identically; deleted ids gone; a filter is accepted
exactly when the index's own parser accepts it; an unknown adapter name gets one message that says
nothing about folders.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragtune.core.adapters import unknown_adapter
from ragtune.core.errors import DataError
from ragtune.retrieval.filters import parse_filters

EDGE = [
    "",
    "\x00",
    "\ud800",
    "a\udfffb",
    "\u202eevil\u202c",
    "\u200f\u05e9\u05dc\u05d5\u05dd",
    "\ufeff",
    "\U0001f600",
    "\U0010ffff",
    "e\u0301",
    "../",
    "/etc",
    "..",
    "%2e%2e",
    "C:\\Windows",
    "x" * 3000,
    "\u0000\u0001\u007f",
]
ADAPTERS = ["tiny", "../index", "/etc", "..", ".", "tiny/../tiny", "ghost", "a" * 300, "%2e%2e", "tiny\x00", "-x"]
IDS = ["doc-a", "doc-b", "\u00fc-\u00f1", "rtl\u202eid", "\U0001f600", "a.b", "x%y", "q?z", "h#x", "..", "."]
FILTER_KEYS = ["tags", "rev", "doc_id", "title", "updated_at", "lang", "a b", "$x", "k" * 80]
OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$regex", "", "$IN"]

chars = st.characters(exclude_categories=())  # surrogates included
plain = st.text(max_size=40)  # any code point but surrogates: NUL, RTL marks, emoji, combining marks
odd_strings = st.one_of(st.text(chars, max_size=40), st.sampled_from(EDGE), st.text(max_size=8).map(lambda s: s * 400))
strings = st.one_of(plain, plain, odd_strings)
safe_numbers = st.one_of(
    st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([2**53, -0.0])
)
odd_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**53 + 1, -(2**53) - 1, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
)
numbers = st.one_of(safe_numbers, safe_numbers, odd_numbers)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
safe_scalars = st.one_of(st.none(), st.booleans(), safe_numbers, plain)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = {"n": value} if i % 2 else [value]
    return value


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=8,
    )


good_metadata = st.dictionaries(plain, _json(safe_scalars), max_size=5)
metadata = st.one_of(
    good_metadata,
    good_metadata,
    good_metadata,
    st.dictionaries(st.one_of(st.text(chars, max_size=12), st.sampled_from(EDGE)), _json(scalars), max_size=5),
    st.integers(1, 12).map(lambda d: {"deep": deep(d)}),
    st.integers(1, 400).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.just({"x": "y" * 20_000}),
)
doc_ids = st.one_of(st.sampled_from(IDS), st.text(chars, min_size=0, max_size=30), st.just("i" * 250))
filter_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.integers(0, 300).map(lambda n: list(range(n))),
    st.dictionaries(st.sampled_from(OPS), st.one_of(scalars, st.lists(scalars, max_size=3), st.just({})), max_size=3),
)
filters = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(FILTER_KEYS), st.text(chars, max_size=6)), filter_values, max_size=4),
    st.just({"x": {}}),
    st.just({"rev": {"$in": list(range(40_000))}}),
    st.just({f"k{i}": i for i in range(3000)}),
    st.sampled_from([[], "x", 3, None]),
)
snapshots = st.one_of(
    st.just("CURRENT"), st.sampled_from(EDGE), st.text(chars, max_size=20), st.just("s00001-00000000")
)
models = st.one_of(
    st.sampled_from(["ragtune-base", "ragtune-rag", "ragtune-ft:tiny", "gpt-4", "ragtune-", "ragtune-base:tiny"]),
    st.sampled_from(ADAPTERS).map(lambda a: f"ragtune-ft:{a}"),
    st.text(chars, max_size=30).map(lambda a: f"ragtune-hybrid:{a}"),
)
adapter_names = st.one_of(st.sampled_from(ADAPTERS), st.text(chars, min_size=1, max_size=20))


def doc_body(with_id: bool) -> st.SearchStrategy[dict[str, Any]]:
    parts: dict[str, Any] = {
        "text": st.one_of(st.text(max_size=200).map(lambda t: t or "x"), strings),
        "title": st.one_of(st.just(""), plain, strings),
        "metadata": metadata,
    }
    if with_id:
        parts["id"] = doc_ids
    return st.fixed_dictionaries(parts)


@dataclass
class Req:
    kind: str
    method: str
    path: str
    body: Any = None
    probe: Any = None  # what the check needs: the filter, the adapter name ...


def _path_id(doc_id: str) -> str:
    return quote(doc_id, safe="", errors="surrogatepass")


requests = st.one_of(
    st.builds(lambda i, b: Req("put", "PUT", f"/v1/documents/{_path_id(i)}", b, i), doc_ids, doc_body(False)),
    st.builds(
        lambda u, d: Req("batch", "POST", "/v1/documents:batch", {"upsert": u, "delete": d}),
        st.lists(doc_body(True), max_size=3),
        st.lists(doc_ids, max_size=2),
    ),
    st.builds(lambda i: Req("get", "GET", f"/v1/documents/{_path_id(i)}", probe=i), doc_ids),
    st.builds(lambda i: Req("delete", "DELETE", f"/v1/documents/{_path_id(i)}", probe=i), doc_ids),
    st.builds(
        lambda f: Req(
            "filter", "POST", "/v1/answer", {"question": "battery", "mode": "rag", "top_k": 1, "filters": f}, f
        ),
        filters,
    ),
    st.builds(
        lambda s: Req("snapshot", "POST", "/v1/answer", {"question": "q", "mode": "rag", "snapshot": s}, s), snapshots
    ),
    st.builds(
        lambda a: Req("adapter", "POST", "/v1/answer", {"question": "q", "mode": "ft", "adapter": a}, a), adapter_names
    ),
    st.builds(lambda a: Req("load", "POST", f"/v1/adapters/{_path_id(a)}:load", probe=a), adapter_names),
    st.builds(
        lambda a: Req("unload", "POST", f"/v1/adapters/{_path_id(a)}:unload", probe=a),
        adapter_names.filter(lambda a: a != "tiny"),
    ),
    st.builds(
        lambda m, c: Req(
            "chat", "POST", "/v1/chat/completions", {"model": m, "messages": [{"role": "user", "content": c}]}, m
        ),
        models,
        st.one_of(strings, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": strings}), max_size=2)),
    ),
    st.builds(lambda q: Req("question", "POST", "/v1/answer", {"question": q, "mode": "base"}), odd_strings),
    st.sampled_from([Req("ro", "GET", p) for p in ("/v1/index", "/v1/models", "/v1/adapters", "/healthz", "/readyz")]),
)


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    writes: int = 0
    unreadable_writes: int = 0
    server_errors: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, what: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(what)


class Fuzzer:
    def __init__(self, client: TestClient, workspace: str) -> None:
        self.c = client
        self.workspace = workspace
        self.tally = Tally()

    def send(self, req: Req) -> Any:
        body = req.body
        if req.kind == "snapshot" and req.probe == "CURRENT":
            body = {**body, "snapshot": self.c.get("/v1/index").json()["snapshot"]}
        for key in ("max_new_tokens",):
            if req.kind in ("filter", "snapshot", "adapter", "question") and isinstance(body, dict):
                body = {**body, key: 1}
        if req.kind == "chat":
            body = {**body, "max_tokens": 1}
        content = None if body is None else json.dumps(body)  # ensure_ascii: lone surrogates travel as \\udXXX
        return self.c.request(req.method, req.path, content=content, headers={"content-type": "application/json"})

    def run(self, req: Req) -> None:
        t = self.tally
        r = self.send(req)
        t.cases += 1
        t.statuses[r.status_code] += 1
        t.kinds[f"{req.kind}:{r.status_code // 100}xx"] += 1
        where = f"{req.method} {req.path[:80]} {json.dumps(req.body)[:160] if req.body is not None else ''}"
        if r.status_code >= 500 and r.status_code != 503:
            t.server_errors += 1
            t.problem(f"{r.status_code} on {where}: {r.text[:200]}")
            return
        if r.status_code >= 400:
            err = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
            if not (err.get("code") and err.get("message")):
                t.problem(f"{r.status_code} without the error envelope on {where}")
            self.check_refusal(req, r.status_code, err.get("message", ""), where)
        else:
            self.check_accepted(req, r, where)

    def check_refusal(self, req: Req, status: int, message: str, where: str) -> None:
        if self.workspace in message or "adapter_config" in message or "PEFT" in message:
            self.tally.problem(f"a refusal names the filesystem on {where}: {message}")
        if req.kind == "filter" and status == 422 and _filter_ok(req.probe):
            self.tally.problem(f"the edge refused a filter the index accepts on {where}: {message}")
        if req.kind == "adapter" and status == 404 and message != str(unknown_adapter(req.probe)):
            self.tally.problem(f"an unknown adapter got another message on {where}: {message}")

    def check_accepted(self, req: Req, r: Any, where: str) -> None:
        if req.kind == "filter" and not _filter_ok(req.probe):
            self.tally.problem(f"a filter the index refuses was accepted on {where}")
        if req.kind == "put":
            self.read_back(req.probe, req.body, where)
        elif req.kind == "batch":
            for doc in req.body["upsert"]:
                self.read_back(doc["id"], doc, where)
            for gone in req.body["delete"]:
                if self.c.get(f"/v1/documents/{_path_id(gone)}").status_code != 404:
                    self.tally.problem(f"deleted '{gone}' still readable after {where}")
        elif req.kind == "delete" and self.c.get(req.path).status_code != 404:
            self.tally.problem(f"deleted document still readable after {where}")

    def read_back(self, doc_id: str, sent: dict[str, Any], where: str) -> None:
        t = self.tally
        t.writes += 1
        got = self.c.get(f"/v1/documents/{_path_id(doc_id)}")
        want = json.loads(json.dumps(sent))  # as the server parsed it; 1.0 == 1 and -0.0 == 0 compare equal
        want = {
            "id": doc_id,
            "text": want["text"],
            "title": want.get("title", ""),
            "metadata": want.get("metadata", {}),
        }
        body = got.json() if got.status_code == 200 else {}
        if {k: body.get(k) for k in want} != want:
            t.unreadable_writes += 1
            t.problem(f"write not read back identically ({got.status_code}) after {where}: {got.text[:200]}")


def _filter_ok(f: Any) -> bool:
    try:
        parse_filters(f)
    except DataError:
        return False
    return isinstance(f, dict) or f is None


def fuzz(client: TestClient, workspace: str, cases: int, seed_derandomize: bool = True) -> tuple[Tally, float]:
    """Run `cases` drawn requests against `client`; return the tally and the seconds taken."""
    fz = Fuzzer(client, workspace)

    @settings(
        max_examples=cases,
        deadline=None,
        derandomize=seed_derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(req=requests)
    def one(req: Req) -> None:
        fz.run(req)

    t0 = time.perf_counter()
    with client:  # one event loop for every request, not one per request
        one()
    return fz.tally, time.perf_counter() - t0
