"""ragtune: fine-tune, retrieve, or both — measured.

The notebook API: `from ragtune import load_config, Index, Pipeline, train_adapter, evaluate, verdict`.
Names resolve on first use (PEP 562), so `import ragtune` and the CLI's `--help` do not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_config": "ragtune.core.config",
    "Index": "ragtune.retrieval.index",
    "Pipeline": "ragtune.serving.pipeline",
    "train_adapter": "ragtune.api",
    "evaluate": "ragtune.api",
    "verdict": "ragtune.api",
}

__all__ = ["Index", "Pipeline", "__version__", "evaluate", "load_config", "train_adapter", "verdict"]

if TYPE_CHECKING:
    from ragtune.api import evaluate, train_adapter, verdict
    from ragtune.core.config import load_config
    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragtune' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value  # resolved once; later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
