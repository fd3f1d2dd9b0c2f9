"""Adapter folders and their cards: written by tuning, read by serving and eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ragtune.core.errors import DataError, NotFoundError

CARD_NAME = "adapter_card.json"


class AdapterCard(BaseModel):
    name: str
    base_model: str
    data_hash: str
    n_train: int
    n_val: int
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float | None] = Field(default_factory=dict)
    snapshot: str | None = None
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


def adapter_path(adapters_dir: Path, name: str) -> Path:
    path = adapters_dir / name
    if not path.is_dir():
        known = sorted(p.name for p in adapters_dir.iterdir() if p.is_dir()) if adapters_dir.is_dir() else []
        raise NotFoundError(f"unknown adapter '{name}'; known: {', '.join(known) or 'none'}")
    return path


def list_adapters(adapters_dir: Path) -> list[AdapterCard]:
    if not adapters_dir.is_dir():
        return []
    cards = []
    for p in sorted(adapters_dir.iterdir()):
        if (p / CARD_NAME).is_file():
            cards.append(read_card(p))
    return cards
