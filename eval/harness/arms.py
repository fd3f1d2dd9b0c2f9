"""What an eval run compares: arms (a mode plus its knobs) and the suite file that declares them.

A suite YAML names the data, the arms and what they share (seed, pinned snapshot, scoring rules):

    data: qa.jsonl
    seed: 0
    arms:
      base: {}
      ft: {adapter: house-style}
      rag-k5: {mode: rag, top_k: 5, search_mode: hybrid}
      hybrid-terse: {mode: hybrid, system_prompt: "Answer in five words.", max_new_tokens: 16}
      hybrid-short: {mode: hybrid, compress: sentences, max_context_tokens: 160}
      hybrid-warm: {mode: hybrid, sampling: {do_sample: true, temperature: 0.8, seed: 1}}
      big-rag:
        mode: rag
        generator: {backend: openai, base_url: "http://gpu-box:8000/v1", served_model: Qwen/Qwen2.5-7B-Instruct}

An arm takes every `AnswerOptions` field (core/options.py) but the snapshot, which the suite pins,
and may name its own generator (`GeneratorSpec`): the other arms keep the config's `models.*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ragtune.core.config import RETRIEVING, TUNED, Mode, ModelsConfig, check_mode
from ragtune.core.errors import ConfigError
from ragtune.core.inputs import read_text
from ragtune.core.options import AnswerOptions

DatasetKind = Literal["jsonl", "cmu_qa", "scifact", "hotpotqa"]


class GeneratorSpec(BaseModel):
    """An arm's own generator: the `models.generator_backend`, `base_url`, `api_key_env` and
    `served_model` keys for this arm only (the API key itself stays in the environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["transformers", "openai"] = "openai"
    base_url: str | None = Field(None, description="openai: the server, e.g. http://gpu-box:8000/v1")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the server's key")
    served_model: str | None = Field(None, description="openai: the base model's name on the server")
    model: str | None = Field(
        None,
        description="generator reference (bundled:NAME, folder, hub id): the weights for transformers, "
        "the tokenizer that counts prompt tokens for openai; default: models.generator",
    )

    @model_validator(mode="after")
    def _openai_has_a_url(self) -> GeneratorSpec:
        if self.backend == "openai" and not (self.base_url and self.base_url.strip()):
            raise ValueError("generator: backend openai needs base_url")
        return self

    def models(self, base: ModelsConfig) -> ModelsConfig:
        """The config's `models` section with this arm's generator in it."""
        update: dict[str, Any] = {
            "generator_backend": self.backend,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "served_model": self.served_model,
        }
        if self.model is not None:
            update["generator"] = self.model
        return ModelsConfig.model_validate({**base.model_dump(), **update})


class ArmSpec(AnswerOptions):
    """One arm: a named set of answer options (a mode and the knobs that make it a variant)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:+-]+$")
    mode: Mode
    retrieval_only: bool = Field(False, description="search only, no generation (retrieval metrics)")
    baseline: Literal["constant", "extractive"] | None = Field(
        None, description="a trivial baseline answered without the generator (eval/harness/baselines.py)"
    )
    constant: str | None = Field(None, description="the answer the constant baseline gives to every question")
    generator: GeneratorSpec | None = Field(None, description="this arm's own generator; None: the config's")

    @property
    def retrieves(self) -> bool:
        return self.mode in RETRIEVING

    @property
    def tuned(self) -> bool:
        return self.mode in TUNED

    @model_validator(mode="after")
    def _arm_knobs(self) -> ArmSpec:
        if self.retrieval_only and not self.retrieves:
            raise ValueError(f"arm '{self.name}': retrieval_only needs mode rag or hybrid")
        if self.snapshot is not None:
            raise ValueError(f"arm '{self.name}': the snapshot is the suite's (snapshot:), shared by every arm")
        return self

    def options(self) -> AnswerOptions:
        """The arm's answer options, without its name and role in the run."""
        return AnswerOptions.model_validate(self.model_dump(include=set(AnswerOptions.model_fields)))


def arm(spec: str | ArmSpec, adapter: str | None = None) -> ArmSpec:
    """A plain mode name becomes the arm of that name; `adapter` fills tuned arms that name none."""
    a = spec if isinstance(spec, ArmSpec) else ArmSpec(name=spec, mode=check_mode(spec))
    if adapter and a.tuned and a.adapter is None:
        a = a.model_copy(update={"adapter": adapter})
    return a


def arms_shape(raw: dict[str, Any]) -> dict[str, Any]:
    """A suite's `arms` as a list of names/mappings or as a mapping name -> knobs (mode defaults to the
    name), made a list of mappings (eval and verdict suites both take either)."""
    arms = raw.get("arms")
    if isinstance(arms, dict):
        arms = [{"name": k, **(v or {})} for k, v in arms.items()]
    if isinstance(arms, list):
        out = []
        for a in arms:
            a = {"name": a} if isinstance(a, str) else dict(a)
            a.setdefault("mode", a.get("name"))
            out.append(a)
        raw = {**raw, "arms": out}
    return raw


class EvalSuite(BaseModel):
    """An eval run's declaration; fields left None fall back to the `eval` section of the config."""

    model_config = ConfigDict(extra="forbid")

    data: Path | None = None
    dataset: DatasetKind = "jsonl"
    split: str | None = Field(None, description="cmu_qa: train | test; scifact: train | test")
    limit: int | None = Field(None, ge=1)
    arms: list[ArmSpec] = Field(min_length=1)
    seed: int | None = None
    snapshot: str | None = Field(None, description="index snapshot every arm searches; default: current")
    answer_regex: str | None = None
    format_regex: str | None = None
    format_schema: dict[str, Any] | None = None
    update: Path | None = Field(None, description="freshness: documents (folder or JSONL) applied between runs")
    train: Path | None = Field(None, description="training data: the constant baseline answers its majority")
    load: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="concurrency levels every arm also runs at, closed loop through a server (--load)"
    )

    @model_validator(mode="before")
    @classmethod
    def _arms_shape(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise ValueError("a suite file holds a mapping")
        return arms_shape(raw)

    @model_validator(mode="after")
    def _unique(self) -> EvalSuite:
        names = [a.name for a in self.arms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(sorted(dup))}")
        return self


def load_suite(path: Path) -> EvalSuite:
    if not path.is_file():
        raise ConfigError(f"eval suite not found: {path}")
    try:
        raw = yaml.safe_load(read_text(path))
        suite = EvalSuite.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"eval suite {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(root)"
        raise ConfigError(f"eval suite {path}: '{where}': {err['msg']}") from None
    if suite.data is not None and not suite.data.is_absolute():
        suite.data = (path.parent / suite.data).resolve()
    if suite.update is not None and not suite.update.is_absolute():
        suite.update = (path.parent / suite.update).resolve()
    if suite.train is not None and not suite.train.is_absolute():
        suite.train = (path.parent / suite.train).resolve()
    return suite
