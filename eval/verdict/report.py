"""verdict.json / verdict.md / verdict.html: the measured "fine-tune, retrieve, or both" page.

The HTML is one standalone file (plots inlined as PNG data URIs, no script, no external asset), so
it can be mailed or attached to a ticket and still render.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ragtune.eval.harness.labels import label_tables
from ragtune.eval.harness.load import LOAD_HEADER, load_rows
from ragtune.eval.harness.markdown import md_table
from ragtune.eval.harness.plots import load_curve
from ragtune.eval.verdict.answers import QuestionAnswers, write_answers
from ragtune.eval.verdict.figures import ArmFigures, Comparison, Recommendation, VerdictFigures


class VerdictResult(BaseModel):
    figures: VerdictFigures
    recommendation: Recommendation
    manifest: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="what was skipped and why")
    disagreements: list[QuestionAnswers] = Field(
        default_factory=list, description="the questions where the arms disagree most (all in answers.jsonl)"
    )


Table = tuple[str, list[str], list[list[str]]]
LOAD_TITLE = "Under load (closed loop through the served pipeline; latency in ms)"


def _f(v: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def _est(arm: ArmFigures, which: str) -> str:
    e = arm.quality if which == "quality" else arm.format
    if e is None:
        return "–"
    ci = "" if e.lo is None or e.hi is None else f" [{e.lo:.3f}, {e.hi:.3f}]"
    return f"{e.mean:.3f}{ci}"


def _name(a: ArmFigures) -> str:
    return f"{a.arm} (baseline)" if a.baseline else a.arm


def _glance(f: VerdictFigures) -> Table:
    update = {u.arm: u for u in f.update}
    rows = []
    for a in f.arms:
        u = update.get(a.arm)
        rows.append(
            [
                _name(a),
                _f(a.quality.mean),
                _f(a.format.mean if a.format else None, ".0%"),
                _f(a.p50_ms, ".0f"),
                u.method if u else "–",
                _f(u.seconds, ".1f", " s") if u else "–",
                _f(u.changed_correct, ".0%") if u else "–",
            ]
        )
    header = ["arm", f.metric, "format", "p50 ms", "update method", "update time", "changed facts right"]
    return "At a glance", header, rows


def _baseline_table(f: VerdictFigures) -> Table:
    what = {
        "constant": "the same answer to every question: the most frequent training answer",
        "extractive": "no generator: the retrieved sentence nearest the question",
    }
    rows = [
        [a.arm, what[a.baseline] + (f' ("{a.answer}")' if a.answer else ""), _est(a, "quality"), _f(a.hit_at_k, ".0%")]
        for a in f.baselines
        if a.baseline
    ]
    title = "Trivial baselines: what a setup must significantly beat to be recommended"
    return title, ["baseline", "answers with", f"{f.metric} [95% CI]", f"hit@{f.hit_k or 'k'}"], rows


def comparison_verdict(c: Comparison) -> str:
    """The verdict cell: the Holm decision, with a note wherever it and the interval seem to disagree."""
    excludes_zero = c.lo is not None and c.hi is not None and (c.lo > 0 or c.hi < 0)
    if c.significant:
        text = f"{c.a if c.diff > 0 else c.b} better"
        if not excludes_zero and c.lo is not None:
            text += " (Holm's step-down test is less strict than the simultaneous interval, which includes 0)"
        return text
    text = "no significant difference"
    if excludes_zero:
        text += f" (the {c.test or 'test'}, Holm-adjusted, does not reject although the bootstrap interval excludes 0)"
    return text


def _comparison_table(f: VerdictFigures) -> Table:
    family = next((c.family for c in f.comparisons if c.family), None)
    label = f"simultaneous 95% CI (Bonferroni over {family} pairs)" if family else "unadjusted 95% CI (one pair alone)"
    rows = [
        [
            c.a,
            c.b,
            c.metric,
            f"{c.diff:+.3f}",
            "–" if c.lo is None or c.hi is None else f"[{c.lo:+.3f}, {c.hi:+.3f}]",
            _f(c.p_value, ".3g"),
            comparison_verdict(c),
        ]
        for c in f.comparisons
    ]
    title = f"Pairwise comparisons (paired; {label}; Holm-adjusted p; baselines in the family)"
    return title, ["a", "b", "metric", "a − b", label, "Holm p", "verdict"], rows


def _seed_table(f: VerdictFigures) -> Table | None:
    seeded = [a for a in f.setups if a.spread is not None]
    if not seeded:
        return None
    rows = [
        [
            a.arm,
            str(len(a.seeds)),
            ", ".join(f"{s:.3f}" for s in a.seeds),
            f"{min(a.seeds):.3f}–{max(a.seeds):.3f}",
            _f(a.spread),
        ]
        for a in seeded
    ]
    title = "Seed spread: the same setup trained with different seeds"
    return title, ["arm", "seeds", f"{f.metric} per seed", "min–max", "spread"], rows


def _p95(a: ArmFigures) -> str:
    """p95, or why there is none: its sample was too small (see eval/harness/latency.py)."""
    if a.p95_ms is not None:
        return f"{a.p95_ms:.0f}"
    return "–" if a.latency_n is None else f"n/a (n={a.latency_n})"


def _cost_tables(f: VerdictFigures) -> list[Table]:
    tables: list[Table] = [
        (
            "Inference cost",
            ["arm", "p50 ms", "p95 ms", "tokens/s", "prompt tokens/answer"],
            [
                [a.arm, _f(a.p50_ms, ".0f"), _p95(a), _f(a.tokens_per_s, ".1f"), _f(a.prompt_tokens, ".0f")]
                for a in f.setups
            ],
        )
    ]
    if f.latency:
        tables.append(
            (
                "Latency ratios (same questions, interleaved; end to end at equal output length)",
                ["arms", "n", "ratio a/b", "95% CI", "Holm p", "verdict"],
                [
                    [
                        f"{t.a} / {t.b}",
                        str(t.n),
                        f"{t.ratio:.2f}",
                        f"{t.low:.2f}–{t.high:.2f}",
                        f"{t.p_holm:.3g}",
                        t.verdict,
                    ]
                    for t in f.latency
                ],
            )
        )
    if f.load:
        doc = {"levels": [row.model_dump() for row in f.load]}
        tables.append((LOAD_TITLE, LOAD_HEADER, load_rows(doc)))
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
    row = [
        _f(s.training_s, ".0f", " s"),
        _f(s.peak_mem_mb, ".0f", " MB"),
        "–" if s.train_examples is None else str(s.train_examples),
        _f(s.index_build_s, ".1f", " s"),
    ]
    tables.append(
        ("Set-up cost", ["training wall time", "peak memory", "training examples", "index build time"], [row])
    )
    return tables


def _curve_table(f: VerdictFigures) -> Table:
    rows = [
        [
            p.arm,
            f"{p.fraction:.0%}",
            str(p.n_examples),
            _f(p.quality),
            "–" if p.spread is None else f"{min(p.seeds):.3f}–{max(p.seeds):.3f}",
            _f(p.format, ".0%"),
        ]
        for p in sorted(f.curve, key=lambda p: (p.arm, p.fraction))
    ]
    header = ["arm", "share of training data", "examples", f.metric, "seed min–max", "format"]
    return "Data needs: learning curve (nested subsets, same data order)", header, rows


ANSWERS_HEADING = "Answers to read: where the arms disagree most"


def _answer_tables(r: VerdictResult) -> list[Table]:
    """One small table per shown question: each arm's answer, its score and what it retrieved."""
    tables: list[Table] = []
    for q in r.disagreements:
        title = f"{q.id}: {q.question} (gold: {' / '.join(q.golds) or '–'})"
        rows = [[arm, a.answer, f"{a.f1:.3f}", ", ".join(a.retrieved[:3]) or "–"] for arm, a in q.answers.items()]
        tables.append((title, ["arm", "answer", r.figures.metric, "retrieved"], rows))
    return tables


def _answers_intro(r: VerdictResult) -> str:
    return (
        f"The {len(r.disagreements)} questions whose answers differ most across the arms (range of "
        f"{r.figures.metric}, then distinct answers); every answer to every question is in answers.jsonl."
    )


def _tables(r: VerdictResult) -> list[Table]:
    """Every table of the report as (title, header, rows); md and html render the same data."""
    f = r.figures
    tables: list[Table] = [_glance(f)]
    if f.baselines:
        tables.append(_baseline_table(f))
    tables.append(
        (
            "Accuracy and format (95% bootstrap CI)",
            ["arm", f.metric, "format adherence"],
            [[_name(a), _est(a, "quality"), _est(a, "format")] for a in f.arms],
        )
    )
    seeds = _seed_table(f)
    if seeds:
        tables.append(seeds)
    if f.labels is not None:
        tables += label_tables(f.labels)
    if f.comparisons:
        tables.append(_comparison_table(f))
    tables += _cost_tables(f)
    if f.curve:
        tables.append(_curve_table(f))
    return tables


def render_markdown(r: VerdictResult) -> str:
    rec = r.recommendation
    parts = ["# Verdict: fine-tune, retrieve, or both?", "", f"**Recommendation: {rec.choice}**", "", rec.text, ""]
    parts += ["Figures cited above:", ""]
    parts += [md_table(["id", "figure", "value"], [[x.id, x.label, x.value] for x in rec.figures]), ""]
    for title, header, rows in _tables(r):
        parts += [f"## {title}", "", md_table(header, rows), ""]
    if r.disagreements:
        parts += [f"## {ANSWERS_HEADING}", "", _answers_intro(r), ""]
        for title, header, rows in _answer_tables(r):
            parts += [f"### {title}", "", md_table(header, rows), ""]
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
    """Metric bars with CI whiskers, the learning curve and the load curve, as PNG data URIs."""
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
    colors = ["#b0b0b0" if a.baseline else "#4c72b0" for a in f.arms]  # baselines in grey
    ax.bar(names, means, yerr=err, capsize=4, color=colors)
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
    if f.load:
        out["load"] = "data:image/png;base64," + base64.b64encode(load_curve([x.model_dump() for x in f.load])).decode()
    return out


_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.rec{background:#eef6ee;padding:1em;border-radius:6px}
img{max-width:100%}code{background:#f3f3f3}td{white-space:pre-wrap;vertical-align:top}
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
        if title == LOAD_TITLE and "load" in imgs:
            parts.append(f"<img alt='latency against throughput per arm' src='{imgs['load']}'>")
        if title.startswith("Data needs") and "curve" in imgs:
            parts.append(f"<img alt='learning curve' src='{imgs['curve']}'>")
    if r.disagreements:
        parts += [f"<h2>{html.escape(ANSWERS_HEADING)}</h2>", f"<p>{html.escape(_answers_intro(r))}</p>"]
        for title, header, rows in _answer_tables(r):
            parts += [f"<h3>{html.escape(title)}</h3>", _html_table(header, rows)]
    if r.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in r.notes] + ["</ul>"]
    if r.manifest:
        parts.append(
            f"<h2>Manifest</h2><pre><code>{html.escape(json.dumps(r.manifest, indent=2, default=str))}</code></pre>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_verdict(
    out: Path, result: VerdictResult, answers: Sequence[QuestionAnswers] | None = None
) -> dict[str, Path]:
    """verdict.json/.md/.html, and answers.jsonl (every question, every arm) when `answers` are given."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "verdict.json", "md": out / "verdict.md", "html": out / "verdict.html"}
    if answers is not None:
        paths["answers"] = write_answers(out / "answers.jsonl", answers)
    paths["json"].write_text(result.model_dump_json(indent=2), encoding="utf-8")
    paths["md"].write_text(render_markdown(result), encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    return paths
