"""How far the index moved since a RAFT adapter was trained on one of its snapshots.

Serving calls `warn_if_drifted` when it loads an adapter whose card names a snapshot.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol

from ragtune.core.adapters import AdapterCard


class SnapshotIndex(Protocol):
    """What the drift check needs from an index (`Index` fits)."""

    @property
    def snapshot(self) -> str | None: ...

    def snapshots(self) -> list[dict[str, Any]]: ...

    @property
    def store(self) -> Any: ...  # with live_ids(seq) -> array of chunk ids


def _live_chunks(index: SnapshotIndex, seq: int) -> set[int]:
    return {int(i) for i in index.store.live_ids(seq)}


@dataclass
class SnapshotDrift:
    trained_on: str
    current: str | None
    commits_since: int | None
    changed_share: float | None  # Jaccard distance of the live chunk sets; None if the snapshot is gone
    far: bool
    message: str


def snapshot_drift(card: AdapterCard, index: SnapshotIndex, threshold: float = 0.3) -> SnapshotDrift | None:
    """How far the index moved since a RAFT adapter was trained on it; None when the card has no snapshot.

    `far` is True when more than `threshold` of the chunks changed, or the snapshot is no longer kept.
    Serving calls `warn_if_drifted` with this at adapter load.
    """
    if not card.snapshot:
        return None
    now = index.snapshot
    seqs = {s["id"]: s["seq"] for s in index.snapshots()}
    if card.snapshot == now:
        return SnapshotDrift(card.snapshot, now, 0, 0.0, False, "index unchanged since training")
    if card.snapshot not in seqs:
        msg = (
            f"adapter '{card.name}' was trained on index snapshot {card.snapshot}, which is no longer kept "
            f"(now {now}); its retrieval habits may not fit the current index"
        )
        return SnapshotDrift(card.snapshot, now, None, None, True, msg)
    now_seq = seqs.get(now or "", max(seqs.values()))
    old, new = _live_chunks(index, seqs[card.snapshot]), _live_chunks(index, now_seq)
    union = old | new
    share = 1 - len(old & new) / len(union) if union else 0.0
    commits = now_seq - seqs[card.snapshot]
    far = share > threshold
    msg = (
        f"adapter '{card.name}' was trained on snapshot {card.snapshot}; {commits} commits and "
        f"{share:.0%} of chunks changed since (now {now})"
    )
    return SnapshotDrift(card.snapshot, now, commits, share, far, msg)


def warn_if_drifted(card: AdapterCard, index: SnapshotIndex, threshold: float = 0.3) -> SnapshotDrift | None:
    """Issue a `UserWarning` when `snapshot_drift` says far; returns the drift either way."""
    drift = snapshot_drift(card, index, threshold)
    if drift is not None and drift.far:
        warnings.warn(drift.message + "; consider re-training with --raft", UserWarning, stacklevel=2)
    return drift
