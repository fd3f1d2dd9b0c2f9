"""The real `openai` client against a live uvicorn server: chat completions, streaming and not."""

import openai
import pytest

from ragtune.serving.app import create_app

Q = "How long does a Zorblat lamp battery last?"


@pytest.fixture(scope="module")
def base_url(serving_pipeline, live_server):
    with live_server(create_app(serving_pipeline())) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-on-loopback", max_retries=0, timeout=60)


def test_models_list_modes_and_adapters(client):
    ids = {m.id for m in client.models.list()}
    assert {"ragtune-base", "ragtune-rag", "ragtune-ft", "ragtune-hybrid", "ragtune-hybrid:tiny"} <= ids


def test_chat_completion(client):
    r = client.chat.completions.create(
        model="ragtune-hybrid:tiny", messages=[{"role": "user", "content": Q}], max_tokens=12
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 12 and r.usage.total_tokens > r.usage.prompt_tokens
    extra = r.model_extra["ragtune"]
    assert extra["adapter"] == "tiny" and extra["citations"][0]["doc_id"] == "zorblat-battery" and extra["snapshot"]


def test_chat_completion_streams(client):
    stream = client.chat.completions.create(
        model="ragtune-rag", messages=[{"role": "user", "content": Q}], max_tokens=8, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3 and text.strip()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_unknown_model_is_a_404_the_client_understands(client):
    with pytest.raises(openai.NotFoundError, match="unknown model"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": Q}], max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="ghost"):
        client.chat.completions.create(
            model="ragtune-ft:ghost", messages=[{"role": "user", "content": Q}], max_tokens=2
        )


def test_errors_reach_the_client_in_the_openai_shape(client):
    with pytest.raises(openai.BadRequestError, match="n=1") as err:
        client.chat.completions.create(model="ragtune-base", messages=[{"role": "user", "content": Q}], n=2)
    assert (err.value.type, err.value.code, err.value.param) == ("invalid_request_error", "invalid_request", "n")
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": Q}], max_tokens=2)
    assert (err.value.code, err.value.param) == ("model_not_found", "model")


def test_the_clients_sampling_fields_are_honoured(client):
    def ask(**kw):
        r = client.chat.completions.create(
            model="ragtune-base", messages=[{"role": "user", "content": "Write about the sea."}], max_tokens=8, **kw
        )
        return r.choices[0].message.content

    first = ask(temperature=1.3, top_p=0.95, seed=21)
    assert first == ask(temperature=1.3, top_p=0.95, seed=21) != ask()
    word = first.split()[1]
    assert ask(temperature=1.3, top_p=0.95, seed=21, stop=[word]) == first[: first.index(word)].strip()
