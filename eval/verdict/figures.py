"""The measured figures a verdict rests on: per-arm estimates, paired comparisons, costs, the learning
curve, and the register of figures the recommendation cites."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ragtune.eval.harness.labels import LabelReport
from ragtune.eval.harness.latency import RatioTest
from ragtune.eval.harness.load import LoadLevel

# the non-inferiority margin per metric when `verdict.margin` is None: a cheaper arm may be this much
# worse than the best and still be recommended (0.03 token F1 is about one answer in 33 lost)
DEFAULT_MARGINS = {"token F1": 0.03, "accuracy": 0.03, "macro-F1": 0.03, "exact match": 0.03}
FALLBACK_MARGIN = 0.03


def margin_for(metric: str, margin: float | None) -> float:
    return margin if margin is not None else DEFAULT_MARGINS.get(metric, FALLBACK_MARGIN)


class Estimate(BaseModel):
    """A metric's mean with its 95% confidence interval (bootstrap)."""

    mean: float
    lo: float | None = None
    hi: float | None = None


class ArmFigures(BaseModel):
    arm: str
    quality: Estimate = Field(description="the primary answer metric, e.g. token F1")
    format: Estimate | None = None
    p50_ms: float
    p95_ms: float | None = Field(None, description="None when the latency sample is too small for a p95")
    latency_n: int | None = Field(None, description="requests the latency figures rest on")
    tokens_per_s: float | None = None
    prompt_tokens: float | None = None
    baseline: Literal["constant", "extractive"] | None = Field(None, description="a trivial baseline, not a setup")
    answer: str | None = Field(None, description="the constant baseline's answer")
    hit_at_k: float | None = Field(None, description="share of questions with a gold document in the top k")
    seeds: list[float] = Field(default_factory=list, description="quality per training seed (several seeds only)")

    @property
    def spread(self) -> float | None:
        """max - min of the per-seed quality, when several seeds were trained."""
        return max(self.seeds) - min(self.seeds) if len(self.seeds) > 1 else None


class Comparison(BaseModel):
    """A paired comparison of two arms on one metric (difference a - b)."""

    a: str
    b: str
    metric: str
    diff: float
    lo: float | None = None
    hi: float | None = None
    p_value: float | None = Field(None, description="Holm-adjusted")
    significant: bool
    n: int | None = Field(None, description="paired questions")
    family: int | None = Field(
        None, description="pairs in the Holm family; set when lo..hi is the simultaneous (Bonferroni) interval"
    )
    test: str | None = None

    @property
    def interval_label(self) -> str:
        if self.family:
            return f"simultaneous 95% CI (Bonferroni over {self.family} pairs)"
        return "unadjusted 95% CI"

    def flipped(self) -> Comparison:
        lo = None if self.hi is None else -self.hi
        hi = None if self.lo is None else -self.lo
        return self.model_copy(update={"a": self.b, "b": self.a, "diff": -self.diff, "lo": lo, "hi": hi})


class UpdateCost(BaseModel):
    arm: str
    method: str = Field(description="'ingest' (re-index), 'retune' (re-train) or 'none'")
    seconds: float | None
    changed_correct: float | None = Field(None, description="share of changed facts answered right afterwards")
    n_changed: int = 0


class SetupCost(BaseModel):
    training_s: float | None = None
    peak_mem_mb: float | None = None
    train_examples: int | None = None
    index_build_s: float | None = None


class CurvePoint(BaseModel):
    arm: str
    fraction: float
    n_examples: int
    quality: float
    format: float | None = None
    seeds: list[float] = Field(default_factory=list, description="quality per training seed (several seeds only)")

    @property
    def spread(self) -> float | None:
        return max(self.seeds) - min(self.seeds) if len(self.seeds) > 1 else None


class VerdictFigures(BaseModel):
    metric: str = "token F1"
    arms: list[ArmFigures]
    comparisons: list[Comparison] = Field(default_factory=list)
    update: list[UpdateCost] = Field(default_factory=list)
    setup: SetupCost = SetupCost()
    curve: list[CurvePoint] = Field(default_factory=list)
    margin: float | None = Field(None, description="non-inferiority margin; None: the metric's default")
    hit_k: int | None = Field(None, description="the k of the arms' hit@k")
    labels: LabelReport | None = Field(None, description="a label task's accuracy, macro-F1 and confusion")
    latency: list[RatioTest] = Field(
        default_factory=list, description="paired latency ratios of the setups (eval/harness/latency.py)"
    )
    load: list[LoadLevel] = Field(
        default_factory=list,
        description="the setups under closed-loop load (verdict.load_levels; eval/harness/load.py)",
    )

    def speed(self, a: str, b: str) -> RatioTest | None:
        """The latency ratio a / b on the same questions, flipped if it was measured as b / a."""
        for t in self.latency:
            if (t.a, t.b) == (a, b):
                return t
            if (t.a, t.b) == (b, a):
                return t.flipped()
        return None

    @property
    def effective_margin(self) -> float:
        return margin_for(self.metric, self.margin)

    def arm(self, name: str) -> ArmFigures | None:
        return next((a for a in self.arms if a.arm == name), None)

    @property
    def setups(self) -> list[ArmFigures]:
        """The arms that are setups one could deploy (not baselines)."""
        return [a for a in self.arms if a.baseline is None]

    @property
    def baselines(self) -> list[ArmFigures]:
        return [a for a in self.arms if a.baseline is not None]

    def comparison(self, a: str, b: str, metric: str) -> Comparison | None:
        """The comparison of a and b, flipped if it was measured as b - a."""
        for c in self.comparisons:
            if c.metric != metric:
                continue
            if (c.a, c.b) == (a, b):
                return c
            if (c.a, c.b) == (b, a):
                return c.flipped()
        return None


class Figure(BaseModel):
    id: str
    label: str
    value: str


class FigureBook:
    """Numbers cited by the recommendation, each under a stable id."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []

    def cite(self, label: str, value: str) -> str:
        for f in self.figures:
            if f.label == label and f.value == value:
                return f"[{f.id}]"
        fig = Figure(id=f"F{len(self.figures) + 1}", label=label, value=value)
        self.figures.append(fig)
        return f"[{fig.id}]"


class Recommendation(BaseModel):
    choice: str = Field(description="the arm we recommend, or 'none' when no setup beats the baselines")
    sentences: list[str]
    figures: list[Figure]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)
