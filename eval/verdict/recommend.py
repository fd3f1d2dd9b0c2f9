"""The verdict's recommendation: sentences generated from measured figures, each citing them.

Every sentence is built from a comparison of numbers (a significant difference, a ratio, a slope),
so different numbers give a different text. Each figure a sentence rests on is registered in a
`FigureBook` and cited as `[F3]`; the report prints the book so a reader can check every claim.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

FORMAT_TOLERANCE = 0.05  # an arm this much less format-adherent is not an equal choice
LATENCY_TOLERANCE = 0.10  # p50 latencies this close are a draw (run-to-run noise); set-up cost decides
# what an arm needs before its first answer, least first; arms named by the user rank with ft
SETUP_ORDER = ("base", "few-shot", "rag", "ft", "hybrid", "hybrid-raft")
# the verdict's RAFT adapter continues the fine-tune, so its lead may be partly the extra steps
# (on CMU-QA with 64 rows it all was; with 160 RAFT beat equal-steps SFT: docs/tuning.md, Benchmarks)
EXTRA_STEPS = " (RAFT trains on top of the fine-tune, so part of this may be the extra training)"


def _setup_rank(arm: str) -> int:
    return SETUP_ORDER.index(arm if arm in SETUP_ORDER else "ft")


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
    p95_ms: float
    tokens_per_s: float | None = None
    prompt_tokens: float | None = None


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


class VerdictFigures(BaseModel):
    metric: str = "token F1"
    arms: list[ArmFigures]
    comparisons: list[Comparison] = Field(default_factory=list)
    update: list[UpdateCost] = Field(default_factory=list)
    setup: SetupCost = SetupCost()
    curve: list[CurvePoint] = Field(default_factory=list)

    def arm(self, name: str) -> ArmFigures | None:
        return next((a for a in self.arms if a.arm == name), None)

    def comparison(self, a: str, b: str, metric: str) -> Comparison | None:
        """The comparison of a and b, flipped if it was measured as b - a."""
        for c in self.comparisons:
            if c.metric != metric:
                continue
            if (c.a, c.b) == (a, b):
                return c
            if (c.a, c.b) == (b, a):
                return Comparison(
                    a=a,
                    b=b,
                    metric=metric,
                    diff=-c.diff,
                    lo=None if c.hi is None else -c.hi,
                    hi=None if c.lo is None else -c.lo,
                    p_value=c.p_value,
                    significant=c.significant,
                )
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
    choice: str = Field(description="the arm we recommend")
    sentences: list[str]
    figures: list[Figure]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def _ci(e: Estimate) -> str:
    return f"{e.mean:.3f}" if e.lo is None or e.hi is None else f"{e.mean:.3f} (95% CI {e.lo:.3f}–{e.hi:.3f})"


def _diff(c: Comparison) -> str:
    ci = "" if c.lo is None or c.hi is None else f", 95% CI {c.lo:+.3f}..{c.hi:+.3f}"
    p = "" if c.p_value is None else f", Holm p={c.p_value:.3g}"
    return f"{c.diff:+.3f}{ci}{p}"


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


class _Writer:
    def __init__(self, figs: VerdictFigures) -> None:
        self.f = figs
        self.book = FigureBook()
        self.sentences: list[str] = []

    def quality(self, arm: str) -> str:
        a = self.f.arm(arm)
        assert a is not None
        return self.book.cite(f"{arm} {self.f.metric}", _ci(a.quality))

    def compare(self, c: Comparison) -> str:
        return self.book.cite(f"{c.a} − {c.b} {c.metric}", _diff(c))

    def say(self, sentence: str) -> None:
        self.sentences.append(sentence)


def _ranked(figs: VerdictFigures) -> list[ArmFigures]:
    return sorted(figs.arms, key=lambda a: a.quality.mean, reverse=True)


def _tied_with_best(figs: VerdictFigures, best: ArmFigures) -> tuple[list[Comparison], list[Comparison]]:
    """Split the other arms' comparisons with the best into significant wins and ties."""
    wins: list[Comparison] = []
    ties: list[Comparison] = []
    for other in figs.arms:
        if other.arm == best.arm:
            continue
        c = figs.comparison(best.arm, other.arm, figs.metric)
        if c is None:
            continue
        (wins if c.significant and c.diff > 0 else ties).append(c)
    return wins, ties


def _accuracy(w: _Writer, best: ArmFigures) -> list[str]:
    """Say who is most accurate and against whom that holds; return the arms statistically tied with it."""
    figs = w.f
    wins, ties = _tied_with_best(figs, best)
    cq = w.quality(best.arm)  # cite in reading order
    if wins:
        beaten = ", ".join(f"{c.b} ({c.diff:+.3f} {w.compare(c)})" for c in sorted(wins, key=lambda c: c.diff))
        w.say(
            f"{best.arm} gives the best {figs.metric}, {best.quality.mean:.3f} {cq}, significantly ahead of {beaten}."
        )
    else:
        w.say(f"{best.arm} has the highest {figs.metric}, {best.quality.mean:.3f} {cq}.")
    if ties:
        tied = ", ".join(f"{c.b} ({c.diff:+.3f} {w.compare(c)})" for c in ties)
        w.say(f"Its lead over {tied} is not significant, so on accuracy alone these are a draw.")
    return [c.b for c in ties]


def _format(w: _Writer) -> None:
    with_fmt = [a for a in w.f.arms if a.format is not None]
    if len(with_fmt) < 2:
        return
    top = max(with_fmt, key=lambda a: a.format.mean if a.format else 0.0)
    low = min(with_fmt, key=lambda a: a.format.mean if a.format else 0.0)
    assert top.format is not None and low.format is not None
    if top.format.mean - low.format.mean < 0.05:
        w.say(
            f"Format adherence barely varies, from {low.format.mean:.0%} "
            f"{w.book.cite(f'{low.arm} format adherence', _ci(low.format))} to {top.format.mean:.0%} "
            f"{w.book.cite(f'{top.arm} format adherence', _ci(top.format))}."
        )
        return
    w.say(
        f"For the house format, {top.arm} follows it in {top.format.mean:.0%} of answers "
        f"{w.book.cite(f'{top.arm} format adherence', _ci(top.format))} against {low.format.mean:.0%} for {low.arm} "
        f"{w.book.cite(f'{low.arm} format adherence', _ci(low.format))}."
    )


def _latency(w: _Writer, choice: ArmFigures) -> None:
    fastest = min(w.f.arms, key=lambda a: a.p50_ms)
    c50 = w.book.cite(f"{choice.arm} p50 latency", f"{choice.p50_ms:.0f} ms")
    if fastest.arm == choice.arm:
        w.say(f"It is also the fastest arm at {choice.p50_ms:.0f} ms p50 {c50}.")
        return
    f50 = w.book.cite(f"{fastest.arm} p50 latency", f"{fastest.p50_ms:.0f} ms")
    ratio = choice.p50_ms / fastest.p50_ms if fastest.p50_ms > 0 else float("inf")
    w.say(
        f"It costs {ratio:.2f}x the latency of the fastest arm, {fastest.arm}: "
        f"{choice.p50_ms:.0f} ms against {fastest.p50_ms:.0f} ms p50 {c50} {f50}."
    )


def _update(w: _Writer) -> None:
    by_arm = {u.arm: u for u in w.f.update if u.seconds is not None}
    ingest = [u for u in by_arm.values() if u.method == "ingest"]
    retune = [u for u in by_arm.values() if u.method == "retune"]
    if not ingest or not retune:
        return
    # every ingest arm shares one re-index, so name the one that answers the changed facts best
    i = max(ingest, key=lambda u: (u.changed_correct or 0.0, -(u.seconds or 0.0)))
    r = min(retune, key=lambda u: u.seconds or 0.0)
    assert i.seconds is not None and r.seconds is not None
    ci = w.book.cite(f"{i.arm} update: re-ingest time", _secs(i.seconds))
    cr = w.book.cite(f"{r.arm} update: re-training time", _secs(r.seconds))
    ratio = r.seconds / i.seconds if i.seconds > 0 else float("inf")
    w.say(
        f"A document change reaches {i.arm} in {_secs(i.seconds)} of re-indexing {ci}, while {r.arm} needs "
        f"{_secs(r.seconds)} of re-training {cr}, {ratio:.0f}x longer."
    )
    if i.changed_correct is not None and r.changed_correct is not None:
        ki = w.book.cite(f"{i.arm} changed facts right after update", f"{i.changed_correct:.0%} of {i.n_changed}")
        kr = w.book.cite(f"{r.arm} changed facts right after update", f"{r.changed_correct:.0%} of {r.n_changed}")
        leader = i if i.changed_correct >= r.changed_correct else r
        w.say(
            f"Afterwards {i.arm} answers {i.changed_correct:.0%} of the changed facts {ki} and {r.arm} "
            f"{r.changed_correct:.0%} {kr}, so {leader.arm} is the one that keeps up with changing documents."
        )


def _curve(w: _Writer) -> None:
    for arm in dict.fromkeys(p.arm for p in w.f.curve):
        pts = sorted((p for p in w.f.curve if p.arm == arm), key=lambda p: p.fraction)
        if len(pts) < 2:
            continue
        prev, last = pts[-2], pts[-1]
        gain = last.quality - prev.quality
        cp = w.book.cite(f"{arm} {w.f.metric} at {prev.n_examples} examples", f"{prev.quality:.3f}")
        cl = w.book.cite(f"{arm} {w.f.metric} at {last.n_examples} examples", f"{last.quality:.3f}")
        if gain > 0.02:
            verdict = "still rising, so more training data would likely pay"
        elif gain < -0.02:
            verdict = "falling, so more of the same data is not what it needs"
        else:
            verdict = "flat, so more of the same data would not pay much"
        w.say(
            f"The {arm} learning curve goes from {prev.quality:.3f} {cp} with {prev.n_examples} examples to "
            f"{last.quality:.3f} {cl} with {last.n_examples}: {verdict}."
        )


def _keeps_format(a: ArmFigures, than: ArmFigures) -> bool:
    """a is an equal choice to `than` on the house format (or either has no format figure)."""
    if than.format is None or a.format is None:
        return True
    return a.format.mean >= than.format.mean - FORMAT_TOLERANCE


def _faster(a: ArmFigures, than: ArmFigures) -> bool:
    """a's p50 latency is lower than `than`'s by more than run-to-run noise."""
    return a.p50_ms * (1 + LATENCY_TOLERANCE) < than.p50_ms


def _cheaper(a: ArmFigures, than: ArmFigures) -> bool:
    """a is faster beyond noise, or not slower beyond noise and needs less set-up."""
    return _faster(a, than) or (not _faster(than, a) and _setup_rank(a.arm) < _setup_rank(than.arm))


def _cheapest(figs: VerdictFigures, best: ArmFigures, names: Sequence[str]) -> ArmFigures:
    """Among arms tied with the best on accuracy and not worse on format, the lowest p50 latency; latencies
    within LATENCY_TOLERANCE of that are a draw, which the arm needing the least set-up wins."""
    cands = [a for a in figs.arms if a.arm in names and _keeps_format(a, best)]
    fastest = min(a.p50_ms for a in cands)
    near = [a for a in cands if a.p50_ms <= fastest * (1 + LATENCY_TOLERANCE)]
    return min(near, key=lambda a: (_setup_rank(a.arm), a.p50_ms))


def _fewshot(w: _Writer) -> None:
    """Few-shot prompting is the cheap alternative to fine-tuning: say whether it is enough."""
    c = w.f.comparison("ft", "few-shot", w.f.metric)
    if c is None or w.f.arm("ft") is None or w.f.arm("few-shot") is None:
        return
    if c.significant and c.diff > 0:
        w.say(f"Fine-tuning earns its cost over few-shot prompting: ft leads by {c.diff:+.3f} {w.compare(c)}.")
    elif c.significant:
        w.say(f"Few-shot prompting beats the fine-tuned model, by {-c.diff:+.3f} {w.compare(c)}, with no training.")
    else:
        w.say(
            f"Few-shot prompting matches the fine-tuned model ({c.diff:+.3f} {w.compare(c)}, not significant), "
            "so the examples alone buy what training buys here."
        )


def _raft(w: _Writer) -> None:
    """Whether teaching the generator to read retrieved context (RAFT) paid over plain SFT in hybrid."""
    c = w.f.comparison("hybrid-raft", "hybrid", w.f.metric)
    if c is None or w.f.arm("hybrid-raft") is None or w.f.arm("hybrid") is None:
        return
    if c.significant and c.diff > 0:
        w.say(
            f"Training on retrieved context pays: the RAFT adapter lifts hybrid by {c.diff:+.3f} {w.compare(c)} "
            f"over the plain fine-tune{EXTRA_STEPS}."
        )
    elif c.significant:
        w.say(f"The RAFT adapter does worse in hybrid than the plain fine-tune, by {c.diff:+.3f} {w.compare(c)}.")
    else:
        raft, sft = w.f.arm("hybrid-raft"), w.f.arm("hybrid")
        assert raft is not None and sft is not None
        level = (
            f"The RAFT adapter and the plain fine-tune are level on {w.f.metric} in hybrid "
            f"({c.diff:+.3f} {w.compare(c)}, not significant)"
        )
        if not _keeps_format(sft, raft) and raft.format is not None and sft.format is not None:
            w.say(
                f"{level}, but RAFT keeps the house format better: {raft.format.mean:.0%} "
                f"{w.book.cite('hybrid-raft format adherence', _ci(raft.format))} against {sft.format.mean:.0%} "
                f"{w.book.cite('hybrid format adherence', _ci(sft.format))}{EXTRA_STEPS}."
            )
        else:
            w.say(f"{level}, so the simpler training is enough here.")


def _format_kept(w: _Writer, choice: ArmFigures, tied: Sequence[str]) -> None:
    """Name the cheaper arms tied on accuracy that the choice beats only on the house format."""
    for name in tied:
        other = w.f.arm(name)
        if other is None or choice.format is None or other.format is None:
            continue
        if _cheaper(other, choice) and not _keeps_format(other, choice):
            w.say(
                f"It is chosen over {other.arm}, which ties on accuracy and is cheaper to run or set up, because "
                f"{other.arm} follows the house format in {other.format.mean:.0%} of answers "
                f"{w.book.cite(f'{other.arm} format adherence', _ci(other.format))} against {choice.format.mean:.0%} "
                f"{w.book.cite(f'{choice.arm} format adherence', _ci(choice.format))}."
            )


def recommend(figs: VerdictFigures) -> Recommendation:
    """Pick an arm and explain why, from the figures only."""
    if not figs.arms:
        raise ValueError("no arms to recommend from")
    w = _Writer(figs)
    best = _ranked(figs)[0]
    tied = _accuracy(w, best)
    choice = best
    if tied:
        cheaper = _cheapest(figs, best, [best.arm, *tied])
        if cheaper.arm != best.arm:
            choice = cheaper
            c_lat = w.book.cite(f"{cheaper.arm} p50 latency", f"{cheaper.p50_ms:.0f} ms")
            b_lat = w.book.cite(f"{best.arm} p50 latency", f"{best.p50_ms:.0f} ms")
            if _faster(cheaper, best):
                w.say(
                    f"Because the difference is not significant, the cheaper {cheaper.arm} is the recommendation: "
                    f"{cheaper.p50_ms:.0f} ms p50 {c_lat} against {best.p50_ms:.0f} ms {b_lat} for {best.arm}."
                )
            else:
                w.say(
                    f"Because the difference is not significant and the p50 latencies are within "
                    f"{LATENCY_TOLERANCE:.0%} ({cheaper.p50_ms:.0f} ms {c_lat} against {best.p50_ms:.0f} ms {b_lat}), "
                    f"{cheaper.arm}, which needs less set-up than {best.arm}, is the recommendation."
                )
    if choice.arm == best.arm:
        lead = "the significant accuracy leader" if not tied else "the accuracy leader"
        w.say(f"We recommend {choice.arm}, {lead} {w.quality(choice.arm)}.")
        _format_kept(w, choice, tied)
        _latency(w, choice)
    _format(w)
    _fewshot(w)
    _raft(w)
    _update(w)
    _curve(w)
    return Recommendation(choice=choice.arm, sentences=w.sentences, figures=w.book.figures)
