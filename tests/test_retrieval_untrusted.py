"""Untrusted documents (issue 22): bounded chunks, size limits, printable ids, content-addressed
vectors across renames, FAISS files verified by checksum, filters matched ahead of the search."""

from __future__ import annotations

import json
import logging
import random
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from ragtune.core.config import RetrievalConfig
from ragtune.core.errors import DataError
from ragtune.core.models import load_embedder
from ragtune.core.types import Document
from ragtune.retrieval.chunker import LONG_SPAN_CHARS, SEGMENT_CHARS, Chunker
from ragtune.retrieval.filters import Matched
from ragtune.retrieval.index import Index
from ragtune.retrieval.loaders import load_documents, load_paths
from ragtune.retrieval.sync import sync_folder


@pytest.fixture(scope="module")
def tokenizer():
    return load_embedder("bundled:all-minilm-l6-v2").tokenizer


def counted(chunker: Chunker, text: str) -> int:
    """What a chunk really holds: WordPiece without its one-[UNK]-for-a-long-word shortcut."""
    return chunker.exact_counts([text])[0]


@pytest.mark.parametrize("strategy", ["recursive", "fixed", "markdown"])
def test_text_without_separators_is_cut_to_the_token_budget(tokenizer, strategy: str):
    rng = random.Random(0)
    blob = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(30_000))
    text = f"# Title\n\n{blob}\n\n{' ' * 5000}tail\n\n" + "\x01" * 3000
    chunker = Chunker(tokenizer, 64, 8, strategy)
    chunks = chunker.split(Document(id="x", text=text))
    assert len(chunks) > 10  # was one chunk of 30,000 characters
    assert max(counted(chunker, c) for c in chunks) <= 64
    assert max(len(c) for c in chunks) <= 64 * LONG_SPAN_CHARS
    whole = Chunker(tokenizer, 64, 0, strategy).split(Document(id="x", text=blob))
    assert "".join(whole) == blob  # nothing dropped, nothing repeated without overlap


def test_long_text_is_tokenized_in_segments_and_keeps_every_paragraph(tokenizer):
    paragraphs = [f"Paragraph {i} says the lamp number {i} is {i % 7} metres tall." for i in range(3000)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 2 * SEGMENT_CHARS
    chunker = Chunker(tokenizer, 100, 0)
    chunks = chunker.split(Document(id="x", text=text))
    assert max(counted(chunker, c) for c in chunks) <= 100
    joined = "\n\n".join(chunks)
    assert all(p in joined for p in paragraphs)


def test_file_and_call_size_limits_name_the_file_and_the_limit(tmp_path: Path):
    (tmp_path / "small.txt").write_text("A small file about lamps.")
    (tmp_path / "big.txt").write_text("lamp " * 400)  # 2,000 bytes
    limits = RetrievalConfig(max_file_bytes=1000)
    loaded = load_paths([tmp_path], limits)
    assert [d.id for d in loaded.documents] == ["small"]
    assert (
        len(loaded.errors) == 1
        and "big.txt" in loaded.errors[0]
        and "retrieval.max_file_bytes (1,000)" in (loaded.errors[0])
    )
    with pytest.raises(DataError, match=r"retrieval\.max_ingest_bytes \(100\)"):
        load_paths([tmp_path], RetrievalConfig(max_ingest_bytes=100))


def test_ids_that_are_not_printable_are_refused_with_file_and_line(tmp_path: Path, open_index):
    bad = tmp_path / "docs.jsonl"
    rows = [{"id": "fine", "text": "ok"}, {"id": "evil\u202egpj.exe", "text": "bidi override"}]
    bad.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"docs\.jsonl:2: document id .* non-printable character \(U\+202E\)"):
        load_documents([bad])
    nul = tmp_path / "nul.jsonl"
    nul.write_text(json.dumps({"id": "a\u0000b", "text": "t"}))
    with pytest.raises(DataError, match=r"nul\.jsonl:1: .*U\+0000"):
        load_documents([nul])
    long_id = tmp_path / "long.csv"
    long_id.write_text("id,text\n" + "x" * 600 + ",some text\n")
    with pytest.raises(DataError, match=r"long\.csv:2: .*longer than 512"):
        load_documents([long_id])

    ix = open_index(tmp_path / "ix")
    ix.upsert([Document(id="kept", text="The kept lamp is teal.")], progress=False)
    for ident in ("tab\there", "bell\x07", "zero\u200bwidth", "x" * 513):
        with pytest.raises(DataError, match="document id"):
            ix.upsert([Document(id=ident, text="t")], progress=False)
    assert ix.document_ids() == ["kept"]  # bad input lost nothing stored


def test_a_renamed_or_moved_file_is_not_embedded_again(tmp_path: Path, open_index):
    d = tmp_path / "docs"
    d.mkdir()
    body = "\n\n".join(f"Lamp model {i} ships in colour {i * 3} and weighs {i} grams." for i in range(40))
    (d / "lamp-notes.txt").write_text(body)  # no heading: the title comes from the file name
    ix = open_index(tmp_path / "ix", RetrievalConfig(chunk_tokens=32, chunk_overlap=0))
    first = sync_folder(ix, d, progress=False)
    assert first.chunks_written > 1
    embedded: list[str] = []
    real = ix.embed
    ix.embed = lambda texts, progress=False: (embedded.extend(texts), real(texts, progress))[1]  # type: ignore[method-assign]
    (d / "archive").mkdir()
    (d / "lamp-notes.txt").rename(d / "archive" / "old-lamp-notes.txt")
    moved = sync_folder(ix, d, progress=False)
    assert moved.renamed == [("lamp-notes.txt", "archive/old-lamp-notes.txt")]
    assert moved.chunks_written == first.chunks_written and moved.vectors_reused == moved.chunks_written
    assert embedded == []
    hit = ix.search("Lamp model 7 colour", 1)[0]
    assert hit.chunk.doc_id == "archive/old-lamp-notes" and hit.chunk.title == "Old Lamp Notes"
    # `ragtune ingest` of a copy under another name: also nothing embedded
    embedded.clear()  # (the search embedded its query)
    shutil.copy(d / "archive" / "old-lamp-notes.txt", tmp_path / "copy.txt")
    again = ix.upsert(load_documents([tmp_path / "copy.txt"]), progress=False)
    assert again.added == ["copy"] and embedded == []


def _corrupt(kind: str, path: Path, other: Path) -> None:
    target = next(path.glob("vectors-*.faiss"))
    data = bytearray(target.read_bytes())
    if kind == "flipped":
        for pos in range(len(data) // 2, len(data) // 2 + 64):
            data[pos] ^= 0x5A
        target.write_bytes(bytes(data))
    elif kind == "zeroed-page":
        page = len(data) // 2 // 4096 * 4096
        data[page : page + 4096] = bytes(min(4096, len(data) - page))
        target.write_bytes(bytes(data))
    else:  # the other index's file (same size: same chunk count and dimension) under this one's name
        shutil.copy(next(other.glob("vectors-*.faiss")), target)
    assert target.stat().st_size == len(data)


def _fill(path: Path, colour: str) -> list[Document]:
    docs = [Document(id=f"d{i}", text=f"Lamp {i} is {colour} number {i}.") for i in range(12)]
    with Index(path) as ix:
        ix.upsert(docs, progress=False)
    return docs


@pytest.mark.parametrize("kind", ["flipped", "zeroed-page", "swapped"])
def test_a_corrupted_faiss_file_of_the_right_size_is_rebuilt_not_used(tmp_path: Path, caplog, kind: str):
    path, other = tmp_path / "a", tmp_path / "b"
    _fill(path, "red")
    _fill(other, "blue")
    with Index(path) as ix:
        queries = [f"Lamp {i} red" for i in range(12)]
        before = [[(h.chunk.id, round(h.score, 4)) for h in hits] for hits in ix.search_many(queries, 3)]
    _corrupt(kind, path, other)
    with caplog.at_level(logging.WARNING, logger="ragtune.retrieval"):
        ix = Index(path)
    assert any("does not match its recorded checksum" in r.getMessage() for r in caplog.records)
    after = [[(h.chunk.id, round(h.score, 4)) for h in hits] for hits in ix.search_many(queries, 3)]
    assert after == before
    ix.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragtune.retrieval"):
        Index(path).close()  # the rebuilt file was written with its checksum: no warning now
    assert not caplog.records


def test_filters_matched_ahead_search_like_the_filter_itself(tmp_path: Path, open_index):
    ix = open_index(tmp_path / "ix")
    ix.upsert(
        [Document(id=f"d{i}", text=f"Lamp {i} glows.", metadata={"tags": [f"t{i % 3}"], "n": i}) for i in range(9)],
        progress=False,
    )
    filters = {"tags": {"$in": ["t1", "t2"]}, "n": {"$gte": 2}}
    matched = ix.match(filters)
    assert isinstance(matched, Matched) and matched.snapshot == ix.snapshot and len(matched.ids) == 5
    for mode in ("dense", "lexical", "hybrid"):
        plain = [h.chunk.id for h in ix.search("lamp glows", 9, mode=mode, filters=filters)]
        ahead = [h.chunk.id for h in ix.search("lamp glows", 9, mode=mode, filters=matched)]
        assert ahead == plain and len(plain) == 5
    pinned = matched.snapshot
    ix.upsert([Document(id="d1", text="Lamp 1 is gone.", metadata={"tags": ["t0"]})], progress=False)
    still = ix.search("lamp glows", 9, filters=matched)  # pinned to the snapshot it was matched at
    assert {h.chunk.doc_id for h in still} == {
        h.chunk.doc_id for h in ix.search("lamp", 9, filters=filters, snapshot=pinned)
    }
    assert np.isin([h.chunk.id for h in still], matched.ids).all()
