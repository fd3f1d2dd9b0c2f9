"""Untrusted callers (issue 22): loopback Host names without keys, 401 with WWW-Authenticate, a limit
on requests without a valid key, /healthz without paths, printable ids, secrets in no error, log,
manifest or probe, and a costly filter that holds up only its own request."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragtune.core.config import load_config
from ragtune.core.errors import ConfigError
from ragtune.core.types import Document
from ragtune.serving.app import create_app
from ragtune.serving.security import host_name

SECRET = "zq-SECRET-7c1f5S71IRz1THrHZp2n"  # distinctive: grep for it everywhere
SHORT_SECRET = "zq-SHORT-4711"  # under the 16-character minimum: the config error must not echo it


def test_host_names_parse_with_ports_and_brackets():
    assert host_name("LOCALHOST:8000") == "localhost" and host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("[::1]:9000") == "::1" and host_name("localhost.") == "localhost"
    assert host_name("evil.example:80") == "evil.example"


def test_without_keys_only_loopback_host_names_are_served(serving_pipeline):
    c = TestClient(create_app(serving_pipeline()), client=("127.0.0.1", 5000))
    for host in ("localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:80", "[::1]"):
        assert c.get("/v1/index", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "rebind.attacker.test:8000", "127.0.0.1.nip.io", ""):
        r = c.get("/v1/index", headers={"Host": host})
        assert r.status_code == 421 and r.json()["error"]["code"] == "misdirected_host", host
        assert "loopback" in r.json()["error"]["message"] and "serving.api_keys" in r.json()["error"]["message"]
    assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 421


def test_401_names_the_scheme_and_key_guessing_is_rate_limited(serving_pipeline):
    keys = [{"key": SECRET, "scope": "admin", "name": "ops"}]
    app = create_app(serving_pipeline({"api_keys": keys, "unauthenticated_per_minute": 3}))
    c = TestClient(app, client=("10.0.0.9", 5000))
    first = c.get("/v1/index")
    assert first.status_code == 401 and first.headers["www-authenticate"].startswith("Bearer")
    codes = [c.get("/v1/index", headers={"Authorization": f"Bearer guess-{i:016d}"}).status_code for i in range(3)]
    assert codes == [401, 401, 429]
    assert c.get("/v1/index", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200  # a key still works
    other = TestClient(app, client=("10.0.0.10", 5000))
    assert other.get("/v1/index").status_code == 401  # per client address
    # keys configured: any Host name (the server is meant to be reached by name then)
    assert c.get("/v1/index", headers={"Host": "api.example", "Authorization": f"Bearer {SECRET}"}).status_code == 200


def test_healthz_names_models_and_adapters_not_paths(serving_pipeline):
    pipeline = serving_pipeline(own_index=True)
    pipeline.index.embedder_ref = "/srv/private/models/house-embedder"
    body = TestClient(create_app(pipeline)).get("/healthz").json()
    assert body["index"]["embedder"] == "house-embedder"
    assert "/srv/private" not in json.dumps(body)
    assert all("/" not in name for name in body["adapters"])


@pytest.mark.parametrize("ident", ["evil\u202egpj", "zero\u200bwidth", "c1\u0085x", "nul\u0000", "x" * 201])
def test_document_ids_that_do_not_print_are_422(serving_pipeline, ident: str):
    c = TestClient(create_app(serving_pipeline(own_index=True)))
    batch = c.post("/v1/documents:batch", json={"upsert": [{"id": ident, "text": "t"}]})
    assert batch.status_code == 422 and batch.json()["error"]["code"] == "invalid_request"
    if "\u0000" not in ident:  # a URL cannot carry NUL
        put = c.put(f"/v1/documents/{ident}", json={"text": "t"})
        assert put.status_code == 422
        assert c.get(f"/v1/documents/{ident}").status_code == 422


def test_secrets_appear_in_no_error_log_manifest_or_probe(serving_pipeline, caplog, tmp_path: Path):
    from ragtune.eval.harness.manifest import manifest

    with pytest.raises(ConfigError) as short:
        load_config(environ={"RAGTUNE_SERVING__API_KEYS": f"[{{key: {SHORT_SECRET}}}]"})
    with pytest.raises(ConfigError) as listed:
        load_config(environ={}, overrides={"serving": {"api_keys": [SHORT_SECRET]}})
    with pytest.raises(ConfigError) as dsn:
        load_config(environ={"RAGTUNE_RETRIEVAL__DSN": "[x]", "RAGTUNE_RETRIEVAL__BACKEND": "postgres"})
    assert "api_keys.0.key" in str(short.value)
    texts = [str(short.value), str(listed.value), str(dsn.value)]
    with caplog.at_level(logging.DEBUG):
        cfg = load_config(
            workspace=tmp_path, environ={"RAGTUNE_SERVING__API_KEYS": f"[{{key: {SECRET}, scope: admin}}]"}
        )
        texts += [json.dumps(manifest(cfg)), cfg.model_dump_json(), repr(cfg)]
        pipeline = serving_pipeline({"api_keys": [{"key": SECRET, "scope": "admin"}]})
        c = TestClient(create_app(pipeline))
        texts += [c.get("/healthz").text, c.get("/metrics").text, c.get("/v1/index").text]
        texts += [c.get("/v1/index", headers={"Authorization": f"Bearer {SECRET}x"}).text]
        texts += [c.get("/v1/index", headers={"Authorization": f"Bearer {SECRET}"}).text]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert SECRET not in text and SHORT_SECRET not in text


def _worst_filter() -> dict[str, dict[str, object]]:
    """The costliest filter the edge accepts over `_METADATA`: 32 keys, all 8 operators, 256 values in
    each `$in`/`$nin`, every condition true for every chunk (so none ends the evaluation early)."""
    return {
        f"k{j}": {
            "$in": [f"v{j}-0"] + [f"x{j}-{i}" for i in range(255)],
            "$nin": [f"y{j}-{i}" for i in range(256)],
            "$eq": f"v{j}-1",
            "$ne": "zzz",
            "$gt": "",
            "$gte": "",
            "$lt": "~",
            "$lte": "~",
        }
        for j in range(32)
    }


_METADATA = {f"k{j}": [f"v{j}-{i}" for i in range(8)] for j in range(32)}


@pytest.mark.slow
def test_a_worst_case_filter_holds_up_only_its_own_request(serving_pipeline):
    """A request with the costliest filter runs beside plain rag requests. Had its filter held the model
    thread, no plain request queued behind it could finish before it did; here several finish while it
    is still evaluating (an order of events, not a timing bound, so a loaded machine cannot fail it)."""
    pipeline = serving_pipeline(own_index=True)
    docs = [Document(id=f"m{i}", text="The Zorblat lamp is mauve.", metadata=_METADATA) for i in range(3000)]
    pipeline.index.upsert(docs, progress=False)  # one text: embedded once
    c = TestClient(create_app(pipeline))
    plain = {"question": "What colour is the Zorblat lamp?", "mode": "rag", "max_new_tokens": 1}

    def timed() -> float:
        t0 = time.perf_counter()
        assert c.post("/v1/answer", json=plain).status_code == 200
        return time.perf_counter() - t0

    timed()  # warm
    alone = statistics.median(timed() for _ in range(5))
    finished: dict[str, float] = {}

    def costly_request() -> None:
        assert c.post("/v1/answer", json={**plain, "filters": _worst_filter()}).status_code == 200
        finished["costly"] = time.perf_counter()

    started = time.perf_counter()
    costly = threading.Thread(target=costly_request)
    costly.start()
    time.sleep(0.05)
    plain_done: list[float] = []
    while costly.is_alive():
        timed()
        plain_done.append(time.perf_counter())
    costly.join(timeout=120)
    filter_time = finished["costly"] - started
    during = sum(t < finished["costly"] for t in plain_done)
    note = f"alone {alone:.3f} s, filter request {filter_time:.2f} s, plain requests done during it {during}"
    assert filter_time > 8 * alone, note  # costly enough that plain requests queued behind it would show
    assert during >= 3, note
