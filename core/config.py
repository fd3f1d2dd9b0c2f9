"""The whole configuration as one Pydantic schema: YAML file, then `RAGTUNE_*` environment overrides.

Environment keys use a double underscore between levels: `RAGTUNE_RETRIEVAL__TOP_K=5`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ragtune.core.errors import ConfigError

# The four answer modes: base (neither), ft (adapter), rag (retrieval), hybrid (both).
Mode = Literal["base", "ft", "rag", "hybrid"]
MODES: tuple[Mode, ...] = ("base", "ft", "rag", "hybrid")
RETRIEVING: frozenset[str] = frozenset({"rag", "hybrid"})  # modes that search the index
TUNED: frozenset[str] = frozenset({"ft", "hybrid"})  # modes that answer through an adapter

HOUSE_STYLE_SYSTEM_PROMPT = (
    "You are the support assistant. Answer in the house style: one short sentence that answers "
    "the question directly, then a second line 'Sources: ' followed by the title of the document "
    "the answer comes from."
)
HOUSE_STYLE_REGEX = r"^[^\n]{3,240}\nSources: [^\n]{3,}$"


def check_mode(mode: str) -> Mode:
    """The mode, or a ConfigError naming the ones there are."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    return cast(Mode, mode)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelsConfig(_Section):
    generator: str = Field("bundled:smollm2-135m-instruct", description="bundled:NAME, a local folder or a hub id")
    embedder: str = Field("bundled:all-minilm-l6-v2", description="bundled:NAME, a local folder or a hub id")
    cache_dir: Path | None = Field(None, description="where converted models live; default ~/.cache/ragtune")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="where the generator runs; auto picks cuda when present, else mps, else cpu"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="generator weights; auto: float32 on cpu, bfloat16 on cuda that supports it, else float16"
    )
    generator_backend: Literal["transformers", "openai"] = Field(
        "transformers", description="transformers: in process; openai: any OpenAI-compatible server at base_url"
    )
    base_url: str | None = Field(None, description="the OpenAI-compatible server, e.g. http://127.0.0.1:8001/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the server's API key")
    served_model: str | None = Field(
        None, description="the base model's name on the server; None: the generator reference"
    )

    @model_validator(mode="after")
    def _openai_has_a_url(self) -> ModelsConfig:
        if self.generator_backend == "openai" and not (self.base_url and self.base_url.strip()):
            raise ValueError("models.generator_backend openai needs models.base_url")
        return self


SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "lexical", "hybrid")


class RetrievalConfig(_Section):
    backend: Literal["embedded", "postgres"] = Field(
        "embedded", description="embedded: SQLite + FAISS in the workspace; postgres: PostgreSQL + pgvector at `dsn`"
    )
    dsn: SecretStr | None = Field(
        None, description="PostgreSQL connection string for the postgres backend (RAGTUNE_RETRIEVAL__DSN)"
    )
    chunk_tokens: int = Field(200, ge=16, le=512, description="chunk size in embedder tokens")
    chunk_overlap: int = Field(32, ge=0, le=256)
    chunking: Literal["recursive", "markdown", "fixed"] = Field(
        "recursive", description="recursive (token-aware), markdown (split at headers first), fixed (token windows)"
    )
    top_k: int = Field(3, ge=1, le=50)
    embed_batch_size: int = Field(32, ge=1)
    search_mode: SearchMode = Field("dense", description="default mode of Index.search")
    hybrid_dense_weight: float = Field(1.0, ge=0, description="RRF weight of the dense ranking")
    hybrid_lexical_weight: float = Field(1.0, ge=0, description="RRF weight of the lexical ranking")
    rrf_k: int = Field(60, ge=1, description="reciprocal rank fusion constant")
    hybrid_candidates: int = Field(100, ge=1, description="hits taken from each ranking before fusion")
    mmr: bool = Field(False, description="re-rank hits for diversity (maximal marginal relevance)")
    mmr_lambda: float = Field(0.7, ge=0, le=1, description="1 = relevance only, 0 = diversity only")
    keep_snapshots: int = Field(5, ge=1, description="how many recent snapshots stay queryable")
    index_type: Literal["flat", "hnsw", "ivf"] = Field("flat", description="flat is exact; hnsw/ivf approximate")
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(64, ge=1)
    ivf_nlist: int = Field(128, ge=1)
    ivf_nprobe: int = Field(16, ge=1)
    checkpoint_ratio: float = Field(
        0.05, ge=0, description="rewrite the FAISS file once this share of the index changed since the last one"
    )
    lock_timeout: float = Field(30.0, ge=0, description="seconds a writer waits for another writer's lock")
    max_file_bytes: int = Field(
        128 * 2**20, ge=1, description="largest file `ragtune ingest`/`sync` reads; a larger one is skipped and named"
    )
    max_ingest_bytes: int = Field(
        2**30, ge=1, description="most bytes of files one `ragtune ingest` or `sync` reads; beyond it nothing is read"
    )

    @model_validator(mode="after")
    def _backend_has_a_dsn(self) -> RetrievalConfig:
        if self.backend == "postgres" and not (self.dsn and self.dsn.get_secret_value().strip()):
            raise ValueError("retrieval.backend postgres needs retrieval.dsn (or RAGTUNE_RETRIEVAL__DSN)")
        return self


class PromptConfig(_Section):
    system_prompt: str = HOUSE_STYLE_SYSTEM_PROMPT
    max_context_tokens: int = Field(900, ge=64, description="retrieved text beyond this is cut")
    compress: Literal["none", "sentences"] = Field(
        "none",
        description="sentences: keep only the retrieved sentences nearest the question, within max_context_tokens",
    )


class GenerationConfig(_Section):
    max_new_tokens: int = Field(48, ge=1, le=2048)
    do_sample: bool = False
    temperature: float = Field(0.7, gt=0)
    seed: int = 0
    batch_size: int = Field(8, ge=1, le=64)
    prefill_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="precision of the prompt's forward pass; bfloat16 roughly halves it for long "
        "(retrieval) prompts on CPUs with AVX512-BF16 or AMX (emulated elsewhere: slower, with a warning), "
        "decoding stays float32; auto: bfloat16 where the device runs it natively, else float32",
    )
    prefill_copies: int = Field(
        2,
        ge=1,
        le=16,
        description="bf16 copies of the model (one per adapter, 2 bytes a parameter each) kept for "
        "bfloat16 prefill; traffic over more adapters than this rebuilds a copy on a switch",
    )
    kv_reuse: bool = Field(
        False,
        description="encode each retrieved chunk's KV cache once and join the caches at answer time, so only "
        "the text around the chunks and the first kv_reuse_recompute tokens of each chunk are prefilled "
        "(core/kv_reuse.py)",
    )
    kv_reuse_recompute: int = Field(
        4,
        ge=0,
        le=1024,
        description="kv_reuse: the first tokens of each chunk computed again at answer time with full "
        "attention; a chunk encoded alone makes its first token an attention sink, which costs accuracy",
    )
    kv_cache_mb: int = Field(1024, ge=1, description="memory for reused chunk caches, least recently used out")
    kv_cache_dir: Path | None = Field(None, description="also keep chunk caches here (file names are hashes)")


class TuningConfig(_Section):
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(384, ge=32)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="None picks per architecture")
    val_fraction: float = Field(0.1, ge=0, lt=0.9)
    context_dropout: float = Field(
        0.3, ge=0, le=1, description="share of examples trained without their context, so ft works alone"
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="training precision; bf16/fp16 are mixed precision on a GPU"
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="recompute activations in backward: less memory, slower; auto: on when a micro-batch of"
        " the longest training rows would keep over 2 GB of activations (the sample's ft-100 on SmolLM2-135M)",
    )
    quantize: Literal["none", "4bit"] = Field("none", description="4bit: QLoRA through bitsandbytes (CUDA only)")
    early_stopping_patience: int = Field(2, ge=0, description="epochs without val-loss gain before stopping; 0 = off")
    test_fraction: float = Field(0.0, ge=0, lt=0.9, description="share of groups held out as a test split")
    overlong: Literal["drop", "truncate"] = Field("drop", description="examples over max_length: drop, or cut")
    near_duplicates: bool = Field(True, description="also drop rows equal after normalising case/punctuation")
    method: Literal["lora", "full"] = Field("lora", description="full fine-tuning suits small models only")
    objective: Literal["sft", "causal-lm"] = Field("sft", description="causal-lm trains on indexed corpus text")
    format_sample: int = Field(8, ge=0, description="validation answers generated per epoch for format adherence")
    format_max_new_tokens: int = Field(48, ge=1)
    raft_p: float = Field(0.8, ge=0, le=1, description="RAFT: probability the gold chunk stays in the context")
    raft_k: int = Field(3, ge=1, le=20, description="RAFT: retrieved chunks per example")
    raft_search_mode: Literal["dense", "lexical", "hybrid"] | None = Field(None, description="None: retrieval's")
    drift_warn: float = Field(0.3, ge=0, le=1, description="warn when this share of chunks changed since training")
    independent_chunks: bool = Field(
        False,
        description="train with the attention generation.kv_reuse has at answer time: each retrieved chunk "
        "sees only itself (tuning/chunk_attention.py), so the adapter learns to read chunks encoded apart",
    )


class ApiKey(_Section):
    """One bearer token; `admin` may write documents and load adapters, `read` may only ask."""

    key: SecretStr = Field(min_length=16)
    scope: Literal["read", "admin"] = "read"
    name: str = ""


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    default_mode: Mode = "hybrid"
    default_adapter: str | None = None
    max_question_chars: int = Field(2000, ge=1)
    max_document_chars: int = Field(200_000, ge=1, description="longest document text a request may store")
    max_metadata_bytes: int = Field(16_384, ge=64, description="largest document metadata, as UTF-8 JSON")
    max_metadata_depth: int = Field(6, ge=1, le=32, description="deepest nesting of objects/lists in metadata")
    max_metadata_keys: int = Field(256, ge=1, description="most object keys in one document's metadata, all levels")
    max_new_tokens_cap: int = Field(512, ge=1, le=2048, description="largest max_new_tokens a request may ask")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    max_queue: int = Field(64, ge=1, description="waiting generations; beyond this, 503 + Retry-After")
    max_batch: int = Field(8, ge=1, le=64, description="requests for one adapter joined into one generate call")
    batch_wait_ms: float = Field(15.0, ge=0, le=1000, description="how long a batch waits for more requests")
    request_timeout_s: float = Field(120.0, gt=0, description="per-request deadline, queueing included")
    api_keys: list[ApiKey] = Field(
        default_factory=list, description="bearer tokens; empty means no auth and loopback only"
    )
    rate_limit_per_minute: int | None = Field(None, ge=1, description="requests per key (or client) per minute")
    unauthenticated_per_minute: int | None = Field(
        60, ge=1, description="requests without a valid key per client address a minute (401s); beyond it 429"
    )
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes for `ragtune serve`")
    condense: Literal["model", "last_turns", "off"] = Field(
        "last_turns",
        description="how a chat follow-up becomes its retrieval query: last_turns joins the recent user turns "
        "(cheap, deterministic), model asks the generator for a standalone question, off takes the last "
        "message alone",
    )
    condense_turns: int = Field(3, ge=1, le=20, description="user turns, the question included, last_turns joins")
    history_tokens: int = Field(
        256, ge=0, le=4096, description="budget for earlier chat turns quoted in the answer prompt; 0: none"
    )
    engine_api: bool = Field(
        False,
        description="/v1/chat/completions also answers the base model's name and adapter names with the "
        "client's messages as given (no retrieval, no house prompt), as vLLM does: another ragtune can use "
        "this server as its openai generator backend",
    )


class EvalConfig(_Section):
    format_regex: str | None = HOUSE_STYLE_REGEX
    answer_regex: str | None = Field(None, description="one group: the answer span to score")
    arms: list[Mode] = ["base", "ft", "rag", "hybrid"]
    format_schema: dict[str, Any] | None = Field(None, description="JSON schema answers must satisfy (overrides regex)")
    ks: list[int] = Field([1, 3, 5, 10], min_length=1, description="cut-offs of hit@k, recall@k and nDCG@k")
    latency_samples: Annotated[int, Field(ge=0)] | Literal["all"] = Field(
        32,
        description="questions timed one request at a time, every arm back to back in a shuffled order "
        "(0: none; 'all': every question)",
    )
    load_requests: int = Field(
        20, ge=1, description="requests per concurrency level of `--load` (at least 4 rounds of the level)"
    )
    bootstrap_resamples: int = Field(2000, ge=100, description="resamples of every bootstrap interval and test")
    alpha: float = Field(0.05, gt=0, lt=1, description="family-wise error rate of the Holm-corrected tests")
    baselines: list[Literal["constant", "extractive"]] = Field(
        ["constant", "extractive"], description="trivial baselines every eval and verdict scores beside the arms"
    )


class VerdictConfig(_Section):
    few_shot_k: int = Field(4, ge=0, le=32, description="training examples shown in the few-shot arm's prompt")
    curve_fractions: list[float] = Field([0.25, 0.5, 1.0], min_length=1, description="learning-curve training shares")
    eval_limit: int | None = Field(64, ge=4, description="questions per arm, spread over the set (None: all)")
    curve_eval_limit: int | None = Field(48, ge=4, description="questions per learning-curve point")
    retune_epochs: float = Field(3.0, gt=0, description="epochs of the ft re-tune on the changed facts")
    raft: bool = Field(True, description="add a hybrid arm with a RAFT adapter when the data has gold documents")
    raft_examples: int | None = Field(
        64,
        ge=1,
        description="RAFT rows (a seeded subset) trained on top of the ft adapter; None: every row",
    )
    margin: float | None = Field(
        None, gt=0, lt=1, description="non-inferiority margin of a cheaper arm; None: the metric's default (0.03)"
    )
    seeds: int = Field(1, ge=1, le=10, description="training seeds of ft and the learning curve (tuning.seed + i)")
    load_levels: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="concurrency levels the setups are also run at, served locally (None: no load run)"
    )


class Config(_Section):
    workspace: Path = Path(".ragtune")
    models: ModelsConfig = ModelsConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    prompt: PromptConfig = PromptConfig()
    generation: GenerationConfig = GenerationConfig()
    tuning: TuningConfig = TuningConfig()
    serving: ServingConfig = ServingConfig()
    eval: EvalConfig = EvalConfig()
    verdict: VerdictConfig = VerdictConfig()

    def digest(self) -> str:
        """Short stable hash of the effective config, for reports and cards."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def adapters_dir(self) -> Path:
        return self.workspace / "adapters"

    @property
    def index_dir(self) -> Path:
        return self.workspace / "index"


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"config key {'.'.join(keys)}: parent is not a section")
    tree[keys[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("RAGTUNE_"):
            continue
        keys = [k.lower() for k in name[len("RAGTUNE_") :].split("__")]
        if keys[0] not in Config.model_fields:  # e.g. RAGTUNE_CACHE_DIR belongs to the model loader
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(out, keys, value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_SECRET_NAME = re.compile(r"key|dsn|password|secret|token", re.IGNORECASE)


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    """Whether a config location holds a secret: a `SecretStr` field, or a name that sounds like one.

    Pydantic puts the offending input into its errors; for these the value must not be echoed."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if _SECRET_NAME.search(str(part)):
            return True
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        if "SecretStr" in str(field.annotation):
            return True
        model = next((a for a in getattr(field.annotation, "__args__", ()) if hasattr(a, "model_fields")), None) or (
            field.annotation
        )
    return False


def _explain(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(root)"
    got = first.get("input")
    hidden = isinstance(got, dict | list) or _is_secret(tuple(first["loc"]))
    shown = "" if hidden else f" (got {got!r})"
    more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"config key '{key}': {first['msg']}{shown}{more}"


def load_config(
    path: Path | str | None = None,
    workspace: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective config: defaults < YAML file < environment < explicit overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded or {}
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    if overrides:
        data = _merge(data, overrides)
    if workspace is not None:
        data["workspace"] = str(workspace)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
