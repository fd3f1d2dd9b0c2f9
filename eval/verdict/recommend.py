"""The verdict's recommendation: sentences generated from measured figures, each citing them.

Every sentence is built from a comparison of numbers (a significant difference, an interval against
a margin, a ratio, a slope against the seed spread), so different numbers give a different text.
Each figure a sentence rests on is registered in a `FigureBook` and cited as `[F3]`; the report
prints the book so a reader can check every claim.

The decision, in order:
1. fit for purpose: only setups that significantly beat every trivial baseline (a constant answer,
   the extractive sentence) qualify; when none does, the choice is "none" and the text says what
   the measurements suggest instead;
2. the most accurate qualifying setup;
3. a cheaper qualifying setup replaces it only when the interval of their difference shows it is
   no worse than the margin (non-inferiority); "not significant" alone is not enough.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ragtune.eval.verdict.figures import (
    ArmFigures,
    Comparison,
    CurvePoint,
    Estimate,
    Figure,
    FigureBook,
    Recommendation,
    SetupCost,
    UpdateCost,
    VerdictFigures,
)

__all__ = [
    "ArmFigures",
    "Comparison",
    "CurvePoint",
    "Estimate",
    "Figure",
    "FigureBook",
    "Recommendation",
    "SetupCost",
    "UpdateCost",
    "VerdictFigures",
    "questions_to_decide",
    "recommend",
]

FORMAT_TOLERANCE = 0.05  # an arm this much less format-adherent is not an equal choice
CURVE_NOISE = 0.02  # a learning-curve step smaller than this is flat whatever the seed spread
LOW_HIT = 0.5  # below this share of questions with a gold document in the top k, retrieval comes first
# what an arm needs before its first answer, least first; arms named by the user rank with ft
SETUP_ORDER = ("base", "few-shot", "rag", "ft", "hybrid", "hybrid-raft")
# the verdict's RAFT adapter continues the fine-tune, so its lead may be partly the extra steps
# (on CMU-QA with 64 rows it all was; with 160 RAFT beat equal-steps SFT: docs/tuning.md, Benchmarks)
EXTRA_STEPS = " (RAFT trains on top of the fine-tune, so part of this may be the extra training)"
ENGINE = "an engine backend (an OpenAI-compatible server such as vLLM or llama.cpp, docs/serving.md)"


def _setup_rank(arm: str) -> int:
    return SETUP_ORDER.index(arm if arm in SETUP_ORDER else "ft")


def _ci(e: Estimate) -> str:
    return f"{e.mean:.3f}" if e.lo is None or e.hi is None else f"{e.mean:.3f} (95% CI {e.lo:.3f}–{e.hi:.3f})"


def _diff(c: Comparison) -> str:
    ci = "" if c.lo is None or c.hi is None else f", {c.interval_label} {c.lo:+.3f}..{c.hi:+.3f}"
    p = "" if c.p_value is None else f", Holm p={c.p_value:.3g}"
    return f"{c.diff:+.3f}{ci}{p}"


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def questions_to_decide(c: Comparison, margin: float) -> int | None:
    """Paired questions at which the interval of c (a cheaper arm minus the best) would clear -margin on
    one side, if the difference held: the half-width shrinks as 1/sqrt(n). None when it cannot be told."""
    if c.n is None or c.lo is None or c.hi is None:
        return None
    half, need = (c.hi - c.lo) / 2, abs(c.diff + margin)
    if half <= 0 or need < 1e-6:
        return None
    return max(c.n + 1, math.ceil(c.n * (half / need) ** 2))


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

    def margin(self) -> str:
        source = "verdict.margin" if self.f.margin is not None else f"default for {self.f.metric}"
        return self.book.cite("non-inferiority margin", f"{self.f.effective_margin:.3f} ({source})")

    def speed(self, a: str, b: str) -> str:
        """a's latency as a multiple of b's on the same questions, cited with its interval."""
        t = self.f.speed(a, b)
        if t is None:
            return f"no paired latency comparison of {a} and {b}"
        value = f"{t.ratio:.2f}x (95% CI {t.low:.2f}–{t.high:.2f}, n={t.n}, Holm p={t.p_holm:.3g})"
        ref = self.book.cite(f"{a} / {b} latency ratio", value)
        return f"{t.ratio:.2f}x the latency of {b} on the same questions (95% CI {t.low:.2f}–{t.high:.2f}) {ref}"

    def say(self, sentence: str) -> None:
        self.sentences.append(sentence)


def _tied_with_best(figs: VerdictFigures, best: ArmFigures) -> tuple[list[Comparison], list[Comparison]]:
    """Split the other setups' comparisons with the best into significant wins and the rest."""
    wins: list[Comparison] = []
    ties: list[Comparison] = []
    for other in figs.setups:
        if other.arm == best.arm or other.quality.mean > best.quality.mean:
            continue
        c = figs.comparison(best.arm, other.arm, figs.metric)
        if c is None:
            continue
        (wins if c.significant and c.diff > 0 else ties).append(c)
    return wins, ties


def _accuracy(w: _Writer, best: ArmFigures) -> None:
    """Say who is most accurate and against whom that holds."""
    figs = w.f
    wins, ties = _tied_with_best(figs, best)
    cq = w.quality(best.arm)  # cite in reading order
    among = (
        ""
        if max(a.quality.mean for a in figs.setups) <= best.quality.mean
        else " of the setups that beat the baselines"
    )
    if wins:
        beaten = ", ".join(f"{c.b} ({c.diff:+.3f} {w.compare(c)})" for c in sorted(wins, key=lambda c: c.diff))
        w.say(
            f"{best.arm} gives the best {figs.metric}{among}, {best.quality.mean:.3f} {cq}, "
            f"significantly ahead of {beaten}."
        )
    else:
        w.say(f"{best.arm} has the highest {figs.metric}{among}, {best.quality.mean:.3f} {cq}.")
    if ties:
        tied = ", ".join(f"{c.b} ({c.diff:+.3f} {w.compare(c)})" for c in ties)
        w.say(f"Its lead over {tied} is not significant, which by itself does not make them equal.")


# fit for purpose -----------------------------------------------------------------------------------


def _beats(figs: VerdictFigures, arm: ArmFigures, baseline: ArmFigures) -> bool:
    c = figs.comparison(arm.arm, baseline.arm, figs.metric)
    return c is not None and c.significant and c.diff > 0


def fit_for_purpose(figs: VerdictFigures) -> list[ArmFigures]:
    """The setups that significantly beat every baseline (all setups when no baseline was measured)."""
    return [a for a in figs.setups if all(_beats(figs, a, b) for b in figs.baselines)]


def _baseline_name(b: ArmFigures) -> str:
    if b.baseline == "constant":
        return f'a constant answer ("{b.answer}", {b.arm})' if b.answer else f"a constant answer ({b.arm})"
    return "the extractive baseline (the retrieved sentence nearest the question, no generator)"


def _baselines_beaten(w: _Writer, best: ArmFigures) -> None:
    """Cite the baselines' figures and the margins by which the recommended setup clears them."""
    parts = []
    for b in w.f.baselines:
        c = w.f.comparison(best.arm, b.arm, w.f.metric)
        cq = w.quality(b.arm)
        lead = "" if c is None else f", {best.arm} ahead by {c.diff:+.3f} {w.compare(c)}"
        parts.append(f"{_baseline_name(b)} scores {b.quality.mean:.3f} {cq}{lead}")
    if parts:
        both = "both trivial baselines" if len(parts) > 1 else "the trivial baseline"
        w.say(f"{best.arm} significantly beats {both}: {'; '.join(parts)}.")


def _unfit_leaders(w: _Writer, best: ArmFigures) -> None:
    """Setups scoring above the best fit one whose lead over the baselines is not significant."""
    for a in w.f.setups:
        if a.quality.mean > best.quality.mean and a not in fit_for_purpose(w.f):
            w.say(
                f"{a.arm} scores higher, {a.quality.mean:.3f} {w.quality(a.arm)}, but does not significantly beat "
                "every baseline, so it is not a candidate."
            )


def _retrieval_hit(figs: VerdictFigures) -> ArmFigures | None:
    hits = [a for a in figs.setups if a.hit_at_k is not None]
    return max(hits, key=lambda a: a.hit_at_k or 0.0) if hits else None


def _suggest(w: _Writer, top: ArmFigures) -> None:
    """What retrieval and the generator suggest when nothing beats the baselines (the curve sentence
    covers more data)."""
    hit = _retrieval_hit(w.f)
    k = w.f.hit_k or "k"
    if hit is not None and hit.hit_at_k is not None and hit.hit_at_k < LOW_HIT:
        ch = w.book.cite(f"{hit.arm} hit@{k}", f"{hit.hit_at_k:.0%}")
        w.say(
            f"Retrieval finds a gold document in the top {k} for only {hit.hit_at_k:.0%} of questions {ch} "
            f"({hit.arm}), so better retrieval (chunking, search mode, the documents themselves) comes before "
            "any change to the generator."
        )
        return
    if hit is not None and hit.hit_at_k is not None:
        ch = w.book.cite(f"{hit.arm} hit@{k}", f"{hit.hit_at_k:.0%}")
        w.say(
            f"Retrieval finds a gold document in the top {k} for {hit.hit_at_k:.0%} of questions {ch}, so the "
            f"generator is the weak link: a larger model through {ENGINE} is the next thing to try."
        )
        return
    w.say(
        f"With the best setup at {top.quality.mean:.3f} {w.quality(top.arm)}, a larger model through {ENGINE} "
        "is the other lever to try."
    )


def _nothing_fits(w: _Writer) -> Recommendation:
    figs = w.f
    top = max(figs.setups, key=lambda a: a.quality.mean)
    bases = sorted(figs.baselines, key=lambda b: b.quality.mean, reverse=True)
    named = " and ".join(f"{_baseline_name(b)} at {b.quality.mean:.3f} {w.quality(b.arm)}" for b in bases)
    both = "both " if len(bases) > 1 else ""
    w.say(
        f"No setup here beats the baselines: none is significantly better on {figs.metric} than {both}{named}, "
        "so none is recommended."
    )
    c = figs.comparison(top.arm, bases[0].arm, figs.metric)
    cq = w.quality(top.arm)
    against = "" if c is None else f", {c.diff:+.3f} against {bases[0].arm} {w.compare(c)}"
    w.say(f"The best setup, {top.arm}, scores {top.quality.mean:.3f} {cq}{against}.")
    _seeds(w)
    _curve(w)  # says whether more training data would pay, read against the seed spread
    _suggest(w, top)
    return Recommendation(choice="none", sentences=w.sentences, figures=w.book.figures)


# choice among fit setups: best, then a cheaper non-inferior one ------------------------------------


def _keeps_format(a: ArmFigures, than: ArmFigures) -> bool:
    """a is an equal choice to `than` on the house format (or either has no format figure)."""
    if than.format is None or a.format is None:
        return True
    return a.format.mean >= than.format.mean - FORMAT_TOLERANCE


def _faster(figs: VerdictFigures, a: ArmFigures, than: ArmFigures) -> bool:
    """a is faster than `than` on the same questions: the 95% interval of their latency ratio lies below 1.
    Without a paired comparison (or with an interval containing 1) the two are a draw."""
    t = figs.speed(a.arm, than.arm)
    return t is not None and t.high < 1.0


def _cheaper(figs: VerdictFigures, a: ArmFigures, than: ArmFigures) -> bool:
    """a is shown faster, or not shown slower and needs less set-up."""
    return _faster(figs, a, than) or (not _faster(figs, than, a) and _setup_rank(a.arm) < _setup_rank(than.arm))


def _cheapest(figs: VerdictFigures, cands: Sequence[ArmFigures]) -> ArmFigures:
    """The lowest p50 latency and every arm not shown slower than it (a draw), which the arm needing
    the least set-up wins."""
    fastest = min(cands, key=lambda a: a.p50_ms)
    near = [a for a in cands if a is fastest or not _faster(figs, fastest, a)]
    return min(near, key=lambda a: (_setup_rank(a.arm), a.p50_ms))


def _non_inferior(figs: VerdictFigures, a: ArmFigures, best: ArmFigures) -> Comparison | None:
    """a's comparison with the best when its interval shows a is no worse than the margin, else None."""
    c = figs.comparison(a.arm, best.arm, figs.metric)
    if c is None or c.lo is None:
        return None
    return c if c.lo >= -figs.effective_margin else None


def _say_non_inferior(w: _Writer, choice: ArmFigures, best: ArmFigures, c: Comparison) -> None:
    m = w.f.effective_margin
    if _faster(w.f, choice, best):
        why = f"it is cheaper to run, {w.speed(choice.arm, best.arm)}"
    else:
        why = f"it needs less set-up than {best.arm} at a latency not shown to differ ({w.speed(choice.arm, best.arm)})"
    assert c.lo is not None
    w.say(
        f"{choice.arm} is the recommendation: {why}, and it is no worse than {best.arm} by more than the margin "
        f"of {m:.3f} {w.margin()}: their difference is {c.diff:+.3f} {w.compare(c)} and the lower end of its "
        f"{c.interval_label}, {c.lo:+.3f}, is above −{m:.3f}."
    )


def _say_undecided(w: _Writer, a: ArmFigures, best: ArmFigures, c: Comparison) -> None:
    m = w.f.effective_margin
    n = questions_to_decide(c, m)
    more = (
        f"about {n} paired questions (now {c.n}) would decide it if the difference held"
        if n is not None
        else "far more questions than these would be needed to decide it"
    )
    w.say(
        f"The data cannot decide whether the cheaper {a.arm} is as good as {best.arm}: their difference, "
        f"{c.diff:+.3f} {w.compare(c)}, is not significant, but its {c.interval_label} reaches {c.lo:+.3f}, "
        f"below the margin of −{m:.3f} {w.margin()}, so {best.arm} is kept; {more}."
    )


def _choose(w: _Writer, best: ArmFigures, fit: Sequence[ArmFigures]) -> ArmFigures:
    """The cheapest fit setup shown no worse than the best by more than the margin, else the best."""
    figs = w.f
    cheaper = [a for a in fit if a.arm != best.arm and _cheaper(w.f, a, best)]
    ok = [a for a in cheaper if _keeps_format(a, best) and _non_inferior(figs, a, best)]
    choice = _cheapest(w.f, [best, *ok])
    if choice.arm != best.arm:
        c = _non_inferior(figs, choice, best)
        assert c is not None
        _say_non_inferior(w, choice, best, c)
    for a in cheaper:
        c = figs.comparison(a.arm, best.arm, figs.metric)
        undecided = c is not None and c.lo is not None and not c.significant and c.lo < -figs.effective_margin
        if undecided and c is not None and _cheaper(w.f, a, choice) and _keeps_format(a, best):
            _say_undecided(w, a, best, c)
    return choice


def _format_kept(w: _Writer, choice: ArmFigures, fit: Sequence[ArmFigures]) -> None:
    """Name the cheaper arms, as accurate within the margin, that the choice beats only on the house format."""
    for other in fit:
        if other.arm == choice.arm or choice.format is None or other.format is None:
            continue
        if _cheaper(w.f, other, choice) and not _keeps_format(other, choice) and _non_inferior(w.f, other, choice):
            w.say(
                f"It is chosen over {other.arm}, which is as accurate within the margin {w.margin()} and cheaper to "
                f"run or set up, because {other.arm} follows the house format in {other.format.mean:.0%} of answers "
                f"{w.book.cite(f'{other.arm} format adherence', _ci(other.format))} against {choice.format.mean:.0%} "
                f"{w.book.cite(f'{choice.arm} format adherence', _ci(choice.format))}."
            )


# context sentences ---------------------------------------------------------------------------------


def _format(w: _Writer) -> None:
    with_fmt = [a for a in w.f.setups if a.format is not None]
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
    fastest = min(w.f.setups, key=lambda a: a.p50_ms)
    c50 = w.book.cite(f"{choice.arm} p50 latency", f"{choice.p50_ms:.0f} ms")
    if fastest.arm == choice.arm:
        w.say(f"It is also the fastest setup at {choice.p50_ms:.0f} ms p50 {c50}.")
        return
    if _faster(w.f, fastest, choice):
        w.say(f"It is slower than the fastest setup, {fastest.arm}: {w.speed(choice.arm, fastest.arm)}.")
    else:
        w.say(
            f"Its latency is not shown to differ from the fastest setup's, {fastest.arm} "
            f"({w.speed(choice.arm, fastest.arm)}; a draw while the interval contains 1), at {c50} p50."
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


def _spread(p: CurvePoint, q: CurvePoint) -> float | None:
    """The larger seed spread of two curve points, or None when either was trained once."""
    if p.spread is None or q.spread is None:
        return None
    return max(p.spread, q.spread)


def _curve_steps(figs: VerdictFigures) -> dict[str, tuple[CurvePoint, CurvePoint]]:
    """Each curve arm's last two points (by training share)."""
    out: dict[str, tuple[CurvePoint, CurvePoint]] = {}
    for arm in dict.fromkeys(p.arm for p in figs.curve):
        pts = sorted((p for p in figs.curve if p.arm == arm), key=lambda p: p.fraction)
        if len(pts) >= 2:
            out[arm] = (pts[-2], pts[-1])
    return out


def _curve_cite(w: _Writer, p: CurvePoint) -> str:
    value = f"{p.quality:.3f}" + (f" (seeds {min(p.seeds):.3f}–{max(p.seeds):.3f})" if p.spread is not None else "")
    return w.book.cite(f"{p.arm} {w.f.metric} at {p.n_examples} examples", value)


def _curve(w: _Writer) -> None:
    """The last step of each learning curve, read as a trend only when it exceeds the seed spread."""
    for arm, (prev, last) in _curve_steps(w.f).items():
        gain = last.quality - prev.quality
        cp, cl = _curve_cite(w, prev), _curve_cite(w, last)
        spread = _spread(prev, last)
        if spread is None:
            verdict = (
                "with one training run per point, a step like this cannot be told apart from seed-to-seed "
                "variation (verdict.seeds of 3 or more measures it), so no trend is read"
            )
        elif abs(gain) <= max(spread, CURVE_NOISE):
            verdict = f"a change within the seed spread of {spread:.3f}, so no trend can be read"
        elif gain > 0:
            verdict = f"still rising beyond the seed spread of {spread:.3f}, so more training data would likely pay"
        else:
            verdict = f"falling beyond the seed spread of {spread:.3f}, so more of the same data is not what it needs"
        w.say(
            f"The {arm} learning curve goes from {prev.quality:.3f} {cp} with {prev.n_examples} examples to "
            f"{last.quality:.3f} {cl} with {last.n_examples}: {verdict}."
        )


def _seeds(w: _Writer) -> None:
    """How much a setup moves between training seeds, and that its figures account for it."""
    for a in w.f.setups:
        if a.spread is None:
            continue
        cs = w.book.cite(f"{a.arm} {w.f.metric} per training seed", ", ".join(f"{s:.3f}" for s in a.seeds))
        w.say(
            f"Across {len(a.seeds)} training seeds {a.arm} scores from {min(a.seeds):.3f} to {max(a.seeds):.3f} {cs}; "
            "its figures average the seeds and its comparisons resample seeds as well as questions."
        )


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
            f"Few-shot prompting and the fine-tuned model differ by {c.diff:+.3f} {w.compare(c)}, not significantly: "
            "on these questions training has not shown a gain over the examples alone."
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
            f"The RAFT adapter and the plain fine-tune differ on {w.f.metric} in hybrid by "
            f"{c.diff:+.3f} {w.compare(c)}, not significantly"
        )
        if not _keeps_format(sft, raft) and raft.format is not None and sft.format is not None:
            w.say(
                f"{level}, but RAFT keeps the house format better: {raft.format.mean:.0%} "
                f"{w.book.cite('hybrid-raft format adherence', _ci(raft.format))} against {sft.format.mean:.0%} "
                f"{w.book.cite('hybrid format adherence', _ci(sft.format))}{EXTRA_STEPS}."
            )
        else:
            w.say(f"{level}; the extra training has not shown a gain here.")


def recommend(figs: VerdictFigures) -> Recommendation:
    """Pick a setup (or "none") and explain why, from the figures only."""
    if not figs.setups:
        raise ValueError("no arms to recommend from")
    w = _Writer(figs)
    fit = fit_for_purpose(figs)
    if not fit:
        return _nothing_fits(w)
    best = max(fit, key=lambda a: a.quality.mean)
    _accuracy(w, best)
    _baselines_beaten(w, best)
    _unfit_leaders(w, best)
    choice = _choose(w, best, fit)
    if choice.arm == best.arm:
        w.say(f"We recommend {choice.arm}, the most accurate setup that beats the baselines {w.quality(choice.arm)}.")
        _format_kept(w, choice, fit)
        _latency(w, choice)
    _format(w)
    _seeds(w)
    _fewshot(w)
    _raft(w)
    _update(w)
    _curve(w)
    return Recommendation(choice=choice.arm, sentences=w.sentences, figures=w.book.figures)
