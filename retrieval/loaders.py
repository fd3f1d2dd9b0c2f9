"""Turn user paths (a folder of .txt/.md, single files, JSONL) into Documents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from ragtune.core.errors import DataError
from ragtune.core.types import Document

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}


def _title_of(text: str, fallback: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            m = re.match(r"^#{1,6}\s+(.*)$", stripped)
            return m.group(1).strip() if m else fallback
    return fallback


def load_text_file(path: Path, root: Path | None = None) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    doc_id = path.stem if root is None else path.relative_to(root).with_suffix("").as_posix()
    title = _title_of(text, path.stem.replace("-", " ").replace("_", " ").title())
    return Document(id=doc_id, text=text, title=title, metadata={"source": str(path)})


def load_jsonl(path: Path) -> list[Document]:
    docs: list[Document] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected an object with id and text")
            try:
                doc = Document.model_validate({**row, "id": str(row.get("id", ""))})
            except ValidationError as exc:
                err = exc.errors()[0]
                raise DataError(f"{path}:{lineno}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
            if not doc.text.strip():
                raise DataError(f"{path}:{lineno}: document '{doc.id}' has empty text")
            docs.append(doc)
    return docs


def load_documents(paths: Iterable[Path | str]) -> list[Document]:
    """Load every supported file under `paths`; unknown suffixes in folders are skipped."""
    docs: list[Document] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"path not found: {path}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | {".jsonl"})
            for f in files:
                docs.extend(load_jsonl(f) if f.suffix.lower() == ".jsonl" else [load_text_file(f, path)])
        elif path.suffix.lower() == ".jsonl":
            docs.extend(load_jsonl(path))
        elif path.suffix.lower() in TEXT_SUFFIXES:
            docs.append(load_text_file(path))
        else:
            raise DataError(f"{path}: unsupported file type '{path.suffix}' (use .txt, .md or .jsonl)")
    seen: dict[str, int] = {}
    for d in docs:
        seen[d.id] = seen.get(d.id, 0) + 1
    dupes = [k for k, v in seen.items() if v > 1]
    if dupes:
        raise DataError(f"duplicate document ids: {', '.join(sorted(dupes)[:5])}")
    return docs
