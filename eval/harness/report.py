"""report.json (schema in eval/harness/schema.py), report.md (tables a person reads) and report.html
(standalone, plots inlined)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.eval.harness import plots
from ragtune.eval.harness.analysis import compare_arms, intervals, order_metrics
from ragtune.eval.harness.latency import COMPARED, LatencySample, RatioTest, common_length, compare_latency
from ragtune.eval.harness.load import load_markdown
from ragtune.eval.harness.manifest import manifest
from ragtune.eval.harness.markdown import md_table
from ragtune.eval.harness.runner import Record
from ragtune.eval.harness.schema import SCHEMA_VERSION
from ragtune.eval.harness.stats import PairTest

__all__ = ["COLUMNS", "manifest", "ms_cell", "table", "write_report"]

COLUMNS = [
    ("accuracy", "accuracy", "pct"),
    ("exact_match", "EM", "pct"),
    ("f1", "F1", "pct"),
    ("format", "format", "pct"),
    ("hit_at_k", "hit@k", "pct"),
    ("latency_n", "latency n", "int"),
    ("p50_ms", "p50 ms", "ms"),
    ("p95_ms", "p95 ms", "ms"),
    ("ttft_p50_ms", "TTFT p50 ms", "ms"),
]
LATENCY = [
    ("retrieve_p50_ms", "retrieve p50"),
    ("retrieve_p95_ms", "p95"),
    ("ttft_p50_ms", "TTFT p50"),
    ("ttft_p95_ms", "p95"),
    ("tpot_p50_ms", "TPOT p50"),
    ("p50_ms", "end-to-end p50"),
    ("p95_ms", "p95"),
    ("p99_ms", "p99"),
    ("equal_p50_ms", "e2e at equal length p50"),
]
LOAD_PLOT = "load.png"  # written next to the report when it has a load section
PLOTTED = ["f1", "exact_match", "contains", "extracted_match", "format", "hit@5", "mrr", "grounding", "citation"]


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if kind == "pct" else f"{value:.0f}"  # ms and int


def table(summary: dict[str, dict[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    rows = [
        [arm, s["n"], *(ms_cell(s, key) if kind == "ms" else _cell(s.get(key), kind) for key, _, kind in columns)]
        for arm, s in summary.items()
    ]
    return md_table(["arm", "n", *(c[1] for c in columns)], rows, "l" + "r" * (len(columns) + 1))


def _ci(iv: dict[str, Any] | None) -> str:
    if not iv or iv["mean"] is None:
        return "–"
    return f"{iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def interval_table(ivs: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """One row per metric, one column per arm: mean [95% CI]."""
    arms = list(ivs)
    rows = [[m, *(_ci(ivs[a].get(m)) for a in arms)] for m in names]
    return md_table(["metric", *arms], rows, "l" + "r" * len(arms))


def ms_cell(s: dict[str, Any], key: str) -> str:
    """A latency figure, or why it is missing: a percentile its sample is too small for reads n/a (n=…)."""
    if s.get(key) is not None:
        return f"{s[key]:.0f}"
    return f"n/a (n={s.get('latency_n', 0)})" if key in s else "–"


def latency_table(summary: dict[str, dict[str, Any]]) -> str:
    rows = []
    for arm, s in summary.items():
        qps, out = s.get("throughput_qps"), s.get("latency_output_tokens", s.get("completion_tokens"))
        cells = [ms_cell(s, k) for k, _ in LATENCY]
        cells += ["–" if out is None else f"{out:.0f}", "–" if qps is None else f"{qps:.2f}"]
        rows.append([arm, s.get("latency_n", "–"), *cells])
    header = ["arm", "latency n", *(c[1] for c in LATENCY), "output tokens", "questions/s"]
    return md_table(header, rows, "l" + "r" * (len(header) - 1))


def ratio_table(tests: Sequence[RatioTest]) -> str:
    """Paired latency ratios: geometric mean of per-question ratios a/b (< 1: a faster)."""
    header = ["figure", "arms", "n", "ratio a/b [95% CI]", "test", "p", "p (Holm)", "verdict"]
    rows = [
        [t.metric, f"{t.a} / {t.b}", t.n, f"{t.ratio:.3f} [{t.low:.3f}, {t.high:.3f}]", t.test]
        + [f"{t.p:.3g}", f"{t.p_holm:.3g}", t.verdict]
        for t in tests
    ]
    return md_table(header, rows, "llrllrrl")


def latency_doc(samples: Sequence[LatencySample], resamples: int, seed: int, alpha: float) -> dict[str, Any]:
    """report.json's `latency`: the interleaved sample, its common length and the paired ratio tests."""
    return {
        "common_length": common_length(samples),
        "n": len({s.id for s in samples}),
        "comparisons": [t.model_dump() for t in compare_latency(samples, COMPARED, resamples, seed, alpha)],
        "samples": [s.model_dump() for s in samples],
    }


def latency_markdown(doc: dict[str, Any]) -> str:
    lat = doc.get("latency") or {}
    tests = [RatioTest.model_validate(t) for t in lat.get("comparisons", [])]
    how = (
        f"Latency from {lat['n']} questions timed one request at a time, every arm back to back in a "
        "seeded shuffled order after an uncounted warm-up. TTFT = time to first token (retrieval included); "
        "TPOT = time per output token after the first; equal length = TTFT + TPOT x (L - 1) at "
        f"L = {lat.get('common_length', 0):.0f} tokens, the median output length over all arms. "
        if lat.get("n")
        else "Latency from each arm's first `latency n` questions, answered one request at a time as the arm "
        "ran (no interleaved sample in this run, so no paired ratios). TTFT = time to first token. "
    )
    lines = [latency_table(doc["summary"]), "", how + "p95 needs 20 samples and p99 100."]
    if tests:
        lines += ["", "Paired latency ratios (end-to-end at equal length; Holm over the pairs):", ""]
        lines += [ratio_table(tests)]
    return "\n".join(lines)


def comparison_table(tests: Sequence[PairTest]) -> str:
    header = ["metric", "arms", "n", "difference [unadjusted 95% CI]", "test", "p", "p (Holm)", "verdict"]
    rows = [
        [t.metric, f"{t.a} − {t.b}", t.n, f"{t.diff:+.3f} [{t.low:+.3f}, {t.high:+.3f}]", t.test]
        + [f"{t.p:.3g}", f"{t.p_holm:.3g}", t.verdict.rsplit(" (p_holm", 1)[0]]
        for t in tests
        if t.diff is not None and t.low is not None and t.high is not None
    ]
    return md_table(header, rows, "llrllrrl")


def _dedupe(records: Sequence[Record]) -> list[Record]:
    seen: dict[tuple[str, str], Record] = {}
    for r in records:
        seen.setdefault((r.arm, r.id), r)
    return list(seen.values())


def build_report(
    summary: dict[str, dict[str, Any]],
    records: Sequence[Record],
    meta: dict[str, Any],
    title: str = "ragtune eval",
    arms: Sequence[dict[str, Any]] | None = None,
    freshness: dict[str, Any] | None = None,
    latency: Sequence[LatencySample] | None = None,
    load: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report.json document: statistics on the first record of each (arm, question); the seed,
    alpha and bootstrap resamples come from the manifest, so the report states what it used."""
    stat_records = _dedupe(records)
    seed = int(meta.get("seed", 0) or 0)
    resamples = int(meta.get("bootstrap_resamples", 2000))
    alpha = float(meta.get("alpha", 0.05))
    arms = arms or [{"name": a, "mode": s.get("mode") or a} for a, s in summary.items()]
    return {
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "manifest": meta,
        "arms": list(arms),
        "summary": summary,
        "intervals": intervals(stat_records, resamples, seed),
        "comparisons": [t.model_dump() for t in compare_arms(stat_records, resamples, seed, alpha)],
        "freshness": freshness,
        "latency": latency_doc(latency, resamples, seed, alpha) if latency else None,
        "load": load,
        "records": [r.model_dump() for r in records],
    }


def render_markdown(doc: dict[str, Any], sections: dict[str, str] | None = None) -> str:
    summary, ivs = doc["summary"], doc["intervals"]
    tests = [PairTest.model_validate(t) for t in doc["comparisons"]]
    names = order_metrics([m for a in ivs.values() for m in a])
    lines = [f"# {doc.get('title', 'ragtune eval')}", "", table(summary), ""]
    lines += [
        "accuracy = gold answer contained in the reply (SQuAD-normalised); EM/F1 on the extracted answer; "
        "format = format regex or JSON schema; hit@k over the documents the prompt used; "
        "latency from the interleaved single-request sample below.",
        "",
        "## Metrics with 95% bootstrap intervals",
        "",
        interval_table(ivs, names),
        "",
        "## Latency (ms) and throughput",
        "",
        latency_markdown(doc),
        "",
        "## Paired comparisons",
        "",
        "Each pair on the questions both arms answered: paired bootstrap interval of the difference; "
        "exact McNemar for 0/1 metrics, paired bootstrap p otherwise; Holm correction across the pairs of "
        f"each metric (alpha {doc['manifest'].get('alpha', 0.05)}). A winner is named only where significant. "
        "The interval is unadjusted (one pair alone) while the verdict uses the Holm-adjusted p over the family, "
        "so an interval that excludes 0 can stand beside 'no significant difference': that pair's difference "
        "does not survive the correction for the number of pairs.",
        "",
        comparison_table(tests) if tests else "(one arm: nothing to compare)",
        "",
    ]
    if doc.get("load"):
        lines += ["## Under load", "", load_markdown(doc["load"], LOAD_PLOT), ""]
    for heading, body in (sections or {}).items():
        lines += [f"## {heading}", "", body, ""]
    lines += ["## Manifest", "", *[f"- {k}: {_flat(v)}" for k, v in doc["manifest"].items()], ""]
    return "\n".join(lines)


def _flat(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "–"
    return str(v)


def _md_to_html_table(md: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in md.strip().splitlines()]
    if len(rows) < 2 or not set(md.splitlines()[1]) <= set("|-: "):
        return f"<p>{html.escape(md)}</p>"
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(doc: dict[str, Any], markdown: str, records: Sequence[Record]) -> str:
    """One self-contained page: the markdown's tables as HTML plus two inlined PNG plots."""
    bars = plots.metric_bars(doc["intervals"], PLOTTED)
    cdf = plots.latency_cdf(records)
    parts: list[str] = []
    for block in markdown.split("\n\n"):
        b = block.strip()
        if not b:
            continue
        if b.startswith("# "):
            parts.append(f"<h1>{html.escape(b[2:])}</h1>")
        elif b.startswith("## "):
            parts.append(f"<h2>{html.escape(b[3:])}</h2>")
            if b[3:].startswith("Metrics"):
                parts.append(f'<img alt="metric bars with 95% CI" src="data:image/png;base64,{bars}">')
            if b[3:].startswith("Latency"):
                parts.append(f'<img alt="latency CDF per arm" src="data:image/png;base64,{cdf}">')
            if b[3:].startswith("Under load"):
                parts.append(f'<img alt="latency against throughput per arm" src="{LOAD_PLOT}">')
        elif b.startswith("|"):
            parts.append(_md_to_html_table(b))
        elif b.startswith("- "):
            items = "".join(f"<li>{html.escape(x[2:])}</li>" for x in b.splitlines())
            parts.append(f"<ul>{items}</ul>")
        else:
            parts.append(f"<p>{html.escape(b)}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    title = html.escape(doc.get("title", "ragtune eval"))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


@dataclass
class ReportExtras:
    """What a full `ragtune eval` adds to a report: the arm specs, the freshness scenario, the latency sample."""

    arms: Sequence[dict[str, Any]] | None = None
    freshness: dict[str, Any] | None = None
    latency: Sequence[LatencySample] | None = None
    load: dict[str, Any] | None = None  # eval/harness/load.py `load_doc`


def write_report(
    out_dir: Path,
    summary: dict[str, dict[str, Any]],
    records: Sequence[Record],
    meta: dict[str, Any],
    title: str = "ragtune eval",
    sections: dict[str, str] | None = None,
    extras: ReportExtras | None = None,
) -> tuple[Path, Path]:
    """Write report.json, report.md and report.html; returns the json and markdown paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x = extras or ReportExtras()
    doc = build_report(summary, records, meta, title, x.arms, x.freshness, x.latency, x.load)
    if x.load and x.load.get("levels"):
        (out_dir / LOAD_PLOT).write_bytes(plots.load_curve(x.load["levels"]))
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(doc, indent=2))
    md = render_markdown(doc, sections)
    md_path = out_dir / "report.md"
    md_path.write_text(md)
    (out_dir / "report.html").write_text(render_html(doc, md, records))
    (out_dir / "manifest.json").write_text(json.dumps(meta, indent=2))
    return json_path, md_path
