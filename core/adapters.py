"""Adapter folders and their cards: written by tuning, read by serving and eval."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ragtune.core.errors import DataError, NotFoundError

CARD_NAME = "adapter_card.json"
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_ADAPTER_NAME = 100


class AdapterCard(BaseModel):
    """What an adapter (or a full/merged model) was made from and how well it did: every figure traceable."""

    name: str
    base_model: str
    data_hash: str
    n_train: int
    n_val: int
    kind: Literal["lora", "full", "merged"] = "lora"
    base_model_hash: str | None = None
    n_test: int = 0
    data_counts: dict[str, int] = Field(default_factory=dict, description="loaded, cleaning account, splits")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    history: list[dict[str, float | None]] = Field(default_factory=list, description="per-epoch metrics")
    snapshot: str | None = None
    parent_adapter: str | None = None
    ragtune_version: str = ""
    wall_time_s: float = 0.0
    created_at: str = ""


def check_adapter_dir(path: Path) -> None:
    """Fail with a message naming what is wrong, before PEFT fails with a traceback."""
    if not path.is_dir():
        raise NotFoundError(f"adapter folder not found: {path}")
    if not (path / "adapter_config.json").is_file():
        raise DataError(f"{path} is not a PEFT adapter: adapter_config.json is missing")
    weights = list(path.glob("adapter_model.*"))
    if not weights:
        raise DataError(f"{path} has no adapter weights (adapter_model.safetensors)")
    try:
        json.loads((path / "adapter_config.json").read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}/adapter_config.json is not valid JSON: {exc}") from None


def write_base_reference(folder: Path, base_model: str) -> None:
    """Put the generator reference the user gave (a bundled model's hub id) in the adapter's
    `base_model_name_or_path`, where PEFT writes the local path it loaded from: a folder that names a
    cache path on this machine does not load in vLLM (`--lora-modules name=FOLDER`) or elsewhere."""
    from ragtune.core.models import portable_reference

    cfg_path = folder / "adapter_config.json"
    if not cfg_path.is_file():
        return  # a full fine-tune: a plain model folder, no adapter config
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = portable_reference(base_model)
    tmp = cfg_path.with_name(cfg_path.name + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    tmp.replace(cfg_path)


def read_card(path: Path) -> AdapterCard:
    card = path / CARD_NAME
    if not card.is_file():
        raise DataError(f"{path} has no {CARD_NAME}")
    try:
        return AdapterCard.model_validate_json(card.read_text())
    except ValidationError as exc:
        raise DataError(f"{card} is malformed: {exc.errors()[0]['msg']}") from None


def write_card(path: Path, card: AdapterCard) -> None:
    tmp = path / (CARD_NAME + ".tmp")
    tmp.write_text(card.model_dump_json(indent=2))
    tmp.replace(path / CARD_NAME)


def is_adapter_name(name: str) -> bool:
    """A name that can only mean a folder directly under the adapters folder (no path, no '..')."""
    return len(name) <= MAX_ADAPTER_NAME and ADAPTER_NAME.match(name) is not None and ".." not in name


def unknown_adapter(name: str) -> NotFoundError:
    """The one refusal for any name that is not a registered adapter: it says nothing about folders."""
    shown = name[:MAX_ADAPTER_NAME].encode("utf-8", "backslashreplace").decode()
    return NotFoundError(f"unknown adapter '{shown}'; `ragtune adapters list` or GET /v1/adapters names them")


def adapter_path(adapters_dir: Path, name: str) -> Path:
    """The folder of the adapter registered as `name` (a PEFT adapter folder directly under `adapters_dir`).

    A name is never a path: anything else (`/etc`, `../index`, a folder without `adapter_config.json`)
    gets the same `unknown_adapter` error. Loading from a path is `Pipeline.load_adapter(name, path)`,
    which the CLI offers after `check_adapter_dir`.
    """
    path = adapters_dir / name if is_adapter_name(name) else None
    if path is None or not (path / "adapter_config.json").is_file():
        raise unknown_adapter(name)
    return path


def list_adapters(adapters_dir: Path) -> list[AdapterCard]:
    if not adapters_dir.is_dir():
        return []
    cards = []
    for p in sorted(adapters_dir.iterdir()):
        if (p / CARD_NAME).is_file():
            cards.append(read_card(p))
    return cards


def model_fingerprint(folder: Path) -> str:
    """Short sha256 over a model folder's config and weight files, cached beside them by size+mtime."""
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    if not files:
        raise DataError(f"{folder} holds no model weights to fingerprint")
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cache = folder / ".ragtune-fingerprint.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return str(cached["hash"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    digest = h.hexdigest()[:16]
    with contextlib.suppress(OSError):  # a read-only model folder: just recompute next time
        cache.write_text(json.dumps({"stamp": stamp, "hash": digest}))
    return digest


def check_base_model(card: AdapterCard, base_model: str, base_model_hash: str | None = None) -> None:
    """An adapter only fits the base model it was trained on; say so before PEFT fails obscurely."""
    if card.base_model != base_model:
        raise DataError(f"adapter '{card.name}' was trained on base model '{card.base_model}', not '{base_model}'")
    if base_model_hash and card.base_model_hash and card.base_model_hash != base_model_hash:
        raise DataError(
            f"adapter '{card.name}' was trained on a different copy of '{base_model}' "
            f"(weights hash {card.base_model_hash}, now {base_model_hash})"
        )
