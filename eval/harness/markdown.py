"""Markdown tables for every report (eval, freshness, load, labels, verdict), built from rows of cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def md_cell(text: object) -> str:
    """A cell that cannot break its row: pipes escaped, line breaks shown as ⏎."""
    return str(text).replace("|", "\\|").replace("\n", " ⏎ ")


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """`align` has a letter per column, `l` (text) or `r` (figures); columns past its end are `l`."""
    sep = "".join("---:|" if align[i : i + 1] == "r" else "---|" for i in range(len(header)))
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + sep]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
