"""Chunking with the embedder's own tokenizer, so every chunk fits its window.

Three strategies: `recursive` (default; paragraph, line, sentence, word boundaries), `markdown`
(split at headers first, each chunk remembers its section), and `fixed` (token windows with overlap).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import numpy as np
from langchain_text_splitters import MarkdownHeaderTextSplitter
from tokenizers import Tokenizer

from ragtune.core.types import Document

HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]
LONG_SPAN_CHARS = 24  # no counted token spans more characters than this (see `Chunker.dense_starts`)
SEGMENT_CHARS = 1 << 16  # a long text is tokenized in segments of at most this many characters
SEGMENT_GROUP = 8  # segments tokenized in one batch


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
        self._exact: Any = None
        if backend is not None:  # a private copy without truncation: chunking must see every token
            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_truncation()
            self._fast.no_padding()

    def pieces(self, doc: Document) -> list[Piece]:
        return self.pieces_many([doc])[0]

    def pieces_many(self, docs: list[Document]) -> list[list[Piece]]:
        if self.strategy == "markdown":
            return [self._markdown(d.text) for d in docs]
        return [[Piece(t) for t in chunks] for chunks in self._plain_many([d.text for d in docs])]

    def split(self, doc: Document) -> list[str]:
        return [p.text for p in self.pieces(doc)]

    def _plain_many(self, texts: list[str]) -> list[list[str]]:
        """Chunks of each text, tokenized a group of segments at a time: memory follows the group, not the file."""
        out: list[list[str]] = [[] for _ in texts]
        group: list[tuple[int, str]] = []

        def flush() -> None:
            for (n, seg), starts in zip(group, self._token_starts([seg for _, seg in group]), strict=True):
                cut = self._fixed if self.strategy == "fixed" else self._recursive
                out[n].extend(cut(seg, starts))
            group.clear()

        for n, text in enumerate(texts):
            for a, b in segments(text, SEGMENT_CHARS):
                group.append((n, text[a:b]))
                if len(group) >= SEGMENT_GROUP:
                    flush()
        flush()
        return out

    def _token_starts(self, texts: list[str]) -> list[list[int]]:
        """Where each counted token starts; see `dense_starts` for spans the tokenizer gives one token or none."""
        if not texts:
            return []
        if self._fast is not None:  # skips transformers' per-text Python conversion
            offsets = [enc.offsets for enc in self._fast.encode_batch(texts, add_special_tokens=False)]
        else:
            enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offsets = [[(int(a), int(b)) for a, b in offs] for offs in enc["offset_mapping"]]
        return [self.dense_starts(text, [a for a, _ in offs]) for text, offs in zip(texts, offsets, strict=True)]

    def dense_starts(self, text: str, starts: list[int]) -> list[int]:
        """Token starts with no gap over `LONG_SPAN_CHARS`: a span covered by one token or none (a WordPiece
        [UNK] for a word over 100 characters, a run of spaces or control characters) is tokenized again in
        slices of that size, each slice counting at least one token. So a chunk of n counted tokens holds at
        most n * LONG_SPAN_CHARS characters, and text without separators is still cut to the budget."""
        points = np.array([0, *starts, len(text)], dtype=np.int64)
        wide = np.nonzero(np.diff(points) > LONG_SPAN_CHARS)[0]
        if not len(wide):
            return starts
        cuts = [int(c) for i in wide for c in range(int(points[i]), int(points[i + 1]), LONG_SPAN_CHARS)]
        slices = [text[c : c + LONG_SPAN_CHARS] for c in cuts]
        extra = set(cuts)
        if self._fast is not None:
            for c, enc in zip(cuts, self._fast.encode_batch(slices, add_special_tokens=False), strict=True):
                extra.update(c + a for a, _ in enc.offsets)
        return sorted(extra.union(starts))

    def exact_counts(self, texts: list[str]) -> list[int]:
        """Tokens in each text with WordPiece's [UNK]-for-a-long-word shortcut lifted: what a chunk really
        holds. Quadratic in a word's length, so for checking chunks (tests, bench), not for chunking."""
        if self._fast is None:
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        if self._exact is None:
            spec = json.loads(self._fast.to_str())
            if "max_input_chars_per_word" in spec.get("model", {}):
                spec["model"]["max_input_chars_per_word"] = 1 << 30
            self._exact = Tokenizer.from_str(json.dumps(spec))
        return [len(enc.ids) for enc in self._exact.encode_batch(texts, add_special_tokens=False)]

    def _recursive(self, text: str, starts: list[int]) -> list[str]:
        spans = _split(text, starts, 0, len(text), SEPARATORS, self.chunk_tokens, self.overlap)
        return [piece for a, b in spans if (piece := text[a:b].strip())]

    def _markdown(self, text: str) -> list[Piece]:
        sections = MarkdownHeaderTextSplitter(HEADERS, strip_headers=False).split_text(text)
        bodies = [sec.page_content for sec in sections]
        out: list[Piece] = []
        for sec, chunks in zip(sections, self._plain_many(bodies), strict=True):
            path = " > ".join(str(sec.metadata[name]) for _, name in HEADERS if name in sec.metadata)
            out.extend(Piece(t, path) for t in chunks)
        return out

    def _fixed(self, text: str, starts: list[int]) -> list[str]:
        """Windows of `chunk_tokens` less the hard-cut margin (a window ends inside a word as often as not)."""
        width = hard_size(self.chunk_tokens)
        step = max(1, width - self.overlap)
        out: list[str] = []
        for start in range(0, len(starts), step):
            end = start + width
            piece = text[starts[start] : starts[end] if end < len(starts) else len(text)].strip()
            if piece:
                out.append(piece)
            if end >= len(starts):
                break
        return out


def hard_size(size: int) -> int:
    """The token budget of a piece cut between tokens rather than at a separator: a few tokens short of
    `size`, since a piece cut inside a word counts a token or two more when tokenized on its own (as it
    is when embedded, or checked)."""
    return max(1, size - max(2, size // 16))


def segments(text: str, size: int) -> list[tuple[int, int]]:
    """`text` cut into spans of at most `size` characters, at a paragraph, line or word break when one
    lies in the span's last quarter: a long file is tokenized a segment at a time, and chunks never
    cross a segment (a break there is a chunk boundary anyway)."""
    out: list[tuple[int, int]] = []
    lo = 0
    while len(text) - lo > size:
        hi = lo + size
        floor = lo + size * 3 // 4
        cut = next((k + len(sep) for sep in ("\n\n", "\n", " ") if (k := text.rfind(sep, floor, hi)) > 0), hi)
        out.append((lo, cut))
        lo = cut
    out.append((lo, len(text)))
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
        size = hard_size(size)
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
