"""What makes a report traceable: snapshot, adapter cards, config/dataset hashes, versions, commit."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from ragtune import __version__
from ragtune.core.adapters import CARD_NAME
from ragtune.core.config import Config
from ragtune.eval.harness.data import EvalItem

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "sentence-transformers",
    "faiss-cpu",
    "numpy",
    "scipy",
    "datasets",
    "fastapi",
)


def dataset_hash(items: Sequence[EvalItem]) -> str:
    """Hash of the questions as scored (after loading and limiting), independent of the file layout."""
    blob = json.dumps([it.model_dump(mode="json") for it in items], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def adapter_hashes(adapters_dir: Path, names: Iterable[str | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in dict.fromkeys(n for n in names if n):
        card = adapters_dir / name / CARD_NAME
        if card.is_file():
            out[name] = hashlib.sha256(card.read_bytes()).hexdigest()[:16]
    return out


def git_commit() -> str | None:
    """The ragtune checkout's commit, with '+dirty' when it has local changes; None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def manifest(config: Config, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ragtune": __version__,
        "config_hash": config.digest(),
        "generator": config.models.generator,
        "embedder": config.models.embedder,
        "seed": config.generation.seed,
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        **(extra or {}),
    }
