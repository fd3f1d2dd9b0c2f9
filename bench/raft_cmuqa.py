"""RAFT vs plain SFT on CMU-QA, both adapters served in hybrid mode (retrieval + adapter).

CMU-QA is split by article (`ragtune.eval.harness.loaders.load_cmu_qa`, 30% of articles held out, seed 0),
so no test article's facts are in training. Both adapters train on the same sampled training
questions with the same hyper-parameters (1 epoch):

- plain SFT: question -> answer, no context (the usual "teach the domain" fine-tune);
- RAFT: `build_raft_examples` over the live index: the retriever's real top-k, gold chunk kept with
  probability p, the rest hard negatives from other articles, answers citing their source.

Both are then served by the same `Pipeline` in hybrid mode over the same index on the same held-out
questions; the index holds only the sampled test and training articles (whole articles, seeded), to
bound embedding time on a shared CPU. Token F1 of the first answer line is the score, with a paired
bootstrap interval of the difference. Prints one JSON object on the last line; `--quick` is a few
articles and questions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from ragtune.core.config import Config, load_config  # noqa: E402
from ragtune.eval.harness.data import EvalItem  # noqa: E402
from ragtune.eval.harness.loaders import EvalSet, load_cmu_qa, seeded_sample  # noqa: E402
from ragtune.eval.harness.metrics import extract, token_f1  # noqa: E402
from ragtune.tuning.data import Example  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "cmu_qa"
SYSTEM_PROMPT = (
    "Answer the question in a few words: a short phrase, or yes or no. "
    "When documents are given, take the answer from them. Do not explain."
)
ANSWER_REGEX = r"^\s*([^\n]+)"  # the first line is the answer; a RAFT adapter adds a Sources line


def _config(ws: Path, quick: bool, k: int) -> Config:
    return load_config(
        workspace=ws,
        environ={},
        overrides={
            "prompt": {"system_prompt": SYSTEM_PROMPT, "max_context_tokens": 300},
            "retrieval": {"top_k": k, "chunk_tokens": 128, "chunk_overlap": 16},
            "generation": {"max_new_tokens": 10, "batch_size": 8, "seed": 0},
            "tuning": {
                "epochs": 1.0,
                "batch_size": 4,
                "grad_accum": 2,  # effective batch 8 with half the activation memory (shared machine)
                "learning_rate": 1e-3,
                "max_length": 512,
                "val_fraction": 0.1,
                "context_dropout": 0.0,
                "format_sample": 0,
                "early_stopping_patience": 0,
                "raft_k": k,
                "raft_p": 0.8,
            },
        },
    )


def _bounded(data: EvalSet, n_q: int, n_train: int, seed: int = 0) -> EvalSet:
    """Whole articles, seeded: test articles until `n_q` held-out questions, train articles until `n_train`.

    Only those articles are indexed, which keeps the embedding bounded on a shared CPU; both
    adapters are served over this same index, so the comparison stays paired.
    """
    rng = random.Random(seed)

    def pick(items: list[EvalItem], need: int) -> list[str]:
        by_doc: dict[str, int] = {}
        for it in items:
            by_doc[it.doc_ids[0]] = by_doc.get(it.doc_ids[0], 0) + 1
        docs = sorted(by_doc)
        rng.shuffle(docs)
        chosen, total = [], 0
        for d in docs:
            if total >= need:
                break
            chosen.append(d)
            total += by_doc[d]
        return chosen

    test_docs, train_docs = set(pick(data.items, n_q)), set(pick(data.train, n_train))
    return EvalSet(
        name=data.name,
        items=[it for it in data.items if it.doc_ids[0] in test_docs],
        documents=[d for d in data.documents if d.id in test_docs | train_docs],
        train=[it for it in data.train if it.doc_ids[0] in train_docs],
    )


def _examples(train: list[EvalItem], n: int) -> list[Example]:
    picked = random.Random(0).sample(train, min(n, len(train)))
    return [Example(question=it.question, answer=it.answers[0], doc_id=it.doc_ids[0]) for it in picked]


def _f1s(pipeline: Any, items: list[EvalItem], adapter: str) -> list[float]:
    answers = []
    for start in range(0, len(items), 32):
        batch = items[start : start + 32]
        answers += pipeline.answer_many([it.question for it in batch], mode="hybrid", adapter=adapter)
    return [token_f1(extract(a.answer, ANSWER_REGEX), it.answers) for a, it in zip(answers, items, strict=True)]


def _paired_bootstrap(a: list[float], b: list[float], resamples: int = 2000) -> tuple[float, float, float]:
    """Mean of a - b with a 95% percentile interval over resampled questions."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a few articles, 24 questions, 32 training examples")
    ap.add_argument("--out", type=Path, default=None, help="workspace folder (default bench-out/raft_cmuqa[-quick])")
    ap.add_argument("--questions", type=int, default=None, help="held-out test questions (default 200)")
    ap.add_argument("--train-examples", type=int, default=None, help="training questions (default 96)")
    ap.add_argument("--k", type=int, default=2, help="retrieved chunks per prompt, in training and serving")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"CMU-QA not found at {DATA}")
    t_start = time.perf_counter()
    out = args.out or ROOT / "bench-out" / ("raft_cmuqa-quick" if args.quick else "raft_cmuqa")
    n_q = args.questions or (24 if args.quick else 200)
    n_train = args.train_examples or (32 if args.quick else 96)
    progress = not args.quick

    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline
    from ragtune.tuning.raft import RaftReport, RaftSettings, build_raft_examples
    from ragtune.tuning.trainer import train_adapter

    data = _bounded(load_cmu_qa(DATA, test_fraction=0.3, seed=0), n_q, n_train)
    cfg = _config(out / "ws", args.quick, args.k)
    cfg.workspace.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    index = Index.from_config(cfg)
    ingest = index.upsert(data.documents, progress=progress)
    ingest_s = time.perf_counter() - t0
    snapshot = index.snapshot

    plain = _examples(data.train, n_train)
    report = RaftReport()
    settings = RaftSettings(k=args.k, p=cfg.tuning.raft_p, seed=cfg.tuning.seed)
    raft = build_raft_examples(plain, index, settings, snapshot=snapshot, report=report)
    runs: dict[str, dict[str, Any]] = {}
    for name, examples, snap in (("cmuqa-sft", plain, None), ("cmuqa-raft", raft, snapshot)):
        t0 = time.perf_counter()
        result = train_adapter(examples, name, cfg, progress=progress, snapshot=snap)
        runs[name] = {
            "train_s": round(time.perf_counter() - t0, 1),
            "train_rows": result.card.data_counts.get("train_rows"),
            "dropped_overlong": sum(v for k, v in result.card.data_counts.items() if "longer than" in k),
            "val_loss": result.card.metrics.get("val_loss"),
            "train_tokens": result.train_tokens,
            "snapshot": result.card.snapshot,
        }

    pipeline = Pipeline.from_config(cfg, with_index=False)
    pipeline.index = index
    items = seeded_sample(data.items, n_q, seed=0)
    t0 = time.perf_counter()
    f1 = {name: _f1s(pipeline, items, name) for name in runs}
    eval_s = time.perf_counter() - t0
    mean = {name: float(np.mean(v)) for name, v in f1.items()}
    diff, low, high = _paired_bootstrap(f1["cmuqa-raft"], f1["cmuqa-sft"])
    ratio = mean["cmuqa-raft"] / mean["cmuqa-sft"] if mean["cmuqa-sft"] else float("inf")
    targets = [
        {
            "name": "hybrid token F1: RAFT / plain SFT",
            "value": round(ratio, 4),
            "target": 1.0,
            "op": ">=",
            "met": bool(mean["cmuqa-raft"] > mean["cmuqa-sft"]),
        },
        {"name": "test questions", "value": len(items), "target": 200, "op": ">=", "met": len(items) >= 200},
    ]
    result_json = {
        "bench": "raft_cmuqa",
        "quick": args.quick,
        "questions": len(items),
        "test_articles": len({d for it in items for d in it.doc_ids}),
        "articles_indexed": len(data.documents),
        "chunks": ingest.chunks_written,
        "snapshot": snapshot,
        "train_examples": len(plain),
        "raft": {"built": report.built, "gold_kept": report.gold_kept, "k": args.k, "p": cfg.tuning.raft_p},
        "f1_hybrid": {name: round(v, 4) for name, v in mean.items()},
        "raft_minus_sft": {"diff": round(diff, 4), "ci95": [round(low, 4), round(high, 4)]},
        "runs": runs,
        "ingest_s": round(ingest_s, 1),
        "eval_s": round(eval_s, 1),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "targets": targets,
    }
    print(json.dumps(result_json))


if __name__ == "__main__":
    main()
