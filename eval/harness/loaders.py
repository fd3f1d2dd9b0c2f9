"""Eval sets from files, built on Hugging Face `datasets` (local files only, never the hub).

- generic JSONL `{id, question, answers, doc_ids?}` (see `data.py` for the fields);
- CMU-QA: Wikipedia articles and students' questions, split train/test **by article** so that a
  fine-tune never sees the test articles' facts;
- SciFact (BEIR layout): claims with relevant abstracts, retrieval-only (no reference answers);
- the HotpotQA distractor sample: each question's paragraphs become documents.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.core.errors import DataError
from ragtune.core.types import Document
from ragtune.eval.harness.data import EvalItem, load_items


@dataclass
class EvalSet:
    """Questions with, when the dataset carries them, the documents to index and a train split."""

    name: str
    items: list[EvalItem]
    documents: list[Document] = field(default_factory=list)
    train: list[EvalItem] = field(default_factory=list)


def _load(kind: str, files: str | list[str], **kw: Any) -> Any:
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(kind, data_files=files, split="train", **kw)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"cannot read {files}: {exc}") from None


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    return path


def load_jsonl(path: Path) -> EvalSet:
    """Generic JSONL; validated row by row so an error names its line."""
    return EvalSet(name=path.stem, items=load_items(path))


# CMU-QA --------------------------------------------------------------------------------------------

_YES_NO = re.compile(r"^(yes|no)\b", re.IGNORECASE)


def _clean_answer(text: str) -> str:
    text = " ".join(text.split())
    m = _YES_NO.match(text)
    return m.group(1).capitalize() if m and len(text) <= 5 else text


def _repair(text: str) -> str:
    """The question files mix encodings line by line (UTF-8, cp1252, latin-1), so they are read as
    latin-1 (every byte maps) and each field is decoded again: UTF-8 when valid, else cp1252."""
    raw = text.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def load_cmu_qa(root: Path, test_fraction: float = 0.3, seed: int = 0, max_article_chars: int | None = None) -> EvalSet:
    """CMU-QA v1.2: one document per article title, questions grouped by (article, question).

    Answers are all non-NULL answers given to the question (several students answered some); the
    gold document is the article. `items` is the test split, `train` the rest, split by article.
    """
    root = _need(root, "CMU-QA folder")
    docs: dict[str, Document] = {}
    questions: dict[tuple[str, str], dict[str, Any]] = {}
    for year in sorted(p for p in root.iterdir() if p.is_dir() and (p / "question_answer_pairs.txt").is_file()):
        rows = _load(
            "csv",
            str(year / "question_answer_pairs.txt"),
            delimiter="\t",
            encoding="latin-1",  # lossless byte view; `_repair` decodes each field
            quoting=3,
            keep_default_na=False,
        )
        for row in rows:
            title = " ".join(_repair(str(row["ArticleTitle"])).replace("_", " ").split())
            q, a = _repair(str(row["Question"])).strip(), _repair(str(row["Answer"])).strip()
            rel = str(row["ArticleFile"]).strip()
            if not title or not q or rel in ("", "NULL"):
                continue
            doc_id = "cmu:" + re.sub(r"\s+", "_", title.lower())
            if doc_id not in docs:
                txt = year / f"{rel}.txt.clean"
                if not txt.is_file():
                    continue
                text = txt.read_bytes().decode("utf-8", errors="replace")
                docs[doc_id] = Document(
                    id=doc_id, title=title, text=text[:max_article_chars] if max_article_chars else text
                )
            entry = questions.setdefault((doc_id, q), {"answers": []})
            if a and a != "NULL" and _clean_answer(a) not in entry["answers"]:
                entry["answers"].append(_clean_answer(a))
    if not docs:
        raise DataError(f"no CMU-QA articles under {root}")
    items: dict[str, list[EvalItem]] = {d: [] for d in docs}
    for n, ((doc_id, q), entry) in enumerate(questions.items()):
        if entry["answers"] and doc_id in docs:
            items[doc_id].append(EvalItem(id=f"cmu-{n:05d}", question=q, answers=entry["answers"], doc_ids=[doc_id]))
    titles = sorted(docs)
    random.Random(seed).shuffle(titles)
    n_test = max(1, round(len(titles) * test_fraction))
    test_docs = set(titles[:n_test])
    test = [it for d in sorted(test_docs) for it in items[d]]
    train = [it for d in sorted(set(titles) - test_docs) for it in items[d]]
    return EvalSet(name="cmu_qa", items=test, documents=list(docs.values()), train=train)


# SciFact (BEIR) ------------------------------------------------------------------------------------


def load_scifact(root: Path, split: str = "test") -> EvalSet:
    """Claims as questions, relevant abstracts as gold documents; retrieval-only (no answers)."""
    root = _need(root, "SciFact folder")
    qrels = _load("csv", str(_need(root / "qrels" / f"{split}.tsv", "SciFact qrels")), delimiter="\t")
    gold: dict[str, list[str]] = {}
    for r in qrels:
        if int(r["score"]) > 0:
            gold.setdefault(str(r["query-id"]), []).append(str(r["corpus-id"]))
    queries = _load("json", str(_need(root / "queries.jsonl", "SciFact queries")))
    items = [
        EvalItem(id=f"scifact-{q['_id']}", question=q["text"], doc_ids=gold[str(q["_id"])])
        for q in queries
        if str(q["_id"]) in gold
    ]
    corpus = _load("json", str(_need(root / "corpus.jsonl", "SciFact corpus")))
    docs = [Document(id=str(d["_id"]), title=d.get("title") or "", text=d["text"]) for d in corpus]
    return EvalSet(name=f"scifact-{split}", items=items, documents=docs)


# HotpotQA sample -----------------------------------------------------------------------------------


def _literal(value: Any) -> Any:
    """`context` / `supporting_facts` are Python-literal strings in some copies, dicts in others."""
    return ast.literal_eval(value) if isinstance(value, str) else value


def _paragraphs(context: Any) -> list[tuple[str, str]]:
    ctx = _literal(context)
    if isinstance(ctx, dict):
        return [(t, "".join(s)) for t, s in zip(ctx["title"], ctx["sentences"], strict=True)]
    return [(t, "".join(s)) for t, s in ctx]


def load_hotpotqa(path: Path) -> EvalSet:
    """Every question's ten paragraphs become documents (id = title); gold = supporting titles."""
    path = _need(path, "HotpotQA sample")
    if path.is_dir():
        path = _need(next(iter(sorted(path.glob("*.json"))), path / "missing.json"), "HotpotQA json")
    rows = _load("json", str(path))
    docs: dict[str, Document] = {}
    items: list[EvalItem] = []
    for r in rows:
        for title, text in _paragraphs(r["context"]):
            docs.setdefault(title, Document(id=title, title=title, text=text))
        sf = _literal(r["supporting_facts"])
        titles = list(dict.fromkeys(sf["title"] if isinstance(sf, dict) else [t for t, _ in sf]))
        items.append(EvalItem(id=str(r["id"]), question=r["question"], answers=[r["answer"]], doc_ids=titles))
    return EvalSet(name="hotpotqa", items=items, documents=list(docs.values()))


def load_eval_set(kind: str, path: Path, split: str | None = None, seed: int = 0) -> EvalSet:
    if kind == "jsonl":
        return load_jsonl(path)
    if kind == "cmu_qa":
        s = load_cmu_qa(path, seed=seed)
        return s if split in (None, "test") else EvalSet(s.name, s.train, s.documents, [])
    if kind == "scifact":
        return load_scifact(path, split or "test")
    if kind == "hotpotqa":
        return load_hotpotqa(path)
    raise DataError(f"unknown dataset kind '{kind}'; choose jsonl, cmu_qa, scifact or hotpotqa")


def seeded_sample(items: Sequence[EvalItem], n: int | None, seed: int = 0) -> list[EvalItem]:
    """A seeded sample of n items (all when n is None or larger), kept in the set's order."""
    if n is None or n >= len(items):
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), n))
    return [it for i, it in enumerate(items) if i in keep]
