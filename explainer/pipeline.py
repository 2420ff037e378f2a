"""One explanation's path through the method: windows, simulations, scores.

The explain job (real circuit nodes) and the ground-truth suite (rule neurons) both go through
these functions, so a score means the same thing in both:

1. `pick_windows`: from a node's records dealt into splits, the windows shown to the explainer
   (top windows of the explain split) and, on the calibrate and score splits, n top windows and as
   many random ones (the paper's top-and-random scoring).
2. `simulate_split`: the simulator predicts every window of a split from the explanation alone.
3. `score_simulations`: a calibration fitted on the calibrate split, then the scores of each split
   (`scoring.SplitScore`); the calibrated scores (r², absolute deviation) on the score split.
4. `best_of_k`: k candidate explanations from the LLM and the cheap ones of the other writers
   (`writers.cheap_candidates`), each simulated on the calibrate split; the best one by its
   calibrate score is simulated on the score split and scored there, and so is the best LLM one.

    windows = pick_windows(split_records(sample_records(...)), explain=5, calibrate=5, score=5)
    scored = asyncio.run(simulate_and_score(simulator, "the keyword return", windows))
    scored.scores[SCORE].correlation
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

from . import scoring
from .explain import Explainer
from .prompts import fact_counts
from .records import CALIBRATE, EXPLAIN, SCORE, ActivationRecord
from .simulators import EMBEDDING, TRAINED, Simulation, Simulator
from .writers import LLM_WRITER, Candidate

# Explanation kinds (the `kind` column of explanations and node_scores).
LLM = "llm"  # written by the explainer LLM
TOKEN_LOOKUP = "token_lookup"  # baseline: each token's mean activation over the explain windows, no LLM
SHUFFLED = "shuffled"  # control: another node's LLM explanation, simulated for this node
CORRECT, WRONG = "correct", "wrong"  # ground-truth suite: a rule's correct and wrong explanations
AUROC = "auroc"  # ground-truth suite: a rule's discrimination, stored as an explanation without text
NODE_KINDS = (LLM, TOKEN_LOOKUP, SHUFFLED)  # the kinds every explained circuit node has
TOKEN_LOOKUP_TEXT = "each token's mean activation over the explanation windows"

# Best-of-k's size when the user does not set it, by simulator (docs/method.md, "Best of k"): with
# the embedding simulator a candidate costs about 0.3 s of sampling and a few ms of simulation, and
# the held-out score grows with k up to at least 32 (bench/best_of_k.py), so 32 candidates are
# picked on all 10 + 10 calibrate windows; an LLM simulator costs one LLM pass per calibrate window
# per candidate, so there it stays at 3 candidates on 5 + 5 windows.
BEST_OF_K = {EMBEDDING: (32, 10), TRAINED: (32, 10)}
BEST_OF_K_LLM_SIMULATOR = (3, 5)


def best_of_k_sizes(simulator_method: str, k: int | None, calibrate: int | None) -> tuple[int, int]:
    """(candidates, calibrate windows) for best-of-k with this simulator: the user's values, and the
    simulator's defaults for those left unset (None)."""
    default_k, default_calibrate = BEST_OF_K.get(simulator_method, BEST_OF_K_LLM_SIMULATOR)
    return (default_k if k is None else k, default_calibrate if calibrate is None else calibrate)


@dataclass
class Windows:
    """The windows one explanation is made from and judged on."""

    explain: list[ActivationRecord]
    calibrate: list[ActivationRecord] = field(default_factory=list)
    score: list[ActivationRecord] = field(default_factory=list)

    def split(self, name: str) -> list[ActivationRecord]:
        return {EXPLAIN: self.explain, CALIBRATE: self.calibrate, SCORE: self.score}[name]


def _top_and_random(records: Sequence[ActivationRecord], n: int) -> list[ActivationRecord]:
    return [r for r in records if r.sampling == "top"][:n] + [r for r in records if r.sampling == "random"][:n]


def pick_windows(splits: dict[str, list[ActivationRecord]], explain: int, calibrate: int, score: int) -> Windows:
    """`explain` top windows of the explain split; `calibrate` (and `score`) top windows and as many
    random ones of the calibrate (and score) split. Records keep their order within a split."""
    return Windows(explain=[r for r in splits.get(EXPLAIN, []) if r.sampling == "top"][:explain],
                   calibrate=_top_and_random(splits.get(CALIBRATE, []), calibrate),
                   score=_top_and_random(splits.get(SCORE, []), score))


@dataclass
class ScoredExplanation:
    """An explanation with its simulations and scores, split by split (only the splits it was
    simulated on). `failure` says why it has no score on the score split, if it has none."""

    text: str | None
    simulations: dict[str, list[Simulation]] = field(default_factory=dict)
    scores: dict[str, scoring.SplitScore] = field(default_factory=dict)
    calibration: tuple[float, float] | None = None
    failure: str | None = None

    @property
    def score(self) -> float | None:
        """The headline score: pooled correlation on the score split."""
        found = self.scores.get(SCORE)
        return found.correlation if found is not None else None


def all_failed(sims: Sequence[Simulation]) -> str | None:
    """Why a split has no score: every simulation of it failed (None if any succeeded)."""
    failed = [s for s in sims if s.predicted is None]
    if failed and len(failed) == len(sims):
        return f"all {len(sims)} simulations failed; first: {failed[0].failure}"
    return None


async def simulate_split(simulator: Simulator, text: str, records: Sequence[ActivationRecord]) -> list[Simulation]:
    """The simulator's prediction for every window of `records`."""
    if not records:
        return []
    return await simulator.simulate_windows(text, [r.tokens for r in records])


def score_simulations(text: str | None, windows: Windows, simulations: dict[str, list[Simulation]]) -> ScoredExplanation:
    """Scores of an explanation whose windows were simulated: the calibration is fitted on the
    calibrate split (if simulated) and applied on the score split."""
    out = ScoredExplanation(text, simulations=simulations)
    if CALIBRATE in simulations:
        cal = simulations[CALIBRATE]
        out.calibration = scoring.calibration_of([r.activations for r in windows.calibrate], [s.predicted for s in cal])
        out.scores[CALIBRATE] = scoring.score_windows([r.activations for r in windows.calibrate],
                                                      [s.predicted for s in cal])
    if SCORE in simulations:
        test = simulations[SCORE]
        out.scores[SCORE] = scoring.score_windows([r.activations for r in windows.score], [s.predicted for s in test],
                                                  out.calibration)
        out.failure = all_failed(test)
    return out


async def simulate_and_score(simulator: Simulator, text: str, windows: Windows,
                             calibrate_simulations: list[Simulation] | None = None) -> ScoredExplanation:
    """Simulate `text` on the calibrate split (unless its simulations are given) and on the score
    split, and score it."""
    sims = {}
    if windows.calibrate:
        sims[CALIBRATE] = calibrate_simulations if calibrate_simulations is not None else \
            await simulate_split(simulator, text, windows.calibrate)
    sims[SCORE] = await simulate_split(simulator, text, windows.score)
    return score_simulations(text, windows, sims)


def token_lookup(windows: Windows) -> ScoredExplanation:
    """The token-lookup baseline, scored exactly like an explanation."""
    sims = {}
    for split in ([CALIBRATE] if windows.calibrate else []) + [SCORE]:
        recs = windows.split(split)
        preds = scoring.token_lookup_predictions(windows.explain, recs)
        sims[split] = [Simulation([float(x) for x in p]) for p in preds] if preds is not None else \
            [Simulation(None, failure="no explanation windows") for _ in recs]
    return score_simulations(TOKEN_LOOKUP_TEXT, windows, sims)


async def fact_lookup(simulator: Simulator, windows: Windows, threshold: int = 5) -> ScoredExplanation | None:
    """A baseline without an LLM: the lexer description that fits the explain windows' marked tokens
    best (`prompts.fact_counts`, the first line the `explain_marked_facts` prompt shows), simulated
    and scored like an explanation. None when no token is marked."""
    ranked = fact_counts(windows.explain, threshold)
    return await simulate_and_score(simulator, ranked[0][0], windows) if ranked else None


@dataclass
class BestOfK:
    """The candidate explanations of one node: `scored[i]` holds candidate i's scores (calibrate
    split; the chosen one and the best LLM one also the score split); unusable candidates have no
    entry. `chosen`: the index of the best candidate by its calibrate score, None when every
    candidate failed; `best_llm`: the same among the LLM's candidates."""

    candidates: list[Candidate]
    scored: dict[int, ScoredExplanation]
    chosen: int | None
    best_llm: int | None = None

    @property
    def score(self) -> float | None:
        return self.scored[self.chosen].score if self.chosen is not None else None

    @property
    def llm_score(self) -> float | None:
        """The held-out score of the best LLM candidate, taken alone (whether or not it was chosen)."""
        return self.scored[self.best_llm].score if self.best_llm is not None else None

    @property
    def text(self) -> str | None:
        return self.candidates[self.chosen].text if self.chosen is not None else None

    def selected(self, i: int) -> bool:
        """Whether candidate i stands for the node: the chosen one, or the first when every one failed."""
        return i == (0 if self.chosen is None else self.chosen)


async def best_of_k(explainer: Explainer, simulator: Simulator, windows: Windows, k: int, seed: int = 0,
                    attribute: Callable[[int], ContextManager] | None = None,
                    extra: Sequence[Candidate] = ()) -> BestOfK:
    """Best-of-k: candidate i < k (see `Explainer.candidates`) from the explain windows, and the
    `extra` candidates of other writers as candidates k, k + 1, ...; each is simulated on the
    calibrate split; the best by calibrate correlation (ties: the earlier one; without calibrate
    windows, the first usable one) is simulated on the score split too, and so is the best of the
    LLM's. `attribute(i)`: a context in which candidate i's LLM requests are made (the explain job
    uses it for its accounting)."""
    ctx = attribute or (lambda i: contextlib.nullcontext())
    written: dict[int, Candidate] = {}
    scored: dict[int, ScoredExplanation] = {}

    async def calibrate(i: int) -> None:
        with ctx(i):
            cal = await simulate_split(simulator, written[i].text, windows.calibrate)
        scored[i] = score_simulations(written[i].text, windows, {CALIBRATE: cal} if windows.calibrate else {})

    for batch in explainer.batches(k):
        with ctx(batch[0]):  # a request for several candidates is counted with the first of them
            written.update(zip(batch, await explainer.candidates(windows.explain, batch, seed=seed)))
        for i in batch:
            if written[i].text is not None:
                await calibrate(i)
    for i, cand in enumerate(extra, start=k):
        written[i] = cand
        await calibrate(i)

    def key(i: int) -> tuple[float, int]:
        found = scored[i].scores.get(CALIBRATE)
        v = found.correlation if found is not None else None
        return (float("-inf") if v is None else v, -i)

    candidates = [written[i] for i in range(k + len(extra))]
    chosen = max(scored, key=key) if scored else None
    llm = [i for i in scored if candidates[i].writer == LLM_WRITER]
    best_llm = max(llm, key=key) if llm else None
    for i in dict.fromkeys(x for x in (chosen, best_llm) if x is not None):
        with ctx(i):
            scored[i] = await simulate_and_score(simulator, candidates[i].text, windows,
                                                 scored[i].simulations.get(CALIBRATE))
    return BestOfK(candidates, scored, chosen, best_llm)
