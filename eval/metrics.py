"""Answer and retrieval metrics. Text normalisation follows SQuAD: lower case, no punctuation,
no articles, single spaces."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(pred: str, golds: Sequence[str]) -> float:
    p = normalize(pred)
    return float(any(p == normalize(g) for g in golds))


def token_f1(pred: str, golds: Sequence[str]) -> float:
    p_tokens = normalize(pred).split()
    best = 0.0
    for gold in golds:
        g_tokens = normalize(gold).split()
        if not p_tokens or not g_tokens:
            best = max(best, float(p_tokens == g_tokens))
            continue
        common = sum((Counter(p_tokens) & Counter(g_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(p_tokens), common / len(g_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains(pred: str, golds: Sequence[str]) -> float:
    """Gold span appears in the answer, on word boundaries after normalisation."""
    p = f" {normalize(pred)} "
    return float(any(normalize(g) and f" {normalize(g)} " in p for g in golds))


def extract(pred: str, regex: str | None) -> str:
    """The span to score: the regex's first group when it matches, else the whole answer."""
    if not regex:
        return pred
    m = re.search(regex, pred, flags=re.MULTILINE)
    return (m.group(1) if m and m.groups() else pred).strip()


def format_ok(pred: str, regex: str | None) -> float | None:
    if not regex:
        return None
    return float(re.fullmatch(regex, pred.strip(), flags=re.MULTILINE) is not None)


def hit_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float | None:
    if not gold:
        return None
    return float(bool(set(retrieved[:k]) & set(gold)))


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None
