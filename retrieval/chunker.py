"""Chunking with the embedder's own tokenizer, so every chunk fits its window.

Three strategies: `recursive` (default; paragraph, line, sentence, word boundaries), `markdown`
(split at headers first, each chunk remembers its section), and `fixed` (token windows with overlap).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter
from tokenizers import Tokenizer

from ragtune.core.types import Document

HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


@dataclass(frozen=True)
class Piece:
    text: str
    section: str = ""


class Chunker:
    """Splits documents into pieces of at most `chunk_tokens` embedder tokens.

    Each text is tokenized once (batched, with character offsets) and split on those offsets, so
    the token count of any candidate span is a lookup; splitting costs a few percent of embedding.
    """

    def __init__(self, tokenizer: Any, chunk_tokens: int, chunk_overlap: int, strategy: str = "recursive") -> None:
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap = min(chunk_overlap, chunk_tokens // 2)
        self.strategy = strategy
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast: Any = None
        if backend is not None:  # a private copy without truncation: chunking must see every token
            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_truncation()
            self._fast.no_padding()

    def pieces(self, doc: Document) -> list[Piece]:
        return self.pieces_many([doc])[0]

    def pieces_many(self, docs: list[Document]) -> list[list[Piece]]:
        if self.strategy == "markdown":
            return [self._markdown(d.text) for d in docs]
        texts = [d.text for d in docs]
        starts = self._token_starts(texts)
        if self.strategy == "fixed":
            return [[Piece(t) for t in self._fixed(text, st)] for text, st in zip(texts, starts, strict=True)]
        return [[Piece(t) for t in self._recursive(text, st)] for text, st in zip(texts, starts, strict=True)]

    def split(self, doc: Document) -> list[str]:
        return [p.text for p in self.pieces(doc)]

    def _token_starts(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        if self._fast is not None:  # skips transformers' per-text Python conversion
            return [enc.offsets for enc in self._fast.encode_batch(texts, add_special_tokens=False)]
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [[(int(a), int(b)) for a, b in offs] for offs in enc["offset_mapping"]]

    def _recursive(self, text: str, offsets: list[tuple[int, int]]) -> list[str]:
        starts = [a for a, _ in offsets]
        spans = _split(text, starts, 0, len(text), SEPARATORS, self.chunk_tokens, self.overlap)
        return [piece for a, b in spans if (piece := text[a:b].strip())]

    def _markdown(self, text: str) -> list[Piece]:
        sections = MarkdownHeaderTextSplitter(HEADERS, strip_headers=False).split_text(text)
        bodies = [sec.page_content for sec in sections]
        out: list[Piece] = []
        for sec, body, offsets in zip(sections, bodies, self._token_starts(bodies), strict=True):
            path = " > ".join(str(sec.metadata[name]) for _, name in HEADERS if name in sec.metadata)
            out.extend(Piece(t, path) for t in self._recursive(body, offsets))
        return out

    def _fixed(self, text: str, offsets: list[tuple[int, int]]) -> list[str]:
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


SEPARATORS = ["\n## ", "\n# ", "\n\n", "\n", ". ", " ", ""]


def _split(
    text: str, starts: list[int], lo: int, hi: int, seps: list[str], size: int, overlap: int
) -> list[tuple[int, int]]:
    """Recursive splitting of text[lo:hi] on the first separator present, packed up to `size` tokens.

    Like LangChain's RecursiveCharacterTextSplitter (separator kept at the start of the next piece,
    `overlap` tokens carried over), but a span's length is counted from the token offsets.
    """

    def ntok(a: int, b: int) -> int:
        return bisect_left(starts, b) - bisect_left(starts, a)

    if ntok(lo, hi) <= size:
        return [(lo, hi)]
    level = next(i for i, sep in enumerate(seps) if sep == "" or sep in text[lo:hi])
    sep = seps[level]
    if sep:
        cuts = [lo] + [lo + m.start() for m in re.finditer(re.escape(sep), text[lo:hi]) if m.start() > 0]
    else:  # no separator left: cut between tokens
        cuts = [lo] + [s for s in starts if lo < s < hi]
    pieces = [(a, b) for a, b in zip(cuts, cuts[1:] + [hi], strict=True) if b > a]
    out: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    for a, b in pieces:
        if ntok(a, b) > size:
            if current:
                out.append((current[0][0], current[-1][1]))
                current = []
            out.extend(_split(text, starts, a, b, seps[level + 1 :], size, overlap))
            continue
        if current and ntok(current[0][0], b) > size:
            out.append((current[0][0], current[-1][1]))
            while current and (ntok(current[0][0], current[-1][1]) > overlap or ntok(current[0][0], b) > size):
                current.pop(0)
        current.append((a, b))
    if current:
        out.append((current[0][0], current[-1][1]))
    return out
