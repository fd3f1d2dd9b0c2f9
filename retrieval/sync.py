"""`ragtune sync DIR`: mirror a folder into the index by diffing a manifest of paths and file hashes.

The manifest lives in SQLite and is updated in the same transaction as the documents, so a crash
never leaves it claiming a file that is not indexed. A renamed file is a delete plus an add whose
chunks reuse the stored vectors (same text; a title made from the file name is not embedded), so a
rename costs no embedding. Files over `retrieval.max_file_bytes` are reported and skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ragtune.core.errors import DataError
from ragtune.core.types import Document
from ragtune.retrieval.index import Index, IngestReport
from ragtune.retrieval.loaders import check_total, load_file, supported_files, too_big
from ragtune.retrieval.rows import RowStore


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sync_folder(index: Index, folder: Path, progress: bool = True) -> IngestReport:
    """Add, update, rename and delete documents so the index mirrors `folder`; unchanged files are not read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    root = str(folder.resolve())
    known = index.store.manifest(root)
    current = {f.relative_to(folder).as_posix(): f for f in supported_files(folder)}
    hashes = {rel: _file_hash(f) for rel, f in current.items()}
    changed = [rel for rel in current if known.get(rel, ("", []))[0] != hashes[rel]]
    gone = [rel for rel in known if rel not in current]
    report = IngestReport(snapshot=index.snapshot)
    report.unchanged = [i for rel in current if rel not in changed for i in known[rel][1]]
    if not changed and not gone:
        return report

    gone_by_hash = {known[rel][0]: rel for rel in gone}
    entries: dict[str, tuple[str, list[str]]] = {}
    upserts: list[Document] = []
    big = {rel: problem for rel in changed if (problem := too_big(current[rel], index.config))}
    check_total((current[rel] for rel in changed if rel not in big), index.config)
    for rel in changed:
        try:
            if rel in big:
                raise DataError(big[rel])
            docs = load_file(current[rel], folder)
        except DataError as exc:
            report.errors.append(str(exc))  # its old documents, if any, stay as they were
            continue
        upserts.extend(docs)
        entries[rel] = (hashes[rel], [d.id for d in docs])
        if rel not in known and hashes[rel] in gone_by_hash:
            report.renamed.append((gone_by_hash[hashes[rel]], rel))
    kept = {d.id for d in upserts}
    stored = set(index.document_ids())
    deletes = sorted(
        {i for rel in gone for i in known[rel][1]} | {i for rel in entries if rel in known for i in known[rel][1]}
    )
    deletes = [i for i in deletes if i not in kept and i in stored]

    def write_manifest(store: RowStore) -> None:
        store.set_manifest(root, entries, gone)

    done = index.apply(upserts, deletes, progress=progress, on_commit=write_manifest)
    done.renamed, done.errors = report.renamed, report.errors
    done.unchanged = report.unchanged + done.unchanged
    return done
