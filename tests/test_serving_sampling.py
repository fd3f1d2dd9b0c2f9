"""Per-request sampling over HTTP: temperature, top_p, seed, stop and max_tokens reach the generator;
`n` above 1 is refused; the scheduler never mixes different sampling in one generate call."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from ragtune.core.config import load_config
from ragtune.core.options import Sampling
from ragtune.core.prompt import PromptBuilder
from ragtune.serving.app import create_app
from ragtune.serving.pipeline import Pipeline
from ragtune.serving.scheduler import Job, Scheduler, batch_key

POEM = "Write a short poem about the sea."
N = 12


@pytest.fixture(scope="module")
def client(generator, tmp_path_factory):
    """The base model behind the app, no index: mode base needs neither adapter nor retrieval."""
    cfg = load_config(workspace=tmp_path_factory.mktemp("sampling-ws"), environ={})
    return TestClient(create_app(Pipeline(cfg, generator)))


def chat(client: TestClient, **fields) -> dict:
    body = {"model": "ragtune-base", "messages": [{"role": "user", "content": POEM}], "max_tokens": N, **fields}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def text(reply: dict) -> str:
    return reply["choices"][0]["message"]["content"]


def test_the_same_seed_gives_the_same_text(client):
    first = text(chat(client, temperature=1.3, seed=11))
    again = text(chat(client, temperature=1.3, seed=11))
    other = text(chat(client, temperature=1.3, seed=12))
    greedy = text(chat(client))
    print(f"seed 11: {first!r}\nseed 12: {other!r}\ngreedy: {greedy!r}")
    assert first == again and first != other and first != greedy
    assert text(chat(client, temperature=0, seed=11)) == greedy  # temperature 0 is greedy, seed or not
    nucleus = text(chat(client, temperature=1.3, seed=11, top_p=0.3))
    assert nucleus != first  # top_p reached the sampler
    assert chat(client, max_tokens=3)["usage"]["completion_tokens"] <= 3


def test_a_stop_string_cuts_the_answer_and_the_stream(client):
    whole = chat(client)
    full = text(whole)
    stop = full.split()[3]
    expected = full[: full.index(stop)].strip()
    cut = chat(client, stop=[stop, "never-appears"])
    print(f"full {full!r}, stop {stop!r} -> {text(cut)!r}")
    assert text(cut) == expected and cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < whole["usage"]["completion_tokens"]  # decoding stopped there
    body = {"model": "ragtune-base", "messages": [{"role": "user", "content": POEM}], "max_tokens": N}
    with client.stream("POST", "/v1/chat/completions", json={**body, "stop": stop, "stream": True}) as r:
        chunks = [json.loads(x[5:]) for x in r.iter_lines() if x.startswith("data:") and "[DONE]" not in x]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed.strip() == expected and stop not in streamed
    answer = client.post("/v1/answer", json={"question": POEM, "mode": "base", "max_new_tokens": N, "stop": stop})
    assert answer.status_code == 200 and stop not in answer.json()["answer"]


def test_answer_route_takes_the_sampling_fields(client):
    payload = {"question": POEM, "mode": "base", "max_new_tokens": N, "temperature": 1.3, "seed": 11}
    one = client.post("/v1/answer", json=payload).json()["answer"]
    again = client.post("/v1/answer", json=payload).json()["answer"]
    assert one == again == text(chat(client, temperature=1.3, seed=11))


def test_n_above_one_is_a_400_and_n_one_is_served(client):
    r = client.post(
        "/v1/chat/completions",
        json={"model": "ragtune-base", "messages": [{"role": "user", "content": POEM}], "n": 2},
    )
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "n: 2 choices asked; this server answers one (n=1)",
        "type": "invalid_request_error",
        "code": "invalid_request",
        "param": "n",
    }
    assert len(chat(client, n=1, max_tokens=2)["choices"]) == 1


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 2.5}, {"top_p": 0}, {"stop": ["a", "b", "c", "d", "e"]}, {"stop": ""}, {"n": 0}],
)
def test_out_of_range_sampling_fields_are_422(client, fields):
    body = {"model": "ragtune-base", "messages": [{"role": "user", "content": POEM}], **fields}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 422 and r.json()["error"]["param"] == next(iter(fields)), r.text


def job(prompt: str, sampling: Sampling | None, adapter: str | None = None) -> tuple[Job, list]:
    events: list = []
    j = Job(prompt, adapter, 10, time.monotonic() + 120, 120, emit=events.append, sampling=sampling)
    return j, events


def test_batch_key_groups_only_requests_that_pick_tokens_the_same_way():
    greedy = [job("p", None)[0], job("p", Sampling(stop=("x",)))[0], job("p", Sampling(temperature=0.5, seed=3))[0]]
    assert len({batch_key(j, False) for j in greedy}) == 1  # greedy: stop strings are per row, the seed unused
    assert batch_key(greedy[0], False) != batch_key(job("p", None, "tiny")[0], False)
    warm = Sampling(do_sample=True, temperature=0.9)
    assert batch_key(job("p", warm)[0], False) == batch_key(job("q", warm)[0], False)
    assert batch_key(job("p", warm)[0], False) != batch_key(job("p", warm.model_copy(update={"top_p": 0.5}))[0], False)
    seeded = warm.model_copy(update={"seed": 1})
    assert batch_key(job("p", seeded)[0], False) != batch_key(job("p", seeded)[0], False)  # always alone
    assert batch_key(job("p", None)[0], True) == batch_key(job("q", None)[0], True) != batch_key(greedy[0], False)


def test_the_scheduler_batches_greedy_rows_and_runs_a_seeded_one_alone(generator):
    pb = PromptBuilder(generator.tokenizer, "Be brief.")
    prompts = [pb.prompt("What is the capital of France?"), pb.prompt(POEM), pb.prompt("Name one primary colour.")]
    warm = Sampling(do_sample=True, temperature=1.3, seed=5)
    stop = Sampling(stop=("Paris",))
    plan = [(prompts[0], stop), (prompts[1], warm), (prompts[2], None)]
    alone = [generator.generate([p], max_new_tokens=10, sampling=s)[0].text for p, s in plan]
    scheduler = Scheduler(generator, max_batch=8, batch_wait_ms=1)
    scheduler.start()
    gate = threading.Event()
    held = scheduler.call(gate.wait)  # hold the worker so all three queue up before the first batch
    time.sleep(0.1)
    jobs = [job(p, s) for p, s in plan]
    for j, _ in jobs:
        scheduler.submit(j)
    gate.set()
    held.result(timeout=30)
    deadline = time.monotonic() + 120
    while any(not events or events[-1][0] != "done" for _, events in jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
    got = [events[-1][1].text for _, events in jobs]
    print(f"alone {alone}\nscheduled {got}\nbatches {scheduler.stats.batches}")
    assert got == alone and "Paris" not in got[0]
    assert scheduler.stats.batches == 2 and scheduler.stats.rows == 3  # the greedy pair shared one call
