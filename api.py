"""The notebook API: thin entry points over the same code the CLI runs, taking data in memory.

`from ragtune import load_config, Index, Pipeline, train_adapter, evaluate, verdict`. Documents,
training examples and eval questions may be lists of dicts, `datasets.Dataset` objects or file
paths; each is checked before any model loads, so a bad row fails in a second with its position.
`load_config`, `Index` and `Pipeline` are the library's own (re-exported); the three functions
here only turn in-memory inputs into what `tuning`, `eval.harness` and `eval.verdict` take.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ragtune.core.config import Config, load_config
from ragtune.core.errors import ConfigError
from ragtune.eval.harness.arms import ArmSpec, EvalSuite, arm
from ragtune.eval.harness.backends import InProcessBackend
from ragtune.eval.harness.data import ItemsInput, items_from
from ragtune.eval.harness.loaders import seeded_sample
from ragtune.eval.harness.runner import RunSettings
from ragtune.eval.harness.session import EvalRun
from ragtune.eval.harness.session import evaluate as run_eval
from ragtune.eval.verdict.inputs import VerdictData
from ragtune.eval.verdict.run import run_verdict
from ragtune.retrieval.index import Index
from ragtune.retrieval.loaders import DocumentsInput, documents_from
from ragtune.serving.pipeline import Pipeline
from ragtune.tuning.data import ExamplesInput, examples_from
from ragtune.tuning.trainer import TuneResult
from ragtune.tuning.trainer import train_adapter as train

__all__ = ["EvalRun", "Index", "Pipeline", "TuneResult", "evaluate", "load_config", "train_adapter", "verdict"]


def train_adapter(
    examples: ExamplesInput,
    name: str,
    config: Config | None = None,
    *,
    epochs: float | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> TuneResult:
    """Train the LoRA adapter `name` (into the workspace's adapters folder) as `ragtune tune` does.

    `examples`: dicts {question, answer, context?, doc_id?}, {instruction, input?, output} or
    {messages}, a `datasets.Dataset` of such rows, or a JSONL/CSV path. `max_steps` bounds a trial run.
    """
    from ragtune.core.adapters import is_adapter_name

    if not is_adapter_name(name):
        raise ConfigError(f"adapter name '{name}' may use letters, digits, '-' and '_' only")
    rows = examples_from(examples)
    return train(rows, name, config or load_config(), epochs, progress, max_steps=max_steps)


def _pipeline(config: Config | None, pipeline: Pipeline | None) -> Pipeline:
    if pipeline is not None and config is not None and config is not pipeline.config:
        raise ConfigError("give config or pipeline, not both (a pipeline carries its config)")
    return pipeline or Pipeline.from_config(config or load_config())


def evaluate(  # noqa: PLR0913 - keyword options of one run, as `ragtune eval` has them
    questions: ItemsInput,
    config: Config | None = None,
    *,
    pipeline: Pipeline | None = None,
    arms: Sequence[str | ArmSpec] = ("base", "rag"),
    adapter: str | None = None,
    out: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> EvalRun:
    """Run each arm on the same questions (as `ragtune eval`) and write report.json/.md/.html to `out`.

    `questions`: dicts {id, question, answers, doc_ids?}, a `datasets.Dataset` or a JSONL path.
    `out` defaults to WORKSPACE/eval-out and starts fresh each call: a notebook re-runs cells, the
    CLI is the one that resumes. Pass a built `pipeline` to reuse its loaded models across calls.
    """
    items = items_from(questions)
    if not arms:
        raise ConfigError("arms: name at least one of base, ft, rag, hybrid")
    chosen = [arm(a, adapter) for a in arms]
    pipe = _pipeline(config, pipeline)
    cfg = pipe.config
    items = seeded_sample(items, limit, cfg.generation.seed)
    suite = EvalSuite(arms=chosen, limit=limit)
    out_dir = Path(out) if out is not None else cfg.workspace / "eval-out"
    settings = RunSettings(fresh=True, progress=progress)
    return run_eval(cfg, suite, InProcessBackend(pipe), out_dir, items=items, settings=settings, title="ragtune eval")


def _source(value: object) -> str:
    return str(value) if isinstance(value, str | os.PathLike) else f"in memory ({type(value).__name__})"


@dataclass(frozen=True)
class _VerdictInputs:
    """The verdict's five inputs as given; `load` checks them all before any training starts."""

    questions: ItemsInput | None
    examples: ExamplesInput | None
    documents: DocumentsInput | None
    update: DocumentsInput | None
    update_questions: ItemsInput | None

    def with_sample(self) -> _VerdictInputs:
        """The bundled sample domain's file for every input not given (as `ragtune verdict --sample`)."""
        from ragtune.core.sample import sample_path

        return _VerdictInputs(
            questions=self.questions if self.questions is not None else sample_path("eval.jsonl"),
            examples=self.examples if self.examples is not None else sample_path("train.jsonl"),
            documents=self.documents if self.documents is not None else sample_path("docs", "v1"),
            update=self.update if self.update is not None else sample_path("docs", "v2"),
            update_questions=self.update_questions
            if self.update_questions is not None
            else sample_path("eval_update.jsonl"),
        )

    def load(self) -> VerdictData:
        q, ex, docs = self.questions, self.examples, self.documents
        if q is None or ex is None or docs is None:
            missing = [k for k, v in (("questions", q), ("examples", ex), ("documents", docs)) if v is None]
            raise ConfigError(f"verdict needs {', '.join(missing)} (or sample=True)")
        if self.update is not None and self.update_questions is None:
            raise ConfigError("update needs update_questions: questions whose answers the update changes")
        named = {"data": q, "train": ex, "docs": docs, "update": self.update}
        return VerdictData(
            items=items_from(q),
            examples=examples_from(ex),
            docs=documents_from(docs),
            new_docs=[] if self.update is None else documents_from(self.update, "update"),
            changed=[] if self.update_questions is None else items_from(self.update_questions, "update_questions"),
            sources={k: _source(v) for k, v in named.items() if v is not None},
        )


def verdict(  # noqa: PLR0913 - the verdict's inputs, each optional with `sample`
    config: Config | None = None,
    *,
    questions: ItemsInput | None = None,
    examples: ExamplesInput | None = None,
    documents: DocumentsInput | None = None,
    update: DocumentsInput | None = None,
    update_questions: ItemsInput | None = None,
    sample: bool = False,
    out: str | os.PathLike[str] | None = None,
    console: Console | None = None,
) -> dict[str, Path]:
    """Train, index and evaluate every setup and write the "fine-tune, retrieve, or both?" report
    (as `ragtune verdict`); returns the paths of verdict.md/.html/.json. Takes many minutes.

    `sample=True` fills every input not given from the bundled sample domain.
    """
    inputs = _VerdictInputs(questions, examples, documents, update, update_questions)
    data = (inputs.with_sample() if sample else inputs).load()
    cfg = config or load_config()
    return run_verdict(cfg, data, Path(out) if out is not None else cfg.workspace / "verdict-out", console)
