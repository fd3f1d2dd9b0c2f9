"""verdict.json / verdict.md / verdict.html: the measured "fine-tune, retrieve, or both" page.

The HTML is one standalone file (plots inlined as PNG data URIs, no script, no external asset), so
it can be mailed or attached to a ticket and still render.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ragtune.eval.verdict.recommend import ArmFigures, Recommendation, VerdictFigures


class VerdictResult(BaseModel):
    figures: VerdictFigures
    recommendation: Recommendation
    manifest: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="what was skipped and why")


def _f(v: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def _est(arm: ArmFigures, which: str) -> str:
    e = arm.quality if which == "quality" else arm.format
    if e is None:
        return "–"
    ci = "" if e.lo is None or e.hi is None else f" [{e.lo:.3f}, {e.hi:.3f}]"
    return f"{e.mean:.3f}{ci}"


def _tables(r: VerdictResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table of the report as (title, header, rows); md and html render the same data."""
    f = r.figures
    update = {u.arm: u for u in f.update}
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    tables.append(
        (
            "At a glance",
            ["arm", f.metric, "format", "p50 ms", "update method", "update time", "changed facts right"],
            [
                [
                    a.arm,
                    _f(a.quality.mean),
                    _f(a.format.mean if a.format else None, ".0%"),
                    _f(a.p50_ms, ".0f"),
                    update[a.arm].method if a.arm in update else "–",
                    _f(update[a.arm].seconds, ".1f", " s") if a.arm in update else "–",
                    _f(update[a.arm].changed_correct, ".0%") if a.arm in update else "–",
                ]
                for a in f.arms
            ],
        )
    )
    tables.append(
        (
            "Accuracy and format (95% bootstrap CI)",
            ["arm", f.metric, "format adherence"],
            [[a.arm, _est(a, "quality"), _est(a, "format")] for a in f.arms],
        )
    )
    if f.comparisons:
        tables.append(
            (
                "Pairwise comparisons (paired bootstrap; Holm-adjusted p)",
                ["a", "b", "metric", "a − b", "95% CI", "p", "verdict"],
                [
                    [
                        c.a,
                        c.b,
                        c.metric,
                        f"{c.diff:+.3f}",
                        "–" if c.lo is None or c.hi is None else f"[{c.lo:+.3f}, {c.hi:+.3f}]",
                        _f(c.p_value, ".3g"),
                        (f"{c.a} better" if c.diff > 0 else f"{c.b} better")
                        if c.significant
                        else "no significant difference",
                    ]
                    for c in f.comparisons
                ],
            )
        )
    tables.append(
        (
            "Inference cost",
            ["arm", "p50 ms", "p95 ms", "tokens/s", "prompt tokens/answer"],
            [
                [a.arm, _f(a.p50_ms, ".0f"), _f(a.p95_ms, ".0f"), _f(a.tokens_per_s, ".1f"), _f(a.prompt_tokens, ".0f")]
                for a in f.arms
            ],
        )
    )
    if f.update:
        tables.append(
            (
                "Update cost: absorbing a document change",
                ["arm", "how", "time", "changed facts answered right", "changed facts"],
                [
                    [u.arm, u.method, _f(u.seconds, ".1f", " s"), _f(u.changed_correct, ".0%"), str(u.n_changed)]
                    for u in f.update
                ],
            )
        )
    s = f.setup
    tables.append(
        (
            "Set-up cost",
            ["training wall time", "peak memory", "training examples", "index build time"],
            [
                [
                    _f(s.training_s, ".0f", " s"),
                    _f(s.peak_mem_mb, ".0f", " MB"),
                    "–" if s.train_examples is None else str(s.train_examples),
                    _f(s.index_build_s, ".1f", " s"),
                ]
            ],
        )
    )
    if f.curve:
        tables.append(
            (
                "Data needs: learning curve (nested subsets, same seed)",
                ["arm", "share of training data", "examples", f.metric, "format"],
                [
                    [p.arm, f"{p.fraction:.0%}", str(p.n_examples), _f(p.quality), _f(p.format, ".0%")]
                    for p in sorted(f.curve, key=lambda p: (p.arm, p.fraction))
                ],
            )
        )
    return tables


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(r: VerdictResult) -> str:
    rec = r.recommendation
    parts = ["# Verdict: fine-tune, retrieve, or both?", "", f"**Recommendation: {rec.choice}**", "", rec.text, ""]
    parts += ["Figures cited above:", ""]
    parts += [_md_table(["id", "figure", "value"], [[x.id, x.label, x.value] for x in rec.figures]), ""]
    for title, header, rows in _tables(r):
        parts += [f"## {title}", "", _md_table(header, rows), ""]
    if r.notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    if r.manifest:
        parts += ["## Manifest", "", "```json", json.dumps(r.manifest, indent=2, default=str), "```", ""]
    return "\n".join(parts)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def plots(r: VerdictResult) -> dict[str, str]:
    """Metric bars with CI whiskers and the learning curve, as PNG data URIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = r.figures
    out: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    names = [a.arm for a in f.arms]
    means = [a.quality.mean for a in f.arms]
    err = [
        [a.quality.mean - (a.quality.lo if a.quality.lo is not None else a.quality.mean) for a in f.arms],
        [(a.quality.hi if a.quality.hi is not None else a.quality.mean) - a.quality.mean for a in f.arms],
    ]
    ax.bar(names, means, yerr=err, capsize=4, color="#4c72b0")
    ax.set_ylabel(f.metric)
    ax.set_title(f"{f.metric} per arm (95% CI)")
    out["quality"] = _png(fig)
    plt.close(fig)
    if f.curve:
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        for arm in dict.fromkeys(p.arm for p in f.curve):
            pts = sorted((p for p in f.curve if p.arm == arm), key=lambda p: p.n_examples)
            ax.plot([p.n_examples for p in pts], [p.quality for p in pts], marker="o", label=arm)
        ax.set_xlabel("training examples")
        ax.set_ylabel(f.metric)
        ax.set_title("learning curve")
        ax.legend()
        out["curve"] = _png(fig)
        plt.close(fig)
    return out


_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.rec{background:#eef6ee;padding:1em;border-radius:6px}
img{max-width:100%}code{background:#f3f3f3}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(r: VerdictResult) -> str:
    rec = r.recommendation
    imgs = plots(r)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>ragtune verdict</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Verdict: fine-tune, retrieve, or both?</h1>",
        f"<div class='rec'><p><strong>Recommendation: {html.escape(rec.choice)}</strong></p>",
        f"<p>{html.escape(rec.text)}</p></div>",
        "<h2>Figures cited</h2>",
        _html_table(["id", "figure", "value"], [[x.id, x.label, x.value] for x in rec.figures]),
    ]
    for title, header, rows in _tables(r):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
        if title.startswith("Accuracy"):
            parts.append(f"<img alt='{html.escape(r.figures.metric)} per arm' src='{imgs['quality']}'>")
        if title.startswith("Data needs") and "curve" in imgs:
            parts.append(f"<img alt='learning curve' src='{imgs['curve']}'>")
    if r.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in r.notes] + ["</ul>"]
    if r.manifest:
        parts.append(
            f"<h2>Manifest</h2><pre><code>{html.escape(json.dumps(r.manifest, indent=2, default=str))}</code></pre>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_verdict(out: Path, result: VerdictResult) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "verdict.json", "md": out / "verdict.md", "html": out / "verdict.html"}
    paths["json"].write_text(result.model_dump_json(indent=2), encoding="utf-8")
    paths["md"].write_text(render_markdown(result), encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    return paths
