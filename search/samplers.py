"""Samplers and pruners by name: one registry each, so adding one is one entry here.

`--sampler` / `--pruner` choices and their help text, preset validation and the driver all read
these dicts. A sampler factory takes the seed; a pruner factory takes the run settings (eta and
rungs shape the rung pruners).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from search.asha import AshaPruner
from search.chance import HoldAtChance

if TYPE_CHECKING:
    from search.settings import RunSettings


@dataclasses.dataclass(frozen=True)
class Entry:
    make: Callable[[Any], Any]
    help: str
    # a rung pruner wrapped in search.chance.HoldAtChance unless --cut-at-chance: it cuts
    # nobody at a rung that ranks mostly at-chance candidates
    holds_at_chance: bool = True
    # a cut candidate keeps its checkpoint: search.asha.AshaPruner may promote it later
    promotes_late: bool = False


SAMPLERS: dict[str, Entry] = {
    "tpe": Entry(
        lambda seed: optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=8
        ),
        "multivariate TPE over the conditional space, constraint-aware",
    ),
    "random": Entry(lambda seed: optuna.samplers.RandomSampler(seed=seed), "uniform random"),
    "nsga2": Entry(
        lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
        "NSGA-II (for --objectives pareto)",
    ),
    "gp": Entry(lambda seed: optuna.samplers.GPSampler(seed=seed), "Gaussian-process BO"),
}

# Trials report validation loss at steps 1, eta, eta^2, ... (rung lengths in first-rung units).
PRUNERS: dict[str, Entry] = {
    "halving": Entry(
        lambda s: AshaPruner(s.eta),
        "successive halving, asynchronous (ASHA): the best 1/eta of each rung continue, "
        "and a candidate cut on arrival that later ranks in that best 1/eta is promoted late",
        promotes_late=True,
    ),
    "hyperband": Entry(
        lambda s: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=s.eta ** (s.rungs - 1), reduction_factor=s.eta
        ),
        "Hyperband brackets of successive halving (its brackets hedge against short rungs "
        "themselves: not wrapped by the at-chance rule, which would also hide it from the "
        "samplers' per-bracket view)",
        holds_at_chance=False,
    ),
    "median": Entry(
        lambda s: optuna.pruners.MedianPruner(n_startup_trials=s.eta, n_warmup_steps=0),
        "stop a trial below the median of its rung",
    ),
    "none": Entry(
        lambda s: optuna.pruners.NopPruner(),
        "every candidate trains every rung",
        holds_at_chance=False,
    ),
}


def describe(registry: dict[str, Entry], default: str) -> str:
    """Help text listing every entry: "tpe (default): ..., random: ..."."""
    return "; ".join(
        f"{name}{' (default)' if name == default else ''}: {entry.help}"
        for name, entry in registry.items()
    )


SEED_STRIDE = 7919  # seed = --seed + SEED_STRIDE x offset (a prime: streams stay apart)


RESUME_STRIDE = 97  # offset per trial already in the study: a resumed session draws anew


def seed_offset(study: optuna.Study, worker: int | None = None) -> int:
    """The sampler seed offset of the parent (worker None) or of worker `worker`, given the
    trials the study already holds."""
    start = 0 if worker is None else 1 + worker
    return start + RESUME_STRIDE * len(study.get_trials(deepcopy=False))


def make_sampler(settings: RunSettings, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler; `offset` (`seed_offset`) varies the seed per worker and per resume, so that
    processes and later sessions of one study do not replay the same random stream."""
    return SAMPLERS[settings.sampler].make(settings.seed + SEED_STRIDE * offset)


def make_pruner(settings: RunSettings) -> optuna.pruners.BasePruner:
    """The rung pruner. Trials report validation loss at steps 1, eta, eta^2, ... (rung lengths
    in first-rung units), so successive halving keeps the best 1/eta of each rung
    (asynchronously, with late promotion: ASHA, Li et al. 2018; `search.asha`). Unless
    --cut-at-chance, a rung that ranks mostly at-chance candidates cuts nobody
    (`search.chance.HoldAtChance`)."""
    if settings.objectives != "single" or settings.rungs == 1:
        return optuna.pruners.NopPruner()  # multi-objective studies cannot prune
    pruner = PRUNERS[settings.pruner].make(settings)
    return HoldAtChance(pruner) if holds_at_chance(settings) else pruner


def promotes_late(settings: RunSettings) -> bool:
    """The run's pruner may promote a cut candidate later, so its checkpoint is kept."""
    return (
        settings.objectives == "single"
        and settings.rungs > 1
        and (PRUNERS[settings.pruner].promotes_late)
    )


def holds_at_chance(settings: RunSettings) -> bool:
    """The run's pruner cuts nobody at a rung that ranks mostly at-chance candidates."""
    return (
        settings.objectives == "single"
        and settings.rungs > 1
        and PRUNERS[settings.pruner].holds_at_chance
        and not settings.cut_at_chance
    )
