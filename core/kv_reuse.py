"""Per-chunk KV caches, computed once and joined at answer time (`generation.kv_reuse`).

Most of a retrieval prompt is its retrieved chunks, and the same chunks come back question after
question, yet a plain prefill encodes them again every time. Here each chunk is encoded on its own
(attending only to itself, at positions 0..n-1) once per base model, adapter and precision, and kept
in a bounded LRU (`KVStore`: memory, optionally disk). For a prompt, the chunks' keys are rotated to
the positions the chunks take in it (RoPE: rotating a key by `offset` is the same as having encoded
the chunk there, since attention inside the chunk depends only on relative positions), the prompt's
opening (system prompt up to the first chunk) comes from the same store, and one forward pass
computes only what lies between and after the chunks (labels, the question, the template) with each
token attending to everything at earlier positions. That is the idea of TurboRAG (EMNLP 2025); this
is our own implementation.

What changes against a full prefill: chunks do not attend to each other or to the system prompt, and
the prompt is tokenized piece by piece. Worst of it, a chunk encoded alone makes its own first token an
attention sink that the question then attends to, so the first `recompute` tokens of each chunk
(`generation.kv_reuse_recompute`) are computed again in that same pass with full attention, their new
keys and values replacing the stored ones (the idea of CacheBlend, EuroSys 2025, with the tokens chosen
by place rather than by measured deviation). `tuning.independent_chunks` trains the adapter with the
same attention (`tuning/chunk_attention.py`).
Models whose positions are not plain RoPE (scaled RoPE with an attention factor, partial rotary,
ALiBi, learned positions) are answered with a full prefill and a warning.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
FORMAT = 1  # bump when what a stored entry means changes


@dataclass(frozen=True)
class Segment:
    """A piece of the prompt: a retrieved chunk (encoded on its own, reusable) or the text around them."""

    text: str
    chunk: bool


def split_prompt(prompt: str, chunks: Sequence[str]) -> list[Segment] | None:
    """`prompt` cut at each chunk's text, in order; None when a chunk is not in it verbatim."""
    out: list[Segment] = []
    at = 0
    for chunk in chunks:
        found = prompt.find(chunk, at) if chunk else -1
        if found < 0:
            return None
        if found > at:
            out.append(Segment(prompt[at:found], False))
        out.append(Segment(chunk, True))
        at = found + len(chunk)
    if at < len(prompt):
        out.append(Segment(prompt[at:], False))
    return out


def piece_ids(tokenizer: Any, prompt: str, chunks: Sequence[str]) -> tuple[list[int], list[int]]:
    """The prompt's token ids as reuse makes them (piece by piece) and each token's chunk (-1: none);
    a prompt whose chunks are not found is tokenized whole, with no chunk."""
    segments = split_prompt(prompt, chunks) if chunks else None
    if segments is None:
        whole: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return whole, [-1] * len(whole)
    ids: list[int] = []
    chunk_of: list[int] = []
    n = 0
    for seg in segments:
        piece = tokenizer(seg.text, add_special_tokens=False)["input_ids"]
        ids += piece
        chunk_of += [n if seg.chunk else -1] * len(piece)
        n += seg.chunk
    return ids, chunk_of


def chunk_attention(chunk_of: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, L, L] bool: what each token may attend to under reuse. Causal, and a token inside a chunk
    sees only its own chunk (it was encoded alone); every other token sees all earlier ones. Padding
    (`valid` False) is seen by no one; a padding token sees itself, so no row of the mask is empty."""
    length = chunk_of.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=chunk_of.device).tril()
    q, k = chunk_of[:, :, None], chunk_of[:, None, :]
    allowed = causal[None] & ((q < 0) | (q == k))
    if valid is not None:
        allowed &= valid[:, None, :].bool()
    return allowed | torch.eye(length, dtype=torch.bool, device=chunk_of.device)[None]


def recomputed(length: int, recompute: int) -> range:
    """Which tokens of a chunk of `length` reuse computes again with full attention, for answering and
    for training alike: the first `recompute`, where a chunk encoded alone differs most (its opening is
    its own attention sink)."""
    return range(min(recompute, length))


def open_heads(chunk_of: Sequence[int], recompute: int) -> list[int]:
    """`chunk_of` with each chunk's `recomputed` tokens taken out of it (-1)."""
    out = list(chunk_of)
    for chunk in {c for c in chunk_of if c >= 0}:
        at = [i for i, c in enumerate(chunk_of) if c == chunk]
        for j in recomputed(len(at), recompute):
            out[at[j]] = -1
    return out


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as the float mask attention adds (0 where allowed), with the head axis: [b, 1, q, k]."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass
class ChunkKV:
    """One encoded piece: per layer, keys and values of shape [kv_heads, tokens, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[1]) if self.keys else 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def entry_key(model_tag: str, adapter_tag: str, dtype: str, text: str) -> str:
    """The store key: the text and everything that changes its encoding (model, adapter weights, dtype)."""
    h = hashlib.sha256()
    for part in (str(FORMAT), model_tag, adapter_tag, dtype, text):
        h.update(part.encode("utf-8", errors="surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class KVStore:
    """Encoded chunks by key, least recently used out past `max_bytes`; with `disk`, entries are also
    written there (as `<key>.safetensors`, the name a hash: no text reaches the filesystem) and read back on a
    memory miss, so a restart or another replica on the same volume starts warm. The disk side keeps
    at most `disk_max_bytes`, oldest files out."""

    def __init__(self, max_bytes: int, disk: Path | None = None, disk_max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.disk = disk
        self.disk_max_bytes = disk_max_bytes if disk_max_bytes is not None else 4 * max_bytes
        self._entries: OrderedDict[str, ChunkKV] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._disk_bytes = 0
        if disk is not None:
            disk.mkdir(parents=True, exist_ok=True)
            self._disk_bytes = sum(f.stat().st_size for f in disk.glob("*.safetensors"))

    def get(self, key: str) -> ChunkKV | None:
        with self._lock:
            kv = self._entries.get(key)
            if kv is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return kv
        kv = self._read(key)
        with self._lock:
            if kv is None:
                self.misses += 1
                return None
            self.hits += 1
        self._keep(key, kv)
        return kv

    def put(self, key: str, kv: ChunkKV) -> None:
        self._keep(key, kv)
        self._write(key, kv)

    def _keep(self, key: str, kv: ChunkKV) -> None:
        if kv.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= old.nbytes if old is not None else 0
            self._entries[key] = kv
            self._bytes += kv.nbytes
            while self._bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def _path(self, key: str) -> Path | None:
        return self.disk / f"{key}.safetensors" if self.disk is not None else None

    def _read(self, key: str) -> ChunkKV | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = load_file(path)
            layers = len(data) // 2
            return ChunkKV([data[f"k{n}"] for n in range(layers)], [data[f"v{n}"] for n in range(layers)])
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            log.warning("KV cache file %s unreadable (%s); encoding the chunk again", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def _write(self, key: str, kv: ChunkKV) -> None:
        from safetensors.torch import save_file

        path = self._path(key)
        if path is None or self.disk is None:
            return
        tmp = path.with_suffix(".tmp")
        tensors = {f"k{n}": k.contiguous() for n, k in enumerate(kv.keys)}
        tensors.update({f"v{n}": v.contiguous() for n, v in enumerate(kv.values)})
        try:
            save_file(tensors, str(tmp))
            self._disk_bytes += tmp.stat().st_size
            tmp.replace(path)
        except OSError as exc:
            log.warning("KV cache not written to disk (%s); it stays in memory", exc)
            tmp.unlink(missing_ok=True)
            return
        self._trim_disk()

    def _trim_disk(self) -> None:
        """Oldest files out while over `disk_max_bytes` (the folder is listed only then)."""
        if self.disk is None or self._disk_bytes <= self.disk_max_bytes:
            return
        files = sorted(self.disk.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        self._disk_bytes = sum(p.stat().st_size for p in files)  # also counts other writers' files
        for p in files:
            if self._disk_bytes <= self.disk_max_bytes:
                break
            self._disk_bytes -= p.stat().st_size
            p.unlink(missing_ok=True)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            asked = self.hits + self.misses
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": self.hits / asked if asked else None,
            }


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@cache
def warn_not_rope(model_type: str) -> None:
    """Said once per model type: reuse is off for it."""
    log.warning("%s positions are not plain RoPE: kv_reuse is off, prompts are prefilled in full", model_type)


def rotary_of(model: Any) -> Any | None:
    """The model's RoPE module when its keys can be moved by a plain rotation, else None."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    try:
        decoder = base.get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is None or float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        return None
    config = getattr(base, "config", None)
    if float(getattr(config, "partial_rotary_factor", 1.0) or 1.0) != 1.0:
        return None
    return rotary


def rotation(offset: int, rotary: Any, head_dim: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of a rotation by `offset` positions ([head_dim] each), computed once per chunk."""
    probe = torch.zeros(1, 1, head_dim, device=device)
    cos, sin = rotary(probe, torch.tensor([[offset]], device=device))
    return cos[0, 0], sin[0, 0]


def shift_keys(
    keys: torch.Tensor, offset: int, rotary: Any, turn: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """Keys encoded at positions 0..n-1 ([kv_heads, n, head_dim]) as if encoded at offset..offset+n-1;
    `turn` is `rotation(offset, ...)` when the caller already has it."""
    if offset == 0:
        return keys
    cos, sin = turn if turn is not None else rotation(offset, rotary, keys.shape[-1], keys.device)
    k = keys.float()
    return (k * cos + _rotate_half(k) * sin).to(keys.dtype)


@dataclass
class RowCache:
    """One prompt ready for `generate`: its token ids and a KV cache of all but the last one."""

    ids: list[int]
    keys: list[torch.Tensor]  # per layer [kv_heads, len(ids) - 1, head_dim], in any order of positions
    values: list[torch.Tensor]


class ChunkEncoder:
    """Builds `RowCache`s for prompts with chunks, through the store."""

    def __init__(self, store: KVStore, model_tag: str, recompute: int = 0) -> None:
        self.store = store
        self.model_tag = model_tag
        self.recompute = recompute

    def encode(self, model: Any, ids: list[int]) -> ChunkKV:
        """`ids` on their own at positions 0..n-1."""
        x = torch.tensor([ids], dtype=torch.long, device=model.device)
        out = model(input_ids=x, position_ids=torch.arange(len(ids), device=model.device)[None], use_cache=True)
        layers = out.past_key_values.layers
        return ChunkKV([layer.keys[0] for layer in layers], [layer.values[0] for layer in layers])

    def piece(self, model: Any, tokenizer: Any, text: str, tag: tuple[str, str]) -> tuple[list[int], ChunkKV]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        key = entry_key(self.model_tag, tag[0], tag[1], text)
        kv = self.store.get(key)
        if kv is None or kv.length != len(ids):
            kv = self.encode(model, ids)
            self.store.put(key, kv)
        return ids, kv

    def row(self, model: Any, tokenizer: Any, segments: list[Segment], tag: tuple[str, str], rotary: Any) -> RowCache:
        """The prompt's opening and chunks from the store, the rest in one pass over the joined cache."""
        ids: list[int] = []
        parts: list[ChunkKV] = []
        stored: list[int] = []  # positions of the stored pieces' tokens, in cache order
        fresh: list[tuple[int, list[int]]] = []  # (first position, ids) of the pieces computed now
        for i, seg in enumerate(segments):
            if seg.chunk or (i == 0 and len(segments) > 1):  # the opening is shared by every prompt too
                piece_ids, kv = self.piece(model, tokenizer, seg.text, tag)
                turn = rotation(len(ids), rotary, kv.keys[0].shape[-1], kv.keys[0].device) if ids else None
                parts.append(ChunkKV([shift_keys(k, len(ids), rotary, turn) for k in kv.keys], kv.values))
                stored += range(len(ids), len(ids) + len(piece_ids))
                if seg.chunk:
                    fresh += [(len(ids) + j, [piece_ids[j]]) for j in recomputed(len(piece_ids), self.recompute)]
            else:
                piece_ids = tokenizer(seg.text, add_special_tokens=False)["input_ids"]
                fresh.append((len(ids), piece_ids))
            ids += piece_ids
        return self._rest(model, ids, parts, torch.tensor(stored, dtype=torch.long), fresh)

    def _rest(
        self,
        model: Any,
        ids: list[int],
        parts: list[ChunkKV],
        cached_pos: torch.Tensor,
        fresh: list[tuple[int, list[int]]],
    ) -> RowCache:
        """One forward over the pieces not in the store (all but the prompt's last token) and the chunk
        tokens chosen for recompute, each seeing every token at an earlier position: stored, or computed
        in this pass (whose copy replaces the stored one)."""
        query = sorted((p + j, t) for p, piece in fresh for j, t in enumerate(piece))
        query = [(p, t) for p, t in query if p < len(ids) - 1]  # the last token is generate's first step
        layers = len(parts[0].keys) if parts else 0
        keys = [torch.cat([kv.keys[n] for kv in parts], dim=1) for n in range(layers)]
        values = [torch.cat([kv.values[n] for kv in parts], dim=1) for n in range(layers)]
        if not query:
            return RowCache(ids, keys, values)
        from transformers import DynamicCache

        cache = DynamicCache()
        dtype = next(model.parameters()).dtype
        for n in range(layers):
            cache.update(keys[n][None].to(dtype), values[n][None].to(dtype), n)
        qpos = torch.tensor([p for p, _ in query], device=model.device)
        cached_pos = cached_pos.to(model.device)
        kept = ~torch.isin(cached_pos, qpos)  # stored copies of recomputed tokens are seen by no one
        kpos = torch.cat([cached_pos, qpos])
        seen = torch.cat([kept, torch.ones_like(qpos, dtype=torch.bool)])
        mask = additive(((kpos[None, :] <= qpos[:, None]) & seen[None, :])[None], dtype)
        x = torch.tensor([[t for _, t in query]], device=model.device)
        out = model(input_ids=x, position_ids=qpos[None], attention_mask=mask, past_key_values=cache, use_cache=True)
        done = out.past_key_values.layers
        return RowCache(ids, [layer.keys[0][:, seen] for layer in done], [layer.values[0][:, seen] for layer in done])


def batch_inputs(rows: list[RowCache], pad_id: int, device: Any) -> dict[str, Any]:
    """Rows of different lengths as one left-padded batch for `generate`, with a float32 cache."""
    from transformers import DynamicCache

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r.ids) :] = torch.tensor(r.ids)
        mask[i, width - len(r.ids) :] = 1
    cache = DynamicCache()
    for n in range(len(rows[0].keys)):
        cache.update(_stack([r.keys[n] for r in rows], width - 1), _stack([r.values[n] for r in rows], width - 1), n)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "past_key_values": cache}


def _stack(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """[kv_heads, n_i, d] tensors left-padded with zeros to `length` and stacked, as float32."""
    out = []
    for t in tensors:
        pad = length - t.shape[1]
        t = t.float()
        if pad:
            t = torch.cat([t.new_zeros(t.shape[0], pad, t.shape[2]), t], dim=1)
        out.append(t)
    return torch.stack(out)
