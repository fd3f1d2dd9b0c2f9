"""Chunking with the embedder's own tokenizer, so every chunk fits its window.

Three strategies: `recursive` (default; paragraph, line, sentence, word boundaries), `markdown`
(split at headers first, each chunk remembers its section), and `fixed` (token windows with overlap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from ragtune.core.types import Document

HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


@dataclass(frozen=True)
class Piece:
    text: str
    section: str = ""


class Chunker:
    def __init__(self, tokenizer: Any, chunk_tokens: int, chunk_overlap: int, strategy: str = "recursive") -> None:
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap = min(chunk_overlap, chunk_tokens // 2)
        self.strategy = strategy
        self.splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer,
            chunk_size=chunk_tokens,
            chunk_overlap=self.overlap,
            separators=["\n## ", "\n# ", "\n\n", "\n", ". ", " ", ""],
        )

    def pieces(self, doc: Document) -> list[Piece]:
        if self.strategy == "markdown":
            return self._markdown(doc.text)
        if self.strategy == "fixed":
            return [Piece(t) for t in self._fixed(doc.text)]
        return [Piece(t) for t in self._recursive(doc.text)]

    def split(self, doc: Document) -> list[str]:
        return [p.text for p in self.pieces(doc)]

    def _recursive(self, text: str) -> list[str]:
        return [piece.strip() for piece in self.splitter.split_text(text) if piece.strip()]

    def _markdown(self, text: str) -> list[Piece]:
        sections = MarkdownHeaderTextSplitter(HEADERS, strip_headers=False).split_text(text)
        out: list[Piece] = []
        for sec in sections:
            path = " > ".join(str(sec.metadata[name]) for _, name in HEADERS if name in sec.metadata)
            out.extend(Piece(t, path) for t in self._recursive(sec.page_content))
        return out

    def _fixed(self, text: str) -> list[str]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        step = max(1, self.chunk_tokens - self.overlap)
        out: list[str] = []
        for start in range(0, len(offsets), step):
            window = offsets[start : start + self.chunk_tokens]
            piece = text[window[0][0] : window[-1][1]].strip()
            if piece:
                out.append(piece)
            if start + self.chunk_tokens >= len(offsets):
                break
        return out
