"""Token-aware splitting with the embedder's own tokenizer, so every chunk fits its window."""

from __future__ import annotations

from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ragtune.core.types import Document


class Chunker:
    def __init__(self, tokenizer: Any, chunk_tokens: int, chunk_overlap: int) -> None:
        self.splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer,
            chunk_size=chunk_tokens,
            chunk_overlap=min(chunk_overlap, chunk_tokens // 2),
            separators=["\n## ", "\n# ", "\n\n", "\n", ". ", " ", ""],
        )

    def split(self, doc: Document) -> list[str]:
        return [piece.strip() for piece in self.splitter.split_text(doc.text) if piece.strip()]
