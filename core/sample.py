"""Where the bundled sample domain lives inside the installed package."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_domain"


def sample_path(*parts: str) -> Path:
    return SAMPLE_DIR.joinpath(*parts)
