"""The bundled sample domain keeps the promises the demo relies on."""

import json
import re

from ragtune.core.config import HOUSE_STYLE_REGEX
from ragtune.core.sample import sample_path
from ragtune.eval.harness.data import load_items
from ragtune.retrieval.loaders import load_documents
from ragtune.tuning.data import load_examples


def test_sizes_and_split():
    v1 = {d.id: d for d in load_documents([sample_path("docs", "v1")])}
    v2 = {d.id: d for d in load_documents([sample_path("docs", "v2")])}
    split = json.loads(sample_path("split.json").read_text())
    train_docs, eval_docs = set(split["train_docs"]), set(split["eval_docs"])
    assert len(v1) >= 30 and len(v2) >= 8 and set(v2) <= set(v1)
    assert not train_docs & eval_docs and train_docs | eval_docs == set(v1)
    assert all(150 <= len(d.text.split()) <= 500 for d in v1.values())

    examples = load_examples(sample_path("train.jsonl"))
    assert len(examples) >= 200 and {e.group for e in examples} <= train_docs
    assert all(re.fullmatch(HOUSE_STYLE_REGEX, e.answer) for e in examples)

    items = load_items(sample_path("eval.jsonl"))
    assert len(items) >= 80 and all(set(i.doc_ids) <= eval_docs for i in items)
    for it in items:
        assert it.answers[0].lower() in v1[it.doc_ids[0]].text.lower()

    updates = load_items(sample_path("eval_update.jsonl"))
    assert len(updates) >= 15
    for u in updates:
        doc = u.doc_ids[0]
        assert u.answers[0].lower() in v2[doc].text.lower() and u.answers[0].lower() not in v1[doc].text.lower()
        assert u.stale_answers[0].lower() in v1[doc].text.lower()
