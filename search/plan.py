"""The search's plan, from the budget and the clock: rung lengths, workers, expected time.

Before any candidate trains, `make_plan` times a few training steps of a budget-sized model
(the full-attention hand baseline, `spaces.baselines.largest_any_head_dim`) with the threads
each worker will use, and sizes the first rung so that `trials` candidates under successive
halving fit the time:

    time ~ trials / workers x (E x r0 + V) x seconds per token of an average candidate

where E = 1 + (rungs - 1)(1 - 1/eta) + decay_frac (rungs - 1) is the expected number of first-rung
token counts one candidate trains under halving (every candidate trains rung 0, 1/eta of them the
next, ...; decay branches included) and V the validation tokens (forward only). An average
candidate's seconds per token are measured (search.plan_speed): a seeded random sample of the
space's feasible configs is timed, and the hand baselines that open a new study count at the
budget-sized model's speed. Without a sample (tests, benchmarks) an average candidate is assumed
to cost `AVERAGE_FLOP_FRACTION` of the budget at the budget-sized model's FLOP/s, which ran 1.3-2.6x
fast on the stored studies (search.plan_speed). `UTILISATION` leaves room for process start-up,
FLOP counting and the asynchronous halving's extra promotions, so the printed expected time is
the model's time / UTILISATION. The top rung is then eta^(rungs-1) x r0, which
is what the best candidates are finally judged on.

The plan is an expectation, not a bound: which candidates win promotions decides the time. In
the default run (2 GFLOPs) where four candidates reached the top rung, three of them near the
budget, the plan said 10.0 min and the run took 14.6. Pricing the promoted rungs at the
budget-sized model's speed instead halved the planned rungs (with a slower speed measured that
time, 50.7K-456K tokens against 143K-1.29M), and that run, whose promotions went to small
models, took 5.2 min of its 10 (docs/results.md, section 0, "The time limit").
So the rungs stay sized for the average candidate, and the limit itself is kept inside each
trial: a promotion whose rung would end past `--timeout` is not started (search.time_limit).

A rung whose candidates are mostly at the chance loss cuts nobody (search.chance), so each
candidate trains more than E: `expected_tokens_factor(..., held=h)` counts it when the lowest
h rungs hold (everyone reaches rung h), and the printed plan gives the cost for h = 1 and for
h = rungs - 1 (eta 3, 3 rungs, decay 0.2: 2.1x and 3.6x E). It cannot know in advance whether
they will hold.

Steps matter as much as tokens early in training: at 196K tokens of text, 192 steps of 8
sequences reached 0.2-0.3 lower loss than 48 steps of 32, and ranked a 6-layer model above a
2-layer one that won with the large batch. So the batch is chosen after the first rung's tokens:
as large as `Recipe.batch_tokens` allows, but small enough that the first rung has
`FIRST_RUNG_STEPS` optimizer steps (at least one sequence per step); throughput is re-measured at
that batch. The first rung never goes below `MIN_FIRST_STEPS` steps (fewer measures nothing but
the warm-up). When `trials` candidates do not fit, the plan says how many will, and when even
eta^(rungs-1) candidates (one full halving bracket) do not fit, it refuses and names the fixes.

On CPU a step is also capped at `CPU_STEP_TOKENS` (1,024) tokens, whatever the rung's length: a
CPU loses little throughput with small batches (recall, 10 MFLOPs, the same tokens: 107 s with 8
sequences of 128 a step, 88 s with 32), and the extra steps decide whether candidates leave
chance on the first rung. Measured on recall (8 pairs, 128 tokens) at rungs of 328K, 983K
and 2.95M tokens (docs/results.md, section 0): with 80 steps of 32 every candidate sat at the
chance loss on rung 0, the search cut the winner there, and Kendall tau of the rung losses
against 29.5M-token training was 0.62 / 0.47 / 0.57; with 320 steps of 8, 0.79 at every rung,
and the search's pick then beat every hand baseline. On text at rungs from 65.5K the cap changes
nothing (the step rule already gives 8 x 128); at rungs from 131K it gives 128 steps of 8
instead of 64 of 16, and tau moved from 0.62 / 0.79 / 0.50 to 0.47 / 0.57 / 0.57 (one seed).
A GPU keeps `Recipe.batch_tokens`: there the batch sets the throughput (docs/results.md, 0e).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from search.budget import format_flops
from search.plan_speed import (
    candidate_seconds_per_token,
    measure_flops_per_s,
    seconds_per_token,
)
from spaces import ArchConfig
from spaces.baselines import largest_any_head_dim
from spaces.flops import TRAIN_FLOPS_FACTOR, estimate_flops
from trainers.proxy import Recipe
from trainers.rungs import RungSchedule
from trainers.tasks import Task

DEFAULT_TIMEOUT = 600.0  # seconds; README: "about 10 minutes on a 2-core CPU"
AVERAGE_FLOP_FRACTION = 0.5  # without a timed sample: an average candidate's share of the budget
# Share of the time the model above accounts for. Measured: with 0.8 the default run (2 GFLOPs,
# 20 candidates, 2 workers) planned 8.0 min and took 10.2: asynchronous halving promotes more
# than 1/eta early (the first candidates have no competition), and two workers side by side
# train ~6% slower than one measured alone.
UTILISATION = 0.6
FIRST_RUNG_STEPS = 64  # the batch shrinks (down to one sequence) to give rung 0 this many steps
CPU_STEP_TOKENS = 1024  # on CPU, tokens per optimizer step at most (module docstring)
MIN_FIRST_STEPS = 16  # optimizer steps of the first rung, at least
NO_CLOCK_FIRST_STEPS = 64  # first rung when there is no time limit and no --rung-tokens


class PlanError(ValueError):
    """No plan fits: the message names the fixes."""


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    schedule: RungSchedule
    trials: int  # candidates asked for
    expected_candidates: int  # candidates expected to train within the time
    expected_seconds: float
    workers: int
    threads: int
    flops_per_s: float  # measured training FLOP/s of one worker (fvcore convention)
    reference: ArchConfig  # the budget-sized model that was timed
    timeout: float | None
    # training per candidate, as a multiple of the plan's, when rungs at the chance loss cut
    # nobody (search.chance): (the first rung holds, every rung below the top holds)
    held: tuple[float, float] = (1.0, 1.0)
    # an average candidate's training tokens/s per worker, and how many configs were timed for
    # it (0: assumed from AVERAGE_FLOP_FRACTION)
    candidate_tokens_per_s: float = 0.0
    timed: int = 0

    def describe(self, budget: int, holds_at_chance: bool = False) -> str:
        s = self.schedule
        rungs = ", ".join(f"{_tokens(s.tokens(k))}" for k in range(s.rungs))
        ref = self.reference
        per_s = self.flops_per_s / (TRAIN_FLOPS_FACTOR * estimate_flops(ref) / s.seq_len)
        lines = [
            f"plan: {self.expected_candidates} candidates on rungs of {rungs} training tokens "
            f"(eta {s.eta}: the best 1/{s.eta} continue), batch {s.batch_size} x {s.seq_len} "
            f"tokens, same tokens for every candidate",
            f"      {self.workers} worker(s) x {self.threads} torch thread(s); a budget-sized "
            f"model ({ref.depth} layers x {ref.d_model}, {ref.attention} attention, "
            f"{format_flops(estimate_flops(ref))}) trains at {_tokens(per_s)} tokens/s "
            f"per worker"
            + (
                f"; an average candidate at {_tokens(self.candidate_tokens_per_s)} "
                f"({self.timed} of the space's configs timed)"
                if self.timed
                else ""
            ),
            f"      expected time {_duration(self.expected_seconds)}"
            + (f" (limit {_duration(self.timeout)})" if self.timeout else " (no time limit)"),
        ]
        if holds_at_chance:  # search.chance.HoldAtChance: ListOps took 12.9 min, planned 2.8
            lines.append(
                "      a rung whose candidates are mostly still at the chance loss cuts nobody "
                "(--cut-at-chance cuts anyway), and then each candidate trains longer: "
                + self._held_cost()
            )
        if self.expected_candidates < self.trials:
            lines.append(
                f"      note: only ~{self.expected_candidates} of --trials {self.trials} fit in "
                f"the time; raise --timeout, lower the budget, or use --device cuda"
            )
        return "\n".join(lines)

    def _held_cost(self) -> str:
        """What rungs that hold at chance cost: the time, or the candidates that fit it."""
        first, every = self.held
        if self.timeout:
            limit = self.timeout
            per = self.expected_seconds / max(1, self.expected_candidates)  # one candidate

            def fit(ratio: float) -> int:
                return max(1, min(self.expected_candidates, int(limit / (per * ratio))))

            n1, n2 = fit(first), fit(every)
            cost = f"x{first:.1f} if the first rung holds (about {n1} candidates fit the limit)"
            if every > first:
                cost += f", x{every:.1f} if every rung below the top holds (about {n2})"
            return cost
        t1, t2 = self.expected_seconds * first, self.expected_seconds * every
        cost = f"about {_duration(t1)} if the first rung holds"
        if every > first:
            cost += f", {_duration(t2)} if every rung below the top holds"
        return cost


def expected_tokens_factor(schedule_eta: int, rungs: int, recipe: Recipe, held: int = 0) -> float:
    """First-rung token counts one candidate trains on average under successive halving, when
    the lowest `held` rungs cut nobody (search.chance: their candidates were at chance): rung k
    (eta^k first-rung tokens in all) is reached by eta^-max(0, k - held) of the candidates."""
    eta = schedule_eta
    grown = sum(eta ** -max(0, k - held) * (eta**k - eta ** (k - 1)) for k in range(1, rungs))
    # each rung below the top ends in a decay branch of decay_frac x its tokens, for everyone
    # who reached it: eta^min(k, held) first-rung counts per candidate
    decays = sum(eta ** min(k, held) for k in range(rungs - 1))
    return 1 + grown + recipe.decay_frac * decays


def make_plan(
    task: Task,
    budget: int,
    recipe: Recipe,
    *,
    trials: int,
    timeout: float | None,
    workers: int,
    threads: int,
    device: str = "cpu",
    eta: int = 3,
    rungs: int = 3,
    first_rung_tokens: int | None = None,
    flops_per_s: float | None = None,
    fallback: ArchConfig | None = None,
    sample: Sequence[ArchConfig] = (),
    seeded: int = 0,
    sample_s_per_token: float | None = None,
) -> SearchPlan:
    """Size the rungs from the clock (or take `first_rung_tokens`), and estimate the run.
    `fallback` is timed when no full-attention model fits the budget (e.g. the space's cheapest
    config). `sample` (search.plan_speed.feasible_sample) is timed for an average candidate's
    speed, with `seeded` hand baselines counted at the budget-sized model's; `flops_per_s` and
    `sample_s_per_token` skip the measurements (tests)."""
    seq_len = task.seq_len
    reference = _reference(task, budget, fallback)
    max_batch = max(1, max_step_tokens(recipe, device) // seq_len)
    measured: dict[int, float] = {}

    def speed(batch: int) -> float:
        if flops_per_s is not None:
            return flops_per_s
        if batch not in measured:
            measured[batch] = measure_flops_per_s(reference, task, batch, threads, device)
        return measured[batch]

    # an average candidate's seconds per token, as a multiple of the budget-sized model's
    ratio = AVERAGE_FLOP_FRACTION * budget / estimate_flops(reference)
    timed = 0
    if sample and (sample_s_per_token is not None or flops_per_s is None):
        ref_s = seconds_per_token(speed(max_batch), reference)
        mean_s = sample_s_per_token or candidate_seconds_per_token(
            sample, task, max_batch, threads, device
        )
        k = min(seeded, trials)
        ratio = (k * ref_s + (trials - k) * mean_s) / trials / ref_s
        timed = len(sample)

    def cost(batch: int) -> _Cost:
        return _Cost(task, reference, recipe, batch, speed(batch), workers, eta, rungs, ratio)

    def first_steps(c: _Cost) -> int:
        return _first_steps(c, first_rung_tokens, timeout, trials)

    # size the first rung at the largest batch, then shrink the batch so that the rung has
    # FIRST_RUNG_STEPS steps, and size it again at the measured speed of that batch
    batch = max_batch
    for _ in range(2):
        tokens = max(0, first_steps(cost(batch))) * batch * seq_len
        fitted = max(1, min(max_batch, tokens // (FIRST_RUNG_STEPS * seq_len)))
        if fitted == batch:
            break
        batch = fitted
    c = cost(batch)
    first, candidates = first_steps(c), trials
    if first < MIN_FIRST_STEPS and first_rung_tokens is None:
        first, candidates = MIN_FIRST_STEPS, _fewer_candidates(c, trials, timeout, workers)
    schedule = RungSchedule(
        first_steps=first, batch_size=batch, seq_len=seq_len, eta=eta, rungs=rungs
    )
    factor = expected_tokens_factor(eta, rungs, recipe)
    held = (
        expected_tokens_factor(eta, rungs, recipe, held=1) / factor,
        expected_tokens_factor(eta, rungs, recipe, held=max(1, rungs - 1)) / factor,
    )
    return SearchPlan(
        schedule=schedule,
        trials=trials,
        expected_candidates=candidates,
        expected_seconds=c.seconds(first, candidates) / UTILISATION,
        workers=workers,
        threads=threads,
        flops_per_s=c.flops_per_s,
        reference=reference,
        timeout=timeout,
        held=held if rungs > 1 else (1.0, 1.0),
        candidate_tokens_per_s=1 / c.s_per_token,
        timed=timed,
    )


def max_step_tokens(recipe: Recipe, device: str) -> int:
    """Tokens per optimizer step at most: the recipe's, and on CPU at most CPU_STEP_TOKENS."""
    if device.startswith("cuda"):
        return recipe.batch_tokens
    return min(recipe.batch_tokens, CPU_STEP_TOKENS)


def _first_steps(c: _Cost, given_tokens: int | None, timeout: float | None, trials: int) -> int:
    """First-rung steps: from --rung-tokens, else from the clock (each of `trials` candidates
    gets its share of the workers' time), else NO_CLOCK_FIRST_STEPS."""
    if given_tokens is not None:
        return max(1, math.ceil(given_tokens / c.batch_tokens))
    if timeout:
        per_candidate = timeout * UTILISATION * c.workers / trials - c.val_s
        return math.floor(per_candidate / (c.factor * c.batch_tokens * c.s_per_token))
    return NO_CLOCK_FIRST_STEPS


def _fewer_candidates(c: _Cost, trials: int, timeout: float | None, workers: int) -> int:
    """On the shortest useful rungs, the candidates the clock affords; PlanError when not even
    one halving bracket fits, naming the fixes."""
    first = MIN_FIRST_STEPS
    per = c.seconds(first, 1) * workers
    candidates = min(trials, int(timeout * UTILISATION * workers // per)) if timeout else trials
    bracket = min(trials, c.eta ** (c.rungs - 1))
    if candidates < bracket:
        need = c.seconds(first, bracket) / UTILISATION
        raise PlanError(
            f"no plan fits --timeout {timeout:g}s: even {bracket} candidates (one halving "
            f"bracket) on the shortest useful rungs ({_tokens(first * c.batch_tokens)} "
            f"tokens first) need about {_duration(need)} at the measured "
            f"{c.flops_per_s / 1e9:.1f} GFLOP/s per worker. Fixes: --timeout "
            f"{math.ceil(need)}, a smaller --budget, or --device cuda"
        )
    return candidates


@dataclasses.dataclass(frozen=True)
class _Cost:
    """The time model of a plan at one batch size and measured speed."""

    task: Task
    reference: ArchConfig  # the budget-sized model whose FLOP/s was measured
    recipe: Recipe
    batch_size: int
    flops_per_s: float
    workers: int
    eta: int
    rungs: int
    ratio: float  # an average candidate's seconds per token / the reference's

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.task.seq_len

    @property
    def s_per_token(self) -> float:
        """Training seconds per token of an average candidate."""
        return self.ratio * seconds_per_token(self.flops_per_s, self.reference)

    @property
    def factor(self) -> float:
        return expected_tokens_factor(self.eta, self.rungs, self.recipe)

    @property
    def val_s(self) -> float:
        """Validation seconds of an average candidate (forward only: 1/3 of training)."""
        val_tokens = min(self.recipe.val_tokens, self.task.n_val * self.task.seq_len)
        evals = 1 + sum(self.eta**-k for k in range(1, self.rungs))
        return evals * val_tokens * self.s_per_token / TRAIN_FLOPS_FACTOR

    def seconds(self, first_steps: int, candidates: int) -> float:
        per = self.factor * first_steps * self.batch_tokens * self.s_per_token + self.val_s
        return candidates * per / self.workers


def _reference(task: Task, budget: int, fallback: ArchConfig | None) -> ArchConfig:
    """The budget-sized model to time: the largest full-attention model with head dim 64 (32,
    16 or 8 on tiny budgets), else `fallback`."""
    try:
        return largest_any_head_dim(task.interface(), budget, "full")
    except ValueError:
        pass
    if fallback is None:
        raise PlanError(
            f"budget {format_flops(budget)} is below a one-layer full-attention model at "
            f"seq_len {task.seq_len}; raise --budget"
        )
    return fallback


def _tokens(n: float) -> str:
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


__all__ = [
    "CPU_STEP_TOKENS",
    "DEFAULT_TIMEOUT",
    "PlanError",
    "SearchPlan",
    "make_plan",
    "max_step_tokens",
]
