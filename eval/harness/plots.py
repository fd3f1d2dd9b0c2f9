"""matplotlib figures for report.html, returned as base64 PNG so the page needs no other file."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragtune.eval.harness.runner import Record


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def metric_bars(intervals: dict[str, dict[str, Any]], metrics: Sequence[str]) -> str:
    """Grouped bars: one group per metric, one bar per arm, whiskers = 95% bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(intervals)
    shown = [m for m in metrics if any(m in intervals[a] for a in arms)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(shown) + 2), 3.4))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(shown))
    for i, arm in enumerate(arms):
        iv = [intervals[arm].get(m) for m in shown]
        means = [v["mean"] if v and v["mean"] is not None else 0.0 for v in iv]
        low = [m - v["low"] if v and v["low"] is not None else 0.0 for m, v in zip(means, iv, strict=True)]
        high = [v["high"] - m if v and v["high"] is not None else 0.0 for m, v in zip(means, iv, strict=True)]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=[low, high], capsize=3, label=arm)
    ax.set_xticks(x, shown, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean (95% CI)")
    ax.legend(fontsize="small", ncols=min(4, len(arms)))
    return _png(fig)


def latency_cdf(records: Sequence[Record]) -> str:
    """Empirical CDF of per-question total latency, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    positive = bool(records) and all(r.total_ms > 0 for r in records)
    for arm in dict.fromkeys(r.arm for r in records):
        vals = np.sort([r.total_ms for r in records if r.arm == arm])
        if len(vals):
            ax.step(vals, np.arange(1, len(vals) + 1) / len(vals), where="post", label=arm)
    ax.set_xlabel("total ms per question (batched rows: time of their batch)")
    ax.set_ylabel("share of questions")
    if positive:  # a log axis spreads the fast single requests and the slow batched ones apart
        ax.set_xscale("log")
    ax.legend(fontsize="small")
    return _png(fig)


def load_curve(levels: Sequence[dict[str, Any]], field: str = "e2e_p50_ms") -> bytes:
    """Latency p50 against throughput, one line per arm through its concurrency levels (each point
    labelled c=level): where a line turns upward, more concurrency buys latency, not throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for arm in dict.fromkeys(row["arm"] for row in levels):
        rows = sorted((r for r in levels if r["arm"] == arm and r.get(field) is not None), key=lambda r: r["level"])
        xs, ys = [r["requests_per_s"] for r in rows], [r[field] for r in rows]
        ax.plot(xs, ys, marker="o", label=arm)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(f"c={r['level']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    ax.set_xlabel("throughput (completed requests/s)")
    ax.set_ylabel(f"{field.removesuffix('_ms').replace('_', ' ')} ms")
    ax.legend(fontsize="small")
    return base64.b64decode(_png(fig))
