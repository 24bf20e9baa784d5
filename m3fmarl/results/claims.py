"""The paper's claims, checked on a report's runs: each "Reader must see" line of spec/experiments.md
§2 (Table 2 and Figs. 5, 6, 7, 9, 10, 12, 13) turned into numbers and a verdict.

``m3fmarl report`` appends the result to report.md and writes ``claims.json``; the reading of a
campaign (e.g. results/reduced/README.md) quotes it.  Each check reads only finished trials, the
same ones the tables and figures show.

Rules (one place, used by every check):

* Two evaluations (mean ± 95 % CI, the variant's CI rule) compare as **above** / **below** when
  their CIs do not overlap, else **tie** (:func:`relation`).
* A training curve is cut into :data:`BLOCKS` consecutive blocks of iterations; the block means b
  give its **gain** b_last − b_first, its **largest drop** (the largest fall of a block mean below
  the best earlier one) and its **last step** b_last − b_previous (> 0: still rising when the
  run ended) (:func:`curve_shape`).  Its **noise** is what two block means may differ by
  without any trend: 2√2 σ/√m, with σ the iteration-to-iteration noise (std of successive
  differences / √2, blind to a trend) and m iterations per block.  *Learned* = gain > noise;
  *largely monotone* = learned and largest drop ≤ max(:data:`MONOTONE_DROP` × gain, noise);
  *unstable* = learned and largest drop > max(:data:`UNSTABLE_DROP` × (best − first block),
  noise).
* "Most" = more than half of the problems that can be judged (exactly half: ``partly``); a claim
  about every problem holds only on all of them (``partly`` on some).

Verdicts: ``holds``, ``partly``, ``does not hold``, or ``not evaluable`` (no finished trial
to judge it on); ``caveats`` say what the verdict could not look at (one seed: no spread
between trials; unfinished algorithms).  Which algorithm is the paper's reference ("M3FPPO"),
which are its multi-agent baselines and which its other M3F method is read from the registry
and from the paper's Table 2 (an algorithm with a Table 2 value is one of the paper's), never
spelled here; so are the problems on which the paper's M3FPPO is *clearly* better.

Public API: :func:`check_claims`, :func:`claims_markdown`, :class:`Claim`, :func:`relation`,
:func:`curve_shape`, :data:`CLAIM_TEXT`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from m3fmarl import registry
from m3fmarl.results.report import (
    ALGO_LABELS,
    FIGURE_KINDS,
    M3F_ALGOS,
    PROBLEM_LABELS,
    PROBLEM_ORDER,
    REFERENCE,
    TABLE2_N,
    PaperValue,
    SweepResult,
    TrialResult,
    best_trial,
    ci95,
    mean_curve,
    mf_level,
    plus_minus,
    read_paper_table2,
    table2_cells,
)

BLOCKS = 10
"""Blocks a training curve is cut into by :func:`curve_shape`."""
MONOTONE_DROP = 0.10
"""Largest drop, as a fraction of the gain, that still counts as largely monotone learning."""
UNSTABLE_DROP = 0.25
"""Largest drop, as a fraction of (best block − first block), above which a curve is unstable."""

HOLDS, PARTLY, FAILS, OPEN = "holds", "partly", "does not hold", "not evaluable"

CLAIM_TEXT: dict[str, tuple[str, ...]] = {
    "table2": ("M3FPPO is at least as good as IPPO and MAPPO on most problems, clearly so on the problems "
               "where the paper's own numbers separate them",
               "M3FPPO is better than M3FA2C on every problem"),
    "fig5": ("M3FPPO learns stably: largely monotone curves with a small spread between trials",),
    "fig6": ("M3FPPO trained directly at as few as 5 agents also learns, to returns similar to those of "
             "the N = 300 policy transferred to that N (Fig. 9)",),
    "fig7": ("IPPO and MAPPO end below or near the MF line on most problems, and are sometimes unstable",),
    "fig9": ("As N grows, centralized (CE) and decentralized (DE) execution converge to the MF (largest N) "
             "level, with DE about equal to CE",),
    "fig10": ("M3FA2C is typically worse than M3FPPO",),
    "fig12": ("At each N, M3FPPO (the transferred policy at that N) matches or beats IPPO, especially on "
              "Beach and Foraging",),
    "fig13": ("At each N, M3FPPO (the transferred policy at that N) matches or beats MAPPO, especially on "
              "Beach and Foraging",),
}
"""Experiment id → the paper's claims about it (spec/experiments.md §2, "Reader must see"), in
our words; the algorithm names are the paper's labels (the checks take them from the registry)."""

ESPECIALLY = ("beach-bar", "foraging")
"""Figs. 12/13: the problems the paper singles out (R.4: "especially in Beach and Foraging")."""


@dataclass
class Claim:
    """One claim of the paper and what these runs say about it."""

    experiment: str
    claim: str
    verdict: str
    summary: str
    """One line: the counts behind the verdict."""
    evidence: list[str] = field(default_factory=list)
    """Per problem (or N), the numbers."""
    caveats: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# shared rules
# ----------------------------------------------------------------------------------------------


def relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    """``above`` / ``below`` if the 95 % CIs ``(mean, ci)`` of ``a`` and ``b`` do not overlap,
    else ``tie``."""
    if a[0] - a[1] > b[0] + b[1]:
        return "above"
    if a[0] + a[1] < b[0] - b[1]:
        return "below"
    return "tie"


@dataclass(frozen=True)
class Shape:
    """What :func:`curve_shape` reads from a training curve."""

    first: float
    last: float
    best: float
    gain: float
    drop: float
    last_step: float
    noise: float

    @property
    def learned(self) -> bool:
        return self.gain > self.noise

    @property
    def monotone(self) -> bool:
        return self.learned and self.drop <= max(MONOTONE_DROP * self.gain, self.noise)

    @property
    def unstable(self) -> bool:
        return self.learned and self.drop > max(UNSTABLE_DROP * (self.best - self.first), self.noise)

    def text(self) -> str:
        trend = ("flat: no gain beyond the noise" if not self.learned else
                 "still rising" if self.last_step > self.noise else "levelled off")
        return (f"{self.first:.1f} → {self.last:.1f} (block means; gain {self.gain:+.1f}, largest drop "
                f"{self.drop:.1f}, last block {self.last_step:+.1f}, noise {self.noise:.1f}: {trend})")


def curve_shape(returns: Sequence[float], blocks: int = BLOCKS) -> Shape | None:
    """Shape of a training curve (per-iteration returns) from :data:`BLOCKS` block means; None
    for fewer points than blocks."""
    r = np.asarray(returns, dtype=float)
    if len(r) < blocks:
        return None
    b = np.array([c.mean() for c in np.array_split(r, blocks)])
    drop = float(np.max(np.maximum.accumulate(b) - b))
    sigma = float(np.std(np.diff(r))) / np.sqrt(2.0) if len(r) > 2 else 0.0
    noise = 2.0 * np.sqrt(2.0) * sigma / np.sqrt(len(r) // blocks)
    return Shape(float(b[0]), float(b[-1]), float(b.max()), float(b[-1] - b[0]), drop, float(b[-1] - b[-2]),
                 float(noise))


def _cell(t: TrialResult, n: int, execution: str = "centralized") -> tuple[float, float] | None:
    r = t.cell(n, execution)
    return None if r is None else (float(r["mean"]), ci95(r, t.variant))


def _pm(x: tuple[float, float]) -> str:
    return plus_minus(*x)


def _label(problem: str) -> str:
    return PROBLEM_LABELS.get(problem, problem)


def _paper_algos(paper: dict[tuple[str, str], PaperValue]) -> tuple[list[str], list[str]]:
    """The paper's multi-agent baselines and its other M3F methods (those with Table 2 values)."""
    in_paper = {label for _, label in paper}
    marl = [a for a in registry.names("multi-agent") if ALGO_LABELS[a] in in_paper]
    m3f = [a for a in M3F_ALGOS if a != REFERENCE.name and ALGO_LABELS[a] in in_paper]
    return marl, m3f


def _verdict(good: int, judged: int, need_all: bool = False) -> str:
    """Verdict of a claim about every judged case (``need_all``: holds only if all are good,
    partly if some) or about most of them (holds above half, partly at exactly half, else does
    not hold)."""
    if judged == 0:
        return OPEN
    if good == judged:
        return HOLDS
    if need_all:
        return PARTLY if good > 0 else FAILS
    if 2 * good > judged:
        return HOLDS
    return PARTLY if 2 * good == judged else FAILS


def _seed_caveat(trials: Sequence[TrialResult]) -> list[str]:
    return ["one seed per cell: the spread between trials cannot be judged"] if trials and len(
        {t.seed for t in trials}) < 2 else []


class Reference(NamedTuple):
    value: tuple[float, float]
    label: str
    trial: TrialResult | None


def _transferred(problem: str, n: int, sweeps: Sequence[SweepResult]) -> Reference | None:
    """The reference policy of the transfer figure (fig9) run at ``n`` (CE): the best finished
    reference trial of the fig9-like sweeps with that cell; at N = 20 the MF level otherwise."""
    pool = {t.run_dir.resolve(): t for s in sweeps if FIGURE_KINDS.get(s.experiment) == "fig9"
            for t in s.finished if t.problem == problem and t.algo == REFERENCE.name and t.cell(n, "centralized")}
    t = best_trial(pool.values())
    if t is not None:
        return Reference(_cell(t, n), f"{REFERENCE.label} N={t.num_minors} s{t.seed} at N={n}", t)
    if n == TABLE2_N:
        level = mf_level(problem, sweeps)
        if level is not None:
            return Reference((level[0], level[1]), level[2], None)
    return None


# ----------------------------------------------------------------------------------------------
# the checks, one per experiment
# ----------------------------------------------------------------------------------------------


def _check_table2(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    paper = read_paper_table2()
    marl, m3f = _paper_algos(paper)
    cells = {(c.problem, c.algo): c for c in table2_cells(sweep)}
    problems = list(dict.fromkeys(p for p, _ in cells))
    ref = REFERENCE.name

    def ours(p: str, a: str) -> tuple[float, float] | None:
        c = cells.get((p, a))
        return None if c is None or c.result is None else (float(c.result["mean"]), ci95(c.result, c.trial.variant))

    def theirs(p: str, a: str) -> tuple[float, float] | None:
        v = paper.get((_label(p), ALGO_LABELS[a]))
        return None if v is None else (v.mean, v.ci95)

    def compare(source: Callable[[str, str], tuple[float, float] | None], others: list[str],
                among: Sequence[str] = problems) -> tuple[dict[str, dict[str, str]], list[str]]:
        """Per problem of ``among``, the reference's relation to each of ``others`` with a value."""
        rel: dict[str, dict[str, str]] = {}
        lines = []
        for p in among:
            r = source(p, ref)
            if r is None:
                continue
            rs = {a: relation(r, o) for a in others if (o := source(p, a)) is not None}
            if rs:
                rel[p] = rs
                lines.append(f"{_label(p)}: {REFERENCE.label} {_pm(r)} — " + ", ".join(
                    f"{ALGO_LABELS[a]} {_pm(source(p, a))} ({REFERENCE.label} {rs[a]})" for a in rs))
        return rel, lines

    claims = []
    # 1. at least as good as the multi-agent baselines on most problems, clearly where the paper is
    rel, lines = compare(ours, marl)
    paper_rel, _ = compare(theirs, marl, PROBLEM_ORDER)  # the paper's verdict over all its problems
    ge = [p for p, rs in rel.items() if all(v != "below" for v in rs.values())]
    clear = [p for p, rs in rel.items() if all(v == "above" for v in rs.values())]
    paper_ge = [p for p, rs in paper_rel.items() if all(v != "below" for v in rs.values())]
    paper_clear = [p for p, rs in paper_rel.items() if all(v == "above" for v in rs.values())]
    judged_clear = [p for p in paper_clear if p in rel]
    most = _verdict(len(ge), len(rel))
    clearly = _verdict(sum(p in clear for p in judged_clear), len(judged_clear), need_all=True)
    verdict = PARTLY if most == HOLDS and clearly not in (HOLDS, OPEN) else most
    names = ", ".join(ALGO_LABELS[a] for a in marl)
    missing = sorted({ALGO_LABELS[a] for p in rel for a in marl if a not in rel[p]})
    claims.append(Claim(
        "table2", CLAIM_TEXT["table2"][0], verdict,
        f"{REFERENCE.label} at least as good as {names} on {len(ge)} of {len(rel)} problems"
        f"{' (' + ', '.join(map(_label, ge)) + ')' if ge else ''}, clearly better on "
        f"{', '.join(map(_label, clear)) or 'none'}; the paper: {len(paper_ge)} of {len(paper_rel)}, clearly on "
        f"{', '.join(map(_label, paper_clear)) or 'none'}", lines,
        ([f"not yet finished on some problems: {', '.join(missing)}"] if missing else [])))
    # 2. better than the other M3F method everywhere
    rel, lines = compare(ours, m3f)
    above = [p for p, rs in rel.items() if all(v == "above" for v in rs.values())]
    names = ", ".join(ALGO_LABELS[a] for a in m3f)
    claims.append(Claim("table2", CLAIM_TEXT["table2"][1], _verdict(len(above), len(rel), need_all=True),
                        f"{REFERENCE.label} above {names} beyond the CIs on {len(above)} of {len(rel)} problems",
                        lines))
    return claims


def _check_fig5(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    lines, good, judged = [], 0, 0
    trials = [t for t in sweep.finished if t.algo == REFERENCE.name]
    for p in sweep.problems([REFERENCE.name]):
        group = [t for t in trials if t.problem == p]
        curve = mean_curve(group)
        shape = curve_shape(curve.mean) if curve is not None else None
        if shape is None:
            continue
        judged += 1
        good += shape.monotone
        spread = ""
        if len(group) > 1:
            finals = [s.last for t in group if (s := curve_shape(t.curve()[2])) is not None]
            spread = f"; spread of the last block over {len(finals)} seeds: std {np.std(finals):.1f}"
        lines.append(f"{_label(p)}: {shape.text()}, {'largely monotone' if shape.monotone else 'not monotone'}"
                     f"{spread}")
    return [Claim("fig5", CLAIM_TEXT["fig5"][0], _verdict(good, judged, need_all=True),
                  f"largely monotone on {good} of {judged} problems", lines, _seed_caveat(trials))]


def _check_fig6(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    lines, good, judged = [], 0, 0
    for p in sweep.problems([REFERENCE.name]):
        for t in sorted((t for t in sweep.finished if t.problem == p and t.algo == REFERENCE.name),
                        key=lambda t: (t.num_minors, t.seed)):
            own = _cell(t, t.num_minors)
            shape = curve_shape(t.curve()[2])
            other = _transferred(p, t.num_minors, sweeps)
            if own is None or shape is None:
                continue
            head = f"{_label(p)} N={t.num_minors} (s{t.seed}): trained at N {_pm(own)}, curve {shape.text()}"
            if other is None or (other.trial is not None and other.trial.run_dir.resolve() == t.run_dir.resolve()):
                why = "no transferred policy evaluated at this N" if other is None else (
                    "this trial is itself the transfer figure's policy (trained at this N), nothing to compare")
                lines.append(f"{head}; {why}")
                continue
            judged += 1
            rel = relation(own, other.value)
            good += shape.learned and rel != "below"
            lines.append(f"{head}; {other.label} {_pm(other.value)} → trained at N {rel}")
    return [Claim("fig6", CLAIM_TEXT["fig6"][0], _verdict(good, judged),
                  f"learned and at or above the transferred policy in {good} of {judged} trials", lines)]


def _marl_vs_mf(sweep: SweepResult, sweeps: Sequence[SweepResult], per_n: bool) -> Claim:
    """Figs. 7, 12, 13: the paper's multi-agent baselines of ``sweep`` against the reference
    policy — at N = 20 against the MF line (fig7), or at each N against the transferred policy
    at that N (figs. 12, 13)."""
    paper = read_paper_table2()
    marl = [a for a in _paper_algos(paper)[0] if any(t.algo == a for t in sweep.trials)]
    extra = [a for a in registry.names("multi-agent") if a not in marl and any(t.algo == a for t in sweep.trials)]
    lines: list[str] = []
    judged: dict[str, list[bool]] = {}
    unstable = []
    for p in sweep.problems([*marl, *extra]):
        lvl = None if per_n else mf_level(p, sweeps)  # the MF line: once per problem
        for algo in [*marl, *extra]:
            group = [t for t in sweep.finished if t.problem == p and t.algo == algo]
            for n in sorted({t.num_minors for t in group}):
                at_n = [t for t in group if t.num_minors == n]
                best = best_trial(at_n)
                own = _cell(best, n, "multi-agent") if best is not None else None
                if per_n:
                    ref = _transferred(p, n, sweeps)
                else:
                    ref = None if lvl is None else Reference((lvl[0], lvl[1]), lvl[2], None)
                shapes = [s for t in at_n if (s := curve_shape(t.curve()[2])) is not None]
                if own is None or ref is None:
                    continue
                rel = relation(ref.value, own)  # the reference policy against the baseline
                tag = "" if algo in marl else " (not in the paper)"
                shaky = any(s.unstable for s in shapes)
                if algo in marl:
                    judged.setdefault(p, []).append(rel != "below")
                    if shaky:
                        unstable.append(f"{ALGO_LABELS[algo]} {_label(p)} N={n}")
                curve = (shapes[0].text() if shapes else "too short") + (", unstable" if shaky else "")
                lines.append(f"{_label(p)}: {ALGO_LABELS[algo]} N={n}{tag} {_pm(own)} (curve {curve}); "
                             f"{ref.label} {_pm(ref.value)} → {REFERENCE.label} {rel}")
    names = " and ".join(ALGO_LABELS[a] for a in marl)
    ok = [p for p, v in judged.items() if all(v)]
    if per_n:
        especially = [p for p in ESPECIALLY if p in judged]
        strong = [p for p in especially if all(judged[p])]
        claim_text = CLAIM_TEXT[sweep.experiment][0] if sweep.experiment in CLAIM_TEXT else CLAIM_TEXT["fig12"][0]
        verdict = _verdict(len(ok), len(judged))
        if verdict == HOLDS and len(strong) < len(especially):
            verdict = PARTLY
        summary = (f"{REFERENCE.label} matches or beats {names} at every N on {len(ok)} of {len(judged)} problems"
                   f"{' (' + ', '.join(map(_label, ok)) + ')' if ok else ''}; of "
                   f"{', '.join(map(_label, ESPECIALLY))}: {', '.join(map(_label, strong)) or 'none'}")
    else:
        claim_text = CLAIM_TEXT["fig7"][0]
        verdict = _verdict(len(ok), len(judged))
        summary = (f"{names} below or near the MF line on {len(ok)} of {len(judged)} problems"
                   f"{' (' + ', '.join(map(_label, ok)) + ')' if ok else ''}; unstable curves: "
                   f"{', '.join(unstable) or 'none'}")
    trials = [t for t in sweep.finished if t.algo in marl]
    return Claim(sweep.experiment, claim_text, verdict, summary, lines, _seed_caveat(trials))


def _check_fig7(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    return [_marl_vs_mf(sweep, sweeps, per_n=False)]


def _check_fig12(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    return [_marl_vs_mf(sweep, sweeps, per_n=True)]


def _check_fig9(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    lines, converged, judged, de_ties, de_total = [], 0, 0, 0, 0
    for p in sweep.problems([REFERENCE.name]):
        t = best_trial(x for x in sweep.finished if x.problem == p and x.algo == REFERENCE.name)
        if t is None or not t.evaluation:
            continue
        mf_n = max(int(r["num_minors"]) for r in t.evaluation)
        mf = _cell(t, mf_n)
        ns = sorted({int(r["num_minors"]) for r in t.evaluation} - {mf_n})
        ce = {n: c for n in ns if (c := _cell(t, n)) is not None}
        if mf is None or len(ce) < 2:
            continue
        judged += 1
        small, large = min(ce), max(ce)
        gap_small, gap_large = abs(ce[small][0] - mf[0]), abs(ce[large][0] - mf[0])
        ok = relation(ce[large], mf) == "tie" and gap_large <= gap_small
        converged += ok
        de = {n: c for n in [*ns, mf_n] if (c := _cell(t, n, "decentralized")) is not None}
        ties = [n for n in de if relation(de[n], ce.get(n, mf)) == "tie"]
        better = [n for n in de if relation(de[n], ce.get(n, mf)) == "above"]
        de_ties += len(ties) + len(better)
        de_total += len(de)
        lines.append(f"{_label(p)} (s{t.seed}): MF (CE, N={mf_n}) {_pm(mf)}; |CE − MF| {gap_small:.1f} at N={small}, "
                     f"{gap_large:.1f} at N={large} (CE {_pm(ce[large])}: {relation(ce[large], mf)} with MF) → "
                     f"{'converges' if ok else 'does not converge within the CIs'}; DE vs CE: tie at "
                     f"{len(ties)} of {len(de)} N" + (f", DE above at N={','.join(map(str, better))}" if better
                                                      else ""))
    verdict = _verdict(converged, judged, need_all=True)
    if verdict == HOLDS and de_total and de_ties * 2 <= de_total:
        verdict = PARTLY
    return [Claim("fig9", CLAIM_TEXT["fig9"][0], verdict,
                  f"CE reaches the MF level within the CIs at the largest finite N on {converged} of {judged} "
                  f"problems; DE at or above CE at {de_ties} of {de_total} evaluated N", lines)]


def _check_fig10(sweep: SweepResult, sweeps: Sequence[SweepResult]) -> list[Claim]:
    others = [a for a in M3F_ALGOS if a != REFERENCE.name and any(t.algo == a for t in sweep.trials)]
    lines, worse, judged = [], 0, 0
    for p in sweep.problems([REFERENCE.name]):
        ref = best_trial(t for t in sweep.finished if t.problem == p and t.algo == REFERENCE.name)
        for algo in others:
            other = best_trial(t for t in sweep.finished if t.problem == p and t.algo == algo)
            if ref is None or other is None:
                continue
            n = ref.num_minors
            a, b = _cell(other, n), _cell(ref, n)
            if a is None or b is None:
                continue
            judged += 1
            rel = relation(a, b)
            worse += rel == "below"
            lines.append(f"{_label(p)} N={n}: {ALGO_LABELS[algo]} {_pm(a)} vs {REFERENCE.label} {_pm(b)} → "
                         f"{ALGO_LABELS[algo]} {rel}")
    names = ", ".join(ALGO_LABELS[a] for a in others) or "the other M3F method"
    return [Claim("fig10", CLAIM_TEXT["fig10"][0], _verdict(worse, judged),
                  f"{names} below {REFERENCE.label} beyond the CIs on {worse} of {judged} problems", lines)]


CHECKS: dict[str, Callable[[SweepResult, Sequence[SweepResult]], list[Claim]]] = {
    "table2": _check_table2, "fig5": _check_fig5, "fig6": _check_fig6, "fig7": _check_fig7, "fig9": _check_fig9,
    "fig10": _check_fig10, "fig12": _check_fig12, "fig13": _check_fig12,
}
"""Experiment id → its check (the paper's experiments only; mfppo-*/hmf-* make no paper claim)."""


def check_claims(sweeps: Sequence[SweepResult]) -> list[Claim]:
    """Every claim of the paper's experiments among ``sweeps`` (each experiment once: the first
    sweep that holds it), in the order of :data:`CLAIM_TEXT`."""
    first: dict[str, SweepResult] = {}
    for s in sweeps:
        first.setdefault(s.experiment, s)
    claims = []
    for exp in CLAIM_TEXT:
        if exp in first:
            claims += CHECKS[exp](first[exp], sweeps)
    for c in claims:
        if c.verdict == OPEN:
            c.summary = "no finished trials to judge it on yet"
    return claims


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The report section: per claim its verdict, the counts and the numbers."""
    if not claims:
        return ""
    lines = ["## The paper's claims on these runs", "",
             "Each \"Reader must see\" line of spec/experiments.md §2, checked on the finished trials above "
             f"(`m3fmarl.results.claims`): two evaluations are *above*/*below* each other when their 95 % CIs do "
             f"not overlap, else a *tie*; a curve is read from {BLOCKS} block means of its iterations (gain = last − "
             f"first block; largely monotone = largest drop ≤ {MONOTONE_DROP:.0%} of the gain; unstable = a drop "
             f"above {UNSTABLE_DROP:.0%} of the rise); \"most\" = more than half.", "",
             "| experiment | claim | verdict | |", "|---|---|---|---|"]
    lines += [f"| {c.experiment} | {c.claim} | **{c.verdict}** | {c.summary} |" for c in claims]
    for c in claims:
        lines += ["", f"### {c.experiment}: {c.claim} — {c.verdict}", "", c.summary + ".", ""]
        lines += [f"- {e}" for e in c.evidence]
        lines += [f"- *caveat:* {x}" for x in c.caveats]
    return "\n".join(lines) + "\n"
