"""Answer, retrieval and grounding metrics, one function per metric, each on one question.

Text normalisation follows SQuAD: lower case, no punctuation, no articles, single spaces.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jsonschema
import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)

# Function words carry no fact; grounding counts only the other tokens of an answer.
_STOP_TEXT = (
    "i me my we our you your he him his she her it its they them their what which who whom this that these "
    "those am is are was were be been being have has had having do does did doing and but if or because as "
    "until while of at by for with about against between into through during before after above below to "
    "from up down in out on off over under again further then once here there when where why how all any "
    "both each few more most other some such no nor not only own same so than too very s t can will just "
    "don should now sources source answer yes"
)
STOPWORDS = frozenset(_STOP_TEXT.split())


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(pred: str, golds: Sequence[str]) -> float:
    p = normalize(pred)
    return float(any(p == normalize(g) for g in golds))


def token_f1(pred: str, golds: Sequence[str]) -> float:
    """Best bag-of-tokens F1 against any gold answer (SQuAD's definition)."""
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


def extracted_match(pred: str, golds: Sequence[str], regex: str | None) -> float | None:
    """Label-style match (yes/no/maybe...): 1 when the regex finds a span equal to a gold answer.

    None when no regex is configured; 0 when the regex finds nothing (the answer missed the format).
    """
    if not regex:
        return None
    m = re.search(regex, pred, flags=re.MULTILINE | re.IGNORECASE)
    if m is None:
        return 0.0
    span = m.group(1) if m.groups() else m.group(0)
    return exact_match(span, golds)


def format_ok(pred: str, regex: str | None, schema: dict[str, Any] | None = None) -> float | None:
    """The whole answer matches the regex, or parses as JSON valid against the schema."""
    if schema is not None:
        try:
            jsonschema.validate(json.loads(pred), schema)
        except (json.JSONDecodeError, jsonschema.ValidationError):
            return 0.0
        return 1.0
    if not regex:
        return None
    return float(re.fullmatch(regex, pred.strip(), flags=re.MULTILINE) is not None)


# retrieval: `retrieved` is the ranked list of distinct document ids, `gold` the relevant ones ------


def hit_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float | None:
    if not gold:
        return None
    return float(bool(set(retrieved[:k]) & set(gold)))


def recall_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float | None:
    if not gold:
        return None
    return len(set(retrieved[:k]) & set(gold)) / len(set(gold))


def mrr(retrieved: Sequence[str], gold: Sequence[str]) -> float | None:
    """Reciprocal rank of the first relevant document (0 when none was retrieved)."""
    if not gold:
        return None
    wanted = set(gold)
    return next((1.0 / rank for rank, d in enumerate(retrieved, 1) if d in wanted), 0.0)


def ndcg_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float | None:
    """Binary-relevance nDCG: gain 1/log2(rank+1) per relevant document, over the ideal ranking."""
    if not gold:
        return None
    wanted = set(gold)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, d in enumerate(retrieved[:k], 1) if d in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(wanted)) + 1))
    return dcg / ideal


# grounding --------------------------------------------------------------------------------------


def content_tokens(text: str) -> list[str]:
    return [t for t in normalize(text).split() if t not in STOPWORDS]


def grounding(answer: str, contexts: Sequence[str]) -> float | None:
    """Share of the answer's content tokens (SQuAD-normalised, stopwords dropped) found in the context.

    A lexical proxy for "supported by the retrieved text": 1.0 means every content word of the answer
    appears in some retrieved passage. None when there is no context or the answer has no content word.
    """
    tokens = content_tokens(answer)
    if not contexts or not tokens:
        return None
    vocab = {t for c in contexts for t in normalize(c).split()}
    return sum(t in vocab for t in tokens) / len(tokens)


def citation_correct(cited: Sequence[str], gold: Sequence[str]) -> float | None:
    """Share of cited documents that are gold documents; None without citations or gold ids."""
    if not cited or not gold:
        return None
    wanted = set(gold)
    return sum(d in wanted for d in cited) / len(cited)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None
