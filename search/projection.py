"""Where the top rung's candidates are heading: each one's loss one rung further.

Successive halving ranks its top rung by the loss measured there, but a user trains the pick
much longer, and models of different depth and width learn at different rates. A deep model
that is behind at the top rung can still be dropping faster. So the pick compares the top
rung's candidates by the loss each would reach one rung further (eta x the tokens) if its last
drop per rung repeated: `2 x last - previous`, a straight line in log tokens through its last
two rungs. This needs no fitted constant, and each candidate is projected from its own curve.

Measured on the six searches whose candidates were also trained for real (docs/results.md,
section 0, "Projected one rung further"), against the measured order at the top rung:
- default README run (2 GFLOPs, 512 tokens): the measured first, window(32) 2x384, reached
  1.2808 nats after 4.88M tokens; the projected first, full attention 6x192, 1.1864.
- 200 MFLOPs: windowed 4x64 1.2338 after 11.2M tokens; the projected first, full 3x64, 1.2029.
- text at 20 MFLOPs, ListOps twice: the same pick either way.
- recall: linear 1x64 1.9450 after 29.5M tokens; the projected first, another linear 1x64,
  1.9478 (0.003 worse, below the spread between seeds; both beat every hand baseline).
Searched after the rule was written: text at 20 MFLOPs, 0.014 better (full 2x64 over window
2x64); ListOps at 10 MFLOPs, 0.019 worse (the seeded full 1x64 h2, 1.6482 after 23.6M tokens,
over Linformer(16) 1x32, 1.6292; section 0, "The time limit inside each trial").

A candidate without two consecutive rungs of history (a multi-objective study reports none)
has no projection, and then the measured order stands for the whole rung. Nor has one that was
still at the task's chance loss on the rung before (`search.chance.is_at_chance`): its drop is
the jump off chance, not a rate that repeats, and extrapolating it compares a candidate that
has just started learning with ones well on their way. On the ListOps study searched with the
batch-scaled rate that jump decided the projected pick: a full 1x16 at chance one rung
earlier projected 1.46 nats and was picked over the measured first, Linformer(32) 1x32,
which ended 0.050 nats ahead after 23.6M tokens. With the rule the measured order stands on
the three outcome studies where a top-rung candidate was at chance the rung before (ListOps
twice, recall once), and there the measured first ended better than the projected pick every
time (by 0.050, 0.019 and 0.0015 nats); every other study keeps its projection. The rule was
written after seeing those results (docs/results.md 0, "The three outcome studies on the
batch-scaled rate").
"""

from __future__ import annotations

import optuna

from search.chance import is_at_chance


def projected_loss(
    trial: optuna.trial.FrozenTrial, eta: int, chance: float | None = None
) -> float | None:
    """The loss one rung past the trial's last, continuing the drop between its last two
    consecutive rungs (reported at steps eta^r, `search.objective.rung_step`); None without
    two such rungs, or when the earlier of them was at the `chance` loss (if known)."""
    steps = sorted(trial.intermediate_values)
    if len(steps) < 2 or steps[-1] != steps[-2] * eta:
        return None
    previous, last = (trial.intermediate_values[s] for s in steps[-2:])
    if chance is not None and is_at_chance(previous, chance):
        return None
    return 2 * last - previous


def projected_first(
    ranked: list[optuna.trial.FrozenTrial], eta: int, chance: float | None = None
) -> tuple[optuna.trial.FrozenTrial, dict[int, float]] | None:
    """Among the candidates on the first-ranked one's rung, the one with the lowest projected
    loss, and every projection by trial number; None when any of them has no projection
    (`projected_loss`, with the task's `chance` loss when the study records one)."""
    if not ranked:
        return None
    rung = ranked[0].user_attrs.get("rung")
    peers = [t for t in ranked if t.user_attrs.get("rung") == rung]
    projected: dict[int, float] = {}
    for t in peers:
        loss = projected_loss(t, eta, chance)
        if loss is None:
            return None
        projected[t.number] = loss
    return min(peers, key=lambda t: projected[t.number]), projected


__all__ = ["projected_first", "projected_loss"]
