"""Issue 19's findings, each pinned: adapter names never reach the filesystem, filters and document
fields are validated at the edge with the index's own grammar, and what is accepted reads back."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from ragtune.core.adapters import adapter_path, is_adapter_name
from ragtune.core.errors import DataError, NotFoundError
from ragtune.retrieval.filters import MAX_KEYS, MAX_VALUES, parse_filters
from ragtune.serving.app import create_app


@pytest.fixture(scope="module")
def client(serving_pipeline):
    pipeline = serving_pipeline({"max_new_tokens_cap": 1, "max_document_chars": 5000}, own_index=True)
    return TestClient(create_app(pipeline))


def post(client, path: str, body) -> object:
    """Raw JSON, as any client may send it (lone surrogates escaped, NaN as a literal)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def put(client, doc_id: str, body) -> object:
    return client.put(f"/v1/documents/{doc_id}", content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize("name", ["/etc", "../index", "..", "index", "adapters", "tiny/../tiny", "/tmp", "ghost"])
def test_adapter_names_are_not_paths_and_every_unknown_one_gets_the_same_404(client, name):
    ws = str(client.app.state.pipeline.config.workspace)
    r = post(client, "/v1/answer", {"question": "q", "mode": "ft", "adapter": name, "max_new_tokens": 1})
    assert r.status_code == 404, r.text
    msg = r.json()["error"]["message"]
    assert msg == f"unknown adapter '{name}'; `ragtune adapters list` or GET /v1/adapters names them"
    assert ws not in msg and "PEFT" not in msg
    chat = post(
        client, "/v1/chat/completions", {"model": f"ragtune-ft:{name}", "messages": [{"role": "user", "content": "q"}]}
    )
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"
    quoted = name.replace("/", "%2F")
    for action in ("load", "unload"):
        r = client.post(f"/v1/adapters/{quoted}:{action}")
        assert r.status_code == 404 and ws not in r.text, (action, r.text)


def test_a_registered_adapter_still_answers_and_unloading_one_not_loaded_is_404(client):
    r = post(client, "/v1/answer", {"question": "q", "mode": "ft", "adapter": "tiny", "max_new_tokens": 1})
    assert r.status_code == 200 and r.json()["adapter"] == "tiny"
    assert client.post("/v1/adapters/ghost:unload").status_code == 404
    assert not is_adapter_name("../x") and not is_adapter_name("a..b") and is_adapter_name("house-style.v2")
    with pytest.raises(NotFoundError, match="unknown adapter '/etc'"):
        adapter_path(client.app.state.pipeline.config.adapters_dir, "/etc")


@pytest.mark.parametrize(
    "filters",
    [
        {"x": {}},
        {"x": 2**64},
        {"x": {"$gt": -(2**53) - 1}},
        {"x": float("inf")},
        {f"k{i}": i for i in range(3000)},
        {"x": {"$in": []}},
        {"x": {"$regex": "a"}},
        {"a b": 1},
        {"x": None},
        {"x": {"$eq": {"nested": 1}}},
        {"title": 5},
        {"updated_at": "yesterday"},
        {"x": "nul\x00"},
        {"x": "\ud800"},
        [],
    ],
)
def test_bad_filters_are_422_at_the_edge(client, filters):
    r = post(client, "/v1/answer", {"question": "battery", "mode": "rag", "filters": filters, "max_new_tokens": 1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    assert r.json()["error"]["message"].startswith("filters")


def test_a_40000_value_in_is_refused_quickly(client):
    t0 = time.perf_counter()
    r = post(client, "/v1/answer", {"question": "q", "mode": "rag", "filters": {"rev": {"$in": list(range(40_000))}}})
    assert r.status_code == 422 and f"at most {MAX_VALUES}" in r.text
    assert time.perf_counter() - t0 < 5


def test_good_filters_pass_the_edge_and_the_index(client):
    ok = {"doc_id": ["zorblat-hours", "zorblat-battery"], "rev": {"$gte": 2**53, "$lt": 1.5}, "tags": {"$nin": ["x"]}}
    r = post(client, "/v1/answer", {"question": "battery", "mode": "rag", "filters": ok, "max_new_tokens": 1})
    assert r.status_code == 200, r.text
    assert len(parse_filters({f"k{i}": i for i in range(MAX_KEYS)})) == MAX_KEYS
    with pytest.raises(DataError):
        parse_filters({f"k{i}": i for i in range(MAX_KEYS + 1)})


def test_deep_metadata_and_unsafe_strings_are_422_and_nothing_is_stored(client):
    snap = client.get("/v1/index").json()["snapshot"]
    deep: object = 1
    for _ in range(50):
        deep = {"n": deep}
    bad = [
        {"text": "t", "metadata": {"deep": deep}},
        {"text": "a lone \ud800 surrogate"},
        {"text": "t", "title": "\udfff"},
        {"text": "t", "metadata": {"k": "\ud800"}},
        {"text": "t", "metadata": {"\ud800": 1}},
        {"text": "nul \x00 inside"},
        {"text": "t", "metadata": {"big": 2**64}},
        {"text": "t", "metadata": {"nan": float("nan")}},
        {"text": "t", "metadata": {f"k{i}": i for i in range(300)}},
        {"text": "t", "metadata": {"long": "x" * 20_000}},
        {"text": "x" * 5001},
        {"text": "   "},
    ]
    for body in bad:
        r = put(client, "odd", body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (body, r.text)
    batch = post(
        client, "/v1/documents:batch", {"upsert": [{"id": "b1", "text": "ok"}, {"id": "b2", "text": "\ud800"}]}
    )
    assert batch.status_code == 422 and client.get("/v1/index").json()["snapshot"] == snap
    for doc_id in ("nul\x00id", "..", "tab\tid"):
        r = post(client, "/v1/documents:batch", {"upsert": [{"id": doc_id, "text": "t"}]})
        assert r.status_code == 422, (doc_id, r.text)
    assert client.get("/v1/documents/odd").status_code == 404


def test_what_is_accepted_reads_back_identically(client):
    meta = {
        "rtl": "\u202eevil\u202c \u05e9\u05dc\u05d5\u05dd",
        "emoji": "\U0001f600\U0010ffff",
        "n": [2**53, -(2**53), 1.5, -0.0, True, None],
        "nested": {"a": {"b": {"c": [1, {"d": "e\u0301"}]}}},
    }
    body = {
        "text": "Zorblat \ufeffnotes \u202e with RTL and \U0001f600.",
        "title": "T\u00eftle \u200f",
        "metadata": meta,
    }
    doc_id = "r%C3%BCckw\u00e4rts-%F0%9F%98%80"
    assert put(client, doc_id, body).status_code == 200
    got = client.get(f"/v1/documents/{doc_id}").json()
    assert (got["id"], got["text"], got["title"], got["metadata"]) == (
        "rückwärts-😀",
        body["text"],
        body["title"],
        json.loads(json.dumps(meta)),
    )


def test_the_cli_takes_an_adapter_path_only_after_checking_it(serving_pipeline, tmp_path):
    from ragtune.cli.serving import _adapter_ref

    pipeline = serving_pipeline()
    assert _adapter_ref(pipeline, "tiny") == "tiny" and _adapter_ref(pipeline, None) is None
    with pytest.raises(NotFoundError, match="adapter folder not found"):
        _adapter_ref(pipeline, str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a PEFT adapter"):
        _adapter_ref(pipeline, str(tmp_path / "empty"))
