"""What a verdict runs on: flags or a suite file, resolved into loaded questions, examples and documents.

A verdict suite (YAML) declares the same inputs as the command's flags, or names a shared dataset
that carries all of them (CMU-QA: articles, train questions from some articles, test questions
from the others):

    dataset: jsonl            # or cmu_qa
    data: qa.jsonl
    train: train.jsonl
    docs: [docs/]
    update: docs-v2/          # optional
    update_data: qa_changed.jsonl

    dataset: cmu_qa
    root: ../shared/datasets/cmu_qa
    train_limit: 400          # optional caps keep a run bounded

Either may add `arms:` evaluated beside the verdict's own setups, in the eval suite's shape, e.g.
a large remote model with retrieval (`generator:`, eval/harness/arms.py):

    arms:
      remote-rag:
        mode: rag
        generator: {backend: openai, base_url: "http://gpu-box:8000/v1", served_model: Qwen/Qwen2.5-7B-Instruct}
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragtune.core.errors import ConfigError, DataError
from ragtune.core.inputs import read_text
from ragtune.core.types import Document
from ragtune.eval.harness.arms import ArmSpec, arms_shape
from ragtune.eval.harness.data import EvalItem, load_items
from ragtune.retrieval.loaders import load_documents
from ragtune.tuning.data import Example, load_examples


@dataclass
class VerdictData:
    items: list[EvalItem]
    examples: list[Example]
    docs: list[Document]
    new_docs: list[Document] = field(default_factory=list)
    changed: list[EvalItem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    arms: list[ArmSpec] = field(default_factory=list)  # the suite's extra arms, beside the verdict's setups


class VerdictSuite(BaseModel):
    """The verdict's inputs as one file; relative paths are relative to the file."""

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["jsonl", "cmu_qa"] = "jsonl"
    data: Path | None = Field(None, description="eval JSONL {id, question, answers, doc_ids?}")
    train: Path | None = Field(None, description="training data (any shape `ragtune tune` reads)")
    docs: list[Path] = Field(default_factory=list, description="folders, files or JSONL of documents")
    update: Path | None = Field(None, description="new versions of some documents")
    update_data: Path | None = Field(None, description="eval JSONL about the changed facts")
    root: Path | None = Field(None, description="cmu_qa: the dataset folder")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="cmu_qa: share of articles held out for test")
    train_limit: int | None = Field(None, ge=1, description="at most this many training examples (seeded)")
    max_article_chars: int | None = Field(None, ge=200, description="cmu_qa: truncate articles to bound indexing")
    seed: int = 0
    arms: list[ArmSpec] = Field(
        default_factory=list,
        description="extra arms beside the setups (e.g. a remote generator's); tuned ones "
        "without an adapter get the 100% fine-tune",
    )

    @model_validator(mode="before")
    @classmethod
    def _arms_shape(cls, raw: Any) -> Any:
        return arms_shape(raw) if isinstance(raw, dict) else raw

    @model_validator(mode="after")
    def _complete(self) -> VerdictSuite:
        if self.dataset == "jsonl":
            missing = [k for k in ("data", "train", "docs") if not getattr(self, k)]
            if missing:
                raise ValueError(f"a jsonl verdict suite needs {', '.join(missing)}")
        elif self.root is None:
            raise ValueError("a cmu_qa verdict suite needs root: the CMU-QA folder")
        if self.update is not None and self.update_data is None:
            raise ValueError("update needs update_data: questions whose answers the update changes")
        return self

    def resolved(self, base: Path) -> VerdictSuite:
        def rel(p: Path | None) -> Path | None:
            return None if p is None or p.is_absolute() else (base / p).resolve()

        fields = ("data", "train", "update", "update_data", "root")
        update = {k: rel(getattr(self, k)) or getattr(self, k) for k in fields}
        update["docs"] = [rel(p) or p for p in self.docs]
        return self.model_copy(update=update)


def load_suite(path: Path) -> VerdictSuite:
    if not path.is_file():
        raise ConfigError(f"verdict suite not found: {path}")
    try:
        suite = VerdictSuite.model_validate(yaml.safe_load(read_text(path)))
    except yaml.YAMLError as exc:
        raise ConfigError(f"verdict suite {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(root)"
        raise ConfigError(f"verdict suite {path}: '{where}': {err['msg']}") from None
    return suite.resolved(path.parent)


def _cap(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    if n is None or n >= len(examples):
        return examples
    keep = set(random.Random(seed).sample(range(len(examples)), n))
    return [e for i, e in enumerate(examples) if i in keep]


def _cmu_qa(suite: VerdictSuite) -> VerdictData:
    from ragtune.eval.harness.loaders import load_cmu_qa

    assert suite.root is not None
    ds = load_cmu_qa(suite.root, suite.test_fraction, suite.seed, suite.max_article_chars)
    titles = {d.id: d.title for d in ds.documents}
    examples = [
        Example(
            question=it.question,
            answer=f"{it.answers[0]}\nSources: {titles[it.doc_ids[0]]}",
            group=it.doc_ids[0],
            doc_id=it.doc_ids[0],
            title=titles[it.doc_ids[0]],
        )
        for it in ds.train
        if it.doc_ids and it.doc_ids[0] in titles
    ]
    return VerdictData(
        items=ds.items,
        examples=_cap(examples, suite.train_limit, suite.seed),
        docs=ds.documents,
        sources={"dataset": "cmu_qa", "root": str(suite.root)},
        arms=list(suite.arms),
    )


def load_verdict_data(suite: VerdictSuite) -> VerdictData:
    """Everything loaded and checked up front, so a bad file fails before any training starts."""
    if suite.dataset == "cmu_qa":
        return _cmu_qa(suite)
    assert suite.data is not None and suite.train is not None
    docs = load_documents(suite.docs)
    if not docs:
        raise DataError(f"no documents found in {', '.join(map(str, suite.docs))}")
    new_docs = load_documents([suite.update]) if suite.update else []
    changed = load_items(suite.update_data) if suite.update_data else []
    sources = {"data": str(suite.data), "train": str(suite.train), "docs": ", ".join(map(str, suite.docs))}
    if suite.update:
        sources["update"] = str(suite.update)
    return VerdictData(
        items=load_items(suite.data),
        examples=_cap(load_examples(suite.train), suite.train_limit, suite.seed),
        docs=docs,
        new_docs=new_docs,
        changed=changed,
        sources=sources,
        arms=list(suite.arms),
    )
