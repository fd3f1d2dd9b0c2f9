"""Turn user paths (folders, .txt/.md/.html/.pdf/.csv files, JSONL) into Documents.

`load_paths` reports a bad file (undecodable bytes, empty, malformed, over `retrieval.max_file_bytes`,
an id that is not printable) per file and loads the rest; `load_documents` is the strict form that
raises on the first bad file. Files are sized before they are read, and text is never split into a
list of all its lines, so memory stays near the file's own size (the chunker takes it from there).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ragtune.core.config import RetrievalConfig
from ragtune.core.errors import DataError
from ragtune.core.inputs import as_path, missing_keys, need_mapping, rows_of
from ragtune.core.types import Document, doc_id_problem

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl", ".csv"}
SUPPORTED_TEXT = ".txt, .md, .html, .pdf, .csv or .jsonl"
TITLE_SOURCE = "title_source"  # metadata key: "file name" when the title was made from the file's name
FROM_FILE_NAME = "file name"
_FIRST_LINE = re.compile(r"\s*([^\n]*)")

# what the Python API takes as documents: Documents or dicts (a list, a generator or a datasets.Dataset), or a path
DocumentsInput = Iterable[Document | Mapping[str, Any]] | str | os.PathLike[str]


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "path: reason", one per bad file
    files: dict[str, list[str]] = field(default_factory=dict)  # file -> ids of the documents it gave


def _heading(text: str) -> str | None:
    """The first non-blank line's `# heading`, or None (only the start of the text is looked at)."""
    first = _FIRST_LINE.match(text)
    m = re.match(r"^#{1,6}\s+(.*)$", first.group(1).strip()) if first else None
    return m.group(1).strip() if m else None


def _decode(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text or text.isspace():  # isspace, not strip(): no copy of a large file
        raise DataError(f"{path}: file is empty")
    return text[1:] if text.startswith("\ufeff") else text


def _doc_id(path: Path, root: Path | None) -> str:
    ident = path.stem if root is None else path.relative_to(root).with_suffix("").as_posix()
    problem = doc_id_problem(ident)
    if problem:
        raise DataError(f"{path}: the document id {ident[:80]!r} made from its path {problem}")
    return ident


def _check_id(where: str, ident: str) -> str:
    problem = doc_id_problem(ident)
    if problem:
        raise DataError(f"{where}: document id {ident[:80]!r} {problem}")
    return ident


def _titled(path: Path, heading: str | None, meta: dict[str, object]) -> tuple[str, dict[str, object]]:
    """The title and metadata: a title made from the file's name is marked, so it is not embedded
    (renaming the file must not change the vectors of its unchanged text)."""
    if heading:
        return heading, meta
    return _pretty(path), {**meta, TITLE_SOURCE: FROM_FILE_NAME}


def _pretty(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").title()


def load_text_file(path: Path, root: Path | None = None) -> Document:
    ident = _doc_id(path, root)
    text = _decode(path)
    title, meta = _titled(path, _heading(text), {"source": str(path)})
    return Document(id=ident, text=text, title=title, metadata=meta)


def load_html(path: Path, root: Path | None = None) -> Document:
    """Visible text only: scripts, styles and templates are dropped; the title is <title> or the first <h1>."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    heading = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not heading and (h1 := soup.find("h1")):
        heading = h1.get_text(" ", strip=True)
    if soup.head:
        soup.head.decompose()
    lines = [ln.strip() for ln in soup.get_text("\n").splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise DataError(f"{path}: no visible text in the HTML")
    return Document(id=_doc_id(path, root), text=text, title=heading or _pretty(path), metadata={"source": str(path)})


def load_pdf(path: Path, root: Path | None = None) -> Document:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        info_title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception as exc:  # pypdf raises many types for a broken file; all mean the same to the user
        raise DataError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise DataError(f"{path}: the PDF has no extractable text (scanned images need OCR first)")
    title, meta = _titled(path, str(info_title).strip() or None, {"source": str(path), "pages": len(pages)})
    return Document(id=_doc_id(path, root), text=text, title=title, metadata=meta)


def load_csv(path: Path, root: Path | None = None) -> list[Document]:
    """With a `text` column: one document per row (`id`, `title` columns used; others become metadata).
    Without one: the whole table as one document, a `column: value` line per row."""
    text = _decode(path)
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no rows under the header")
    base = _doc_id(path, root)
    if "text" not in rows[0]:
        body = "\n".join("; ".join(f"{k}: {v}" for k, v in row.items() if k and v) for row in rows)
        return [Document(id=base, text=body, title=_pretty(path), metadata={"source": str(path)})]
    docs = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        body = (row.get("text") or "").strip()
        if not body:
            raise DataError(f"{path}:{n}: empty text")
        extra = {k: v for k, v in row.items() if k and k not in {"id", "text", "title"} and v is not None}
        ident = _check_id(f"{path}:{n}", (row.get("id") or "").strip() or f"{base}-{n - 1}")
        title = (row.get("title") or "").strip()
        docs.append(Document(id=ident, text=body, title=title, metadata={"source": str(path), **extra}))
    return docs


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) read a line at a time; DataError for bytes that are not UTF-8."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                yield lineno, raw.decode("utf-8").lstrip("\ufeff") if lineno == 1 else raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None


def load_jsonl(path: Path) -> list[Document]:
    docs: list[Document] = []
    for lineno, line in _lines(path):
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
        _check_id(f"{path}:{lineno}", doc.id)
        if not doc.text.strip():
            raise DataError(f"{path}:{lineno}: document '{doc.id}' has empty text")
        docs.append(doc)
    if not docs:
        raise DataError(f"{path}: file is empty")
    return docs


def load_file(path: Path, root: Path | None = None) -> list[Document]:
    """The documents one file holds; DataError says what is wrong with it."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return load_jsonl(path)
    if suffix == ".csv":
        return load_csv(path, root)
    if suffix == ".pdf":
        return [load_pdf(path, root)]
    if suffix in HTML_SUFFIXES:
        return [load_html(path, root)]
    if suffix in TEXT_SUFFIXES:
        return [load_text_file(path, root)]
    raise DataError(f"{path}: unsupported file type '{path.suffix}' (use {SUPPORTED_TEXT})")


def supported_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED)


def too_big(path: Path, limits: RetrievalConfig) -> str | None:
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return f"{path}: {size:,} bytes, more than retrieval.max_file_bytes ({limits.max_file_bytes:,}); skipped"
    return None


def check_total(files: Iterable[Path], limits: RetrievalConfig) -> None:
    """Refuse, before anything is read, a call whose files hold more than `retrieval.max_ingest_bytes`."""
    total = sum(f.stat().st_size for f in files)
    if total > limits.max_ingest_bytes:
        raise DataError(
            f"the files to read hold {total:,} bytes, more than retrieval.max_ingest_bytes "
            f"({limits.max_ingest_bytes:,}): ingest fewer at a time or raise the limit"
        )


def _todo(paths: Iterable[Path | str]) -> list[tuple[Path, Path | None]]:
    todo: list[tuple[Path, Path | None]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"path not found: {path}")
        if path.is_dir():
            todo.extend((f, path) for f in supported_files(path))
        elif path.suffix.lower() in SUPPORTED:
            todo.append((path, None))
        else:
            raise DataError(f"{path}: unsupported file type '{path.suffix}' (use {SUPPORTED_TEXT})")
    return todo


def load_paths(paths: Iterable[Path | str], limits: RetrievalConfig | None = None) -> LoadResult:
    """Load every supported file under `paths`, collecting one error per bad file instead of stopping.

    A missing path, an unsupported single file, a duplicate id or more than `limits.max_ingest_bytes`
    in all is still an error for the whole call; a file over `limits.max_file_bytes` is a bad file.
    """
    limits = limits or RetrievalConfig()
    result = LoadResult()
    todo = _todo(paths)
    big = {f: problem for f, _ in todo if (problem := too_big(f, limits))}
    check_total((f for f, _ in todo if f not in big), limits)
    for f, root in todo:
        try:
            if f in big:
                raise DataError(big[f])
            docs = load_file(f, root)
        except DataError as exc:
            result.errors.append(str(exc))
            continue
        result.documents.extend(docs)
        result.files[str(f)] = [d.id for d in docs]
    seen: dict[str, int] = {}
    for d in result.documents:
        seen[d.id] = seen.get(d.id, 0) + 1
    dupes = [k for k, v in seen.items() if v > 1]
    if dupes:
        raise DataError(f"duplicate document ids: {', '.join(sorted(dupes)[:5])}")
    return result


def load_documents(paths: Iterable[Path | str], limits: RetrievalConfig | None = None) -> list[Document]:
    """Strict loading: the first bad file raises its DataError."""
    result = load_paths(paths, limits)
    if result.errors:
        raise DataError(result.errors[0])
    return result.documents


def _document_row(where: str, row: Any) -> Document:
    if isinstance(row, Document):
        return row
    row = need_mapping(where, row, "id and text")
    missing_keys(where, row, ("id", "text"))
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    try:
        return Document.model_validate({**row, "id": str(row["id"])})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"{where}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None


def documents_from(data: DocumentsInput, what: str = "documents") -> list[Document]:
    """Documents from a path (as `load_documents`), or a list of Documents / dicts {id, text, title?,
    metadata?} / a `datasets.Dataset` with those columns: the notebook's way in."""
    if isinstance(data, str | os.PathLike):
        return load_documents([as_path(data)])
    return [_document_row(where, row) for where, row in rows_of(data, what)]
