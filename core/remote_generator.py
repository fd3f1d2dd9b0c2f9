"""The `openai` generator backend: the prompt builder's messages sent to any OpenAI-compatible server
(vLLM, llama.cpp server, a hosted model, another `ragtune serve` with `serving.engine_api`).

`model` in each request is `models.served_model` (default: the generator reference, a bundled
model's hub id) for base and rag, and the adapter's name for ft and hybrid: vLLM serves adapters
under the names given by `--lora-modules name=path`. Every request streams (SSE), so the time to the
first token is measured here the way the in-process generator measures it, and a cancelled row
(client gone, deadline) closes its connection. `usage` comes from the server; where it sends none,
the local tokenizer counts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx

from ragtune.core.config import GenerationConfig, ModelsConfig
from ragtune.core.errors import ConfigError, DataError, NotFoundError, UpstreamError
from ragtune.core.generator import Generation, RowRequest, StreamText, cut_at_stop, stop_at
from ragtune.core.options import Sampling
from ragtune.core.prompt import Messages

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0
RETRY_LATER = {429, 503}  # the server is busy or starting: 503 for our client too


def api_key(env: str | None) -> str | None:
    """The key from the variable `models.api_key_env` names; a named variable that is unset is an error."""
    if env is None:
        return None
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigError(
            f"models.api_key_env names the environment variable {env}, which is not set; "
            f"export the generator server's API key in {env} (or unset models.api_key_env)"
        )
    return value


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or resp.text[:300])
    except (ValueError, AttributeError):
        return resp.text[:300]


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


class OpenAIGenerator:
    """A client of one OpenAI-compatible server: the `TextGenerator` contract over HTTP."""

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        served_model: str,
        tokenizer: Any,
        config: GenerationConfig | None = None,
        key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self._adapters: dict[str, Path] = {}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_config(cls, models: ModelsConfig, generation: GenerationConfig) -> OpenAIGenerator:
        """Only the tokenizer loads here (prompt budgets and usage fallbacks), never the model."""
        from ragtune.core.models import load_tokenizer, portable_reference

        if not models.base_url:
            raise ConfigError("models.generator_backend openai needs models.base_url")
        key = api_key(models.api_key_env)
        tok = load_tokenizer(models.generator, models.cache_dir)
        served = models.served_model or portable_reference(models.generator)
        return cls(models.base_url, served, tok, generation, key)

    # state ----------------------------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, Path]:
        return self._adapters

    @property
    def ready(self) -> bool:
        return True  # the server is asked per request; an unreachable one answers 503 there

    def model_name(self, adapter: str | None) -> str:
        """The `model` a request names: the adapter (vLLM `--lora-modules` name) or the base model."""
        if adapter is None:
            return self.served_model
        if adapter not in self._adapters:
            raise NotFoundError(f"adapter '{adapter}' is not loaded; loaded: {sorted(self._adapters) or 'none'}")
        return adapter

    def server_models(self) -> list[str] | None:
        """The server's `GET /models` ids, or None when it does not list them."""
        try:
            resp = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code in (404, 405, 501):
            return None
        if resp.status_code != 200:
            raise self._http_error(resp, "/models")
        try:
            return [str(m["id"]) for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return None

    # adapters: names on the server ----------------------------------------------------------------
    def load_adapter(self, name: str, path: Path) -> None:
        """Register `name` as a model of the server (checked against its `/models` list when it has one)."""
        if name in self._adapters:
            return
        served = self.server_models()
        if served is not None and name not in served:
            raise NotFoundError(
                f"adapter '{name}' is not served by {self.base_url} (its models: {', '.join(served) or 'none'}); "
                f"start the server with it, e.g. `vllm serve MODEL --enable-lora --lora-modules {name}={path}`"
            )
        self._adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise NotFoundError(f"adapter '{name}' is not loaded")
        del self._adapters[name]

    def warm_prefill(self, adapter: str | None) -> None:
        return None  # the server keeps its own caches

    def prefill_precision(self, dtype: str | None = None) -> AbstractContextManager[Any]:
        return nullcontext()

    def prefill_dtype_for(self, dtype: str | None = None) -> str:
        return "float32"  # the server picks its own precision; nothing here runs a prompt

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # requests -------------------------------------------------------------------------------------
    def _unreachable(self, exc: httpx.HTTPError) -> UpstreamError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
        return UpstreamError(f"the generator server at {self.base_url} {kind}: {exc}", status=503)

    def _http_error(self, resp: httpx.Response, path: str, model: str | None = None) -> UpstreamError:
        status, msg = resp.status_code, _error_message(resp)
        what = f"{self.base_url}{path}" + (f" (model '{model}')" if model else "")
        if status in (401, 403):
            return UpstreamError(f"{what} refused the API key ({status}): {msg}; check models.api_key_env")
        return UpstreamError(f"{what} answered {status}: {msg}", status=503 if status in RETRY_LATER else 502)

    def _body(self, row: RowRequest, model: str, sampling: Sampling | None) -> dict[str, Any]:
        """The request: greedy as `temperature: 0`, else the call's temperature and top_p; the seed,
        the token limit and the row's stop strings always."""
        cfg, s = self.config, sampling or Sampling()
        body: dict[str, Any] = {
            "model": model,
            "messages": row.messages,
            "max_tokens": row.max_new_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": cfg.seed if s.seed is None else s.seed,
        }
        if row.stop:
            body["stop"] = list(row.stop)
        if s.samples(cfg.do_sample):
            body["temperature"] = s.temperature or cfg.temperature
            if s.top_p is not None:
                body["top_p"] = s.top_p
        else:
            body["temperature"] = 0.0  # greedy, as in process
        if row.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension, for exact-length benchmarks only
        return body

    def _events(self, row: RowRequest, model: str, sampling: Sampling | None) -> Iterator[str | Generation]:
        """One streamed request: text pieces as they arrive (leading whitespace dropped, as in process),
        then its Generation. Closing the iterator closes the connection. The stop strings are cut here
        too, for servers that ignore them."""
        if row.messages is None:
            raise DataError("the openai generator backend sends chat messages; this request has only a prompt text")
        t0 = time.perf_counter()
        first: float | None = None
        text, usage, shown = "", None, StreamText(row.stop)
        try:
            with self.client.stream("POST", "/chat/completions", json=self._body(row, model, sampling)) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise self._http_error(resp, "/chat/completions", model)
                for data in _sse_data(resp.iter_lines()):
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        err = chunk["error"]
                        msg = err.get("message") if isinstance(err, dict) else err
                        raise UpstreamError(f"{self.base_url}/chat/completions (model '{model}') failed: {msg}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        text += (choice.get("delta") or {}).get("content") or ""
                    piece = shown.release(text.lstrip())
                    if piece:
                        first = first or time.perf_counter()
                        yield piece
                    if stop_at(text.lstrip(), row.stop) is not None:
                        break  # a stop string arrived, and the server did not stop on it
                    if row.cancelled is not None and row.cancelled():
                        row.stopped_early = True
                        break
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        except json.JSONDecodeError as exc:
            raise UpstreamError(f"{self.base_url}/chat/completions sent a malformed event: {exc}") from None
        row.finished_at = t1 = time.perf_counter()
        rest = shown.release(text.lstrip(), final=True)
        if rest:
            first = first or t1
            yield rest
        answer = cut_at_stop(text.lstrip(), row.stop).strip()
        yield Generation(
            text=answer,
            prompt_tokens=int(usage["prompt_tokens"]) if usage else self.count_tokens(row.prompt),
            completion_tokens=int(usage["completion_tokens"]) if usage else self.count_tokens(answer),
            ttft_ms=((first or t1) - t0) * 1000,
            generate_ms=(t1 - t0) * 1000,
        )

    def _one(self, row: RowRequest, model: str, sampling: Sampling | None) -> Generation:
        for item in self._events(row, model, sampling):
            if isinstance(item, Generation):
                return item
            if row.on_text is not None:
                row.on_text(item)
        raise UpstreamError(f"{self.base_url}/chat/completions ended without an answer")

    def generate_rows(
        self,
        rows: Sequence[RowRequest],
        adapter: str | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
    ) -> list[Generation]:
        """One request per row, all in flight at once: the server batches them (continuous batching)."""
        model = self.model_name(adapter)
        if len(rows) == 1:
            return [self._one(rows[0], model, sampling)]
        with ThreadPoolExecutor(max_workers=min(len(rows), 64)) as pool:
            return list(pool.map(lambda r: self._one(r, model, sampling), rows))

    def generate(
        self,
        prompts: Sequence[str],
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
        messages: Sequence[Messages] | None = None,
        chunks: Sequence[tuple[str, ...]] | None = None,
    ) -> list[Generation]:
        """Complete each prompt's messages; `generation.batch_size` requests in flight at a time."""
        if messages is None or len(messages) != len(prompts):
            raise DataError("the openai generator backend needs the prompt builder's messages for every prompt")
        limit = max_new_tokens or self.config.max_new_tokens
        stop = sampling.stop if sampling is not None else ()
        rows = [
            RowRequest(prompt=p, max_new_tokens=limit, messages=m, stop=stop)
            for p, m in zip(prompts, messages, strict=True)
        ]
        model = self.model_name(adapter)
        if len(rows) == 1:
            return [self._one(rows[0], model, sampling)]
        with ThreadPoolExecutor(max_workers=min(len(rows), self.config.batch_size)) as pool:
            return list(pool.map(lambda r: self._one(r, model, sampling), rows))

    def stream(
        self,
        prompt: str,
        adapter: str | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        prefill_dtype: str | None = None,
        messages: Messages | None = None,
        chunks: tuple[str, ...] = (),
    ) -> Iterator[str | Generation]:
        """Text pieces as the server sends them, then the Generation; closing the iterator early closes
        the connection, which stops the server's decode."""
        stop = sampling.stop if sampling is not None else ()
        row = RowRequest(prompt, max_new_tokens or self.config.max_new_tokens, messages=messages, stop=stop)
        yield from self._events(row, self.model_name(adapter), sampling)

    def close(self) -> None:
        self.client.close()
