"""Documents while serving: upsert, read, delete, batch; `GET /v1/index` names the snapshot.

Writes run in the threadpool; the index keeps one writer at a time across threads and worker
processes, and a search reads one committed snapshot, so none sees half a commit.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from ragtune.core.errors import NotFoundError
from ragtune.core.types import Document
from ragtune.retrieval.index import Index, IngestReport
from ragtune.serving.contracts import AnswerPipeline
from ragtune.serving.routers.health import public_name
from ragtune.serving.schemas import (
    DOC_ID_PATTERN,
    ERRORS,
    BatchRequest,
    DocumentIn,
    DocumentOut,
    IndexInfo,
    SnapshotInfo,
    WriteResult,
    check_doc_id,
)
from ragtune.serving.security import admin_access, read_access
from ragtune.serving.validation import check_document, invalid

router = APIRouter(tags=["documents"])
DocId = Path(min_length=1, max_length=200, pattern=DOC_ID_PATTERN)


def _check_id(doc_id: str) -> None:
    """A path id passes the same rules as a body id (`check_doc_id`), else 422."""
    try:
        check_doc_id(doc_id)
    except ValueError as exc:
        raise invalid("doc_id", str(exc)) from None


def _result(*reports: IngestReport) -> WriteResult:
    out = WriteResult()
    for r in reports:
        out.added += r.added
        out.updated += r.updated
        out.unchanged += r.unchanged
        out.deleted += r.deleted
        out.snapshot = r.snapshot
    return out


def _pipeline(request: Request) -> AnswerPipeline:
    return request.app.state.pipeline


@router.put("/v1/documents/{doc_id}", response_model=WriteResult, responses=ERRORS)
async def put_document(body: DocumentIn, request: Request, doc_id: str = DocId, _: str = admin_access) -> WriteResult:
    """Add or replace one document; unchanged content costs nothing and keeps the snapshot."""
    _check_id(doc_id)
    check_document("", body.text, body.title, body.metadata, _pipeline(request).config.serving)
    doc = Document(id=doc_id, text=body.text, title=body.title, metadata=body.metadata)
    report = await run_in_threadpool(_pipeline(request).write_index, lambda ix: ix.upsert([doc], progress=False))
    return _result(report)


def _read(pipeline: AnswerPipeline, doc_id: str) -> DocumentOut:
    if pipeline.index is None:
        raise NotFoundError(f"unknown document '{doc_id}': the index is empty")
    with pipeline.index_lock:
        snapshot = pipeline.index.snapshot
        doc = pipeline.index.get_document(doc_id)
        info = pipeline.index.document(doc_id) or {}
    return DocumentOut(
        id=doc.id,
        title=doc.title,
        text=doc.text,
        metadata=doc.metadata,
        chunks=info.get("chunks", 0),
        snapshot=snapshot,
    )


@router.get("/v1/documents/{doc_id}", response_model=DocumentOut, responses=ERRORS)
async def get_document(request: Request, doc_id: str = DocId, _: str = read_access) -> DocumentOut:
    """Title, metadata, content hash and chunk count of one stored document."""
    _check_id(doc_id)
    return await run_in_threadpool(_read, _pipeline(request), doc_id)


def _delete(ix: Index, doc_id: str) -> IngestReport:
    if ix.document(doc_id) is None:
        raise NotFoundError(f"unknown document '{doc_id}'")
    return ix.delete([doc_id])


@router.delete("/v1/documents/{doc_id}", response_model=WriteResult, responses=ERRORS)
async def delete_document(request: Request, doc_id: str = DocId, _: str = admin_access) -> WriteResult:
    """Remove one document and its chunks; a new snapshot."""
    _check_id(doc_id)
    report = await run_in_threadpool(_pipeline(request).write_index, lambda ix: _delete(ix, doc_id))
    return _result(report)


def _batch(ix: Index, body: BatchRequest) -> IngestReport:
    missing = [d for d in body.delete if ix.document(d) is None]
    if missing:
        raise NotFoundError(f"unknown document ids: {', '.join(missing[:5])}")
    docs = [Document(id=d.id, text=d.text, title=d.title, metadata=d.metadata) for d in body.upsert]
    return ix.apply(docs, body.delete, progress=False)


@router.post("/v1/documents:batch", response_model=WriteResult, responses=ERRORS)
async def batch(body: BatchRequest, request: Request, _: str = admin_access) -> WriteResult:
    """Upsert and delete several documents in one atomic commit (one new snapshot)."""
    cfg = _pipeline(request).config.serving
    for i, d in enumerate(body.upsert):
        check_document(f"upsert.{i}.", d.text, d.title, d.metadata, cfg)
    report = await run_in_threadpool(_pipeline(request).write_index, lambda ix: _batch(ix, body))
    return _result(report)


def _info(pipeline: AnswerPipeline) -> IndexInfo:
    if pipeline.index is None:
        return IndexInfo(snapshot=None, documents=0, chunks=0)
    stats = pipeline.index.stats()
    return IndexInfo(
        snapshot=stats["snapshot"],
        documents=stats["documents"],
        chunks=stats["chunks"],
        embedder=public_name(str(stats["embedder"])) if stats.get("embedder") else None,
        snapshots=[SnapshotInfo(**s) for s in pipeline.index.snapshots()],
    )


@router.get("/v1/index", response_model=IndexInfo, responses=ERRORS)
async def index_info(request: Request, _: str = read_access) -> IndexInfo:
    """The current snapshot, document and chunk counts, and the snapshot history."""
    return await run_in_threadpool(_info, _pipeline(request))
