"""search.scale's grid race: tied leaders train on from their checkpoints, and the pick is the
best at the longest horizon."""

from __future__ import annotations

import argparse

from search import scale
from search.compound import Coefficients
from search.grid_race import race_schedule, tied_leaders
from search.plateau import TIE_MARGIN
from search.retrain import train_rungs_job
from search.settings import RunSettings
from spaces import ArchConfig
from trainers.proxy import Recipe
from trainers.rungs import RungSchedule


def row(loss, tokens=100):
    return {"loss": loss, "tokens": tokens}


def test_leaders_are_the_rows_within_the_tie_margin_at_the_longest_horizon():
    assert TIE_MARGIN == 0.02
    rows = [row(2.0), row(2.039), row(2.041), row(None), row(1.5, tokens=50)]
    assert tied_leaders(rows) == [0, 1]  # within 2% of 2.0 (2.04); 1.5 is at a shorter horizon
    raced = [row(2.0), row(2.3, tokens=300), row(2.2, tokens=300), row(1.9)]
    assert tied_leaders(raced) == [2]  # only the longest horizon counts, best first
    assert tied_leaders([row(None), row(None)]) == []


def cfg(depth):
    return ArchConfig(
        attention="full", depth=depth, d_model=64, n_heads=2, seq_len=32, vocab_size=8, causal=True
    )


def test_tied_points_race_on_from_their_checkpoints_and_the_longer_horizon_picks(monkeypatch):
    """Depth 2 and 3 tie at the study's top rung (2.00 and 2.03, within 2%); depth 4 is 10%
    behind. Only the two leaders train rung 3, from the checkpoints their first jobs left, and
    depth 3, second at rung 2, wins at rung 3; depth 4 keeps its rung-2 figure."""
    reachable = [
        (Coefficients(2.0, 1.0, 1.0), "depth", cfg(2), 2.0),
        (Coefficients(1.0, 1.4, 1.0), "width", cfg(3), 2.0),
        (Coefficients(1.2, 1.2, 1.0), "balanced", cfg(4), 2.0),
    ]
    losses = {(2, 2): 2.00, (3, 2): 2.03, (4, 2): 2.20, (2, 3): 1.80, (3, 3): 1.70}
    calls, named = [], []

    def fake_run_jobs(fn, jobs, workers, costs=None, labels=None):
        assert fn is train_rungs_job and len(costs) == len(jobs)
        named.append(labels)
        calls.append(
            [(c["depth"], s.seed, sch.rungs, ckpt, last) for c, s, sch, _, ckpt, last in jobs]
        )
        return [
            {
                "status": "ok",
                "reason": "",
                "loss": losses[(c["depth"], last)],
                "metric": 0.5,
                "tokens": sch.tokens(last),
            }
            for c, _, sch, _, _, last in jobs
        ]

    monkeypatch.setattr(scale, "run_jobs", fake_run_jobs)
    args = argparse.Namespace(coefficients=None, grid_seeds=1, grid_tokens=None, grid_race=2)
    schedule = RungSchedule(first_steps=4, batch_size=4, seq_len=32)  # rungs 0-2
    coeffs, family, rows = scale.choose_coefficients(
        args, reachable, RunSettings(budget=10**6), schedule, 1, 1
    )
    first, race = calls  # the race stopped after one rung: depth 3 leads alone
    assert [c[:3] for c in first] == [(2, 0, 5), (3, 0, 5), (4, 0, 5)]  # 3 rungs + 2 raced
    assert [c[4] for c in first] == [2, 2, 2]
    assert [(c[0], c[4]) for c in race] == [(2, 3), (3, 3)]
    assert [c[3] for c in race] == [c[3] for c in first[:2]]  # the same checkpoint files
    assert all(c[3] and c[3].endswith(f"{i}-0.pt") for i, c in enumerate(first))
    assert (family, coeffs) == ("width", Coefficients(1.0, 1.4, 1.0))
    assert named == [  # each job's line in the progress output
        ["depth 2x64 seed 0", "width 3x64 seed 0", "balanced 4x64 seed 0"],
        ["depth 2x64 seed 0", "width 3x64 seed 0"],
    ]
    assert [r["loss"] for r in rows] == [1.80, 1.70, 2.20]
    assert [r["tokens"] for r in rows] == [schedule.tokens(3), schedule.tokens(3), 4608]
    assert [[h["loss"] for h in r["history"]] for r in rows] == [[2.0, 1.8], [2.03, 1.7], [2.2]]


def test_without_a_race_the_grid_keeps_no_checkpoints_and_picks_at_the_studys_rungs(
    monkeypatch,
):
    seen = []

    def fake_run_jobs(fn, jobs, workers, costs=None, labels=None):
        seen.extend((sch.rungs, ckpt, last) for _, _, sch, _, ckpt, last in jobs)
        return [
            {
                "status": "ok",
                "reason": "",
                "loss": 2.0 + c["depth"] / 100,
                "metric": 0.5,
                "tokens": sch.tokens(last),
            }
            for c, _, sch, _, _, last in jobs
        ]

    monkeypatch.setattr(scale, "run_jobs", fake_run_jobs)
    reachable = [
        (Coefficients(2.0, 1.0, 1.0), "depth", cfg(2), 2.0),
        (Coefficients(1.0, 1.4, 1.0), "width", cfg(3), 2.0),
    ]
    args = argparse.Namespace(coefficients=None, grid_seeds=1, grid_tokens=None, grid_race=0)
    schedule = RungSchedule(first_steps=4, batch_size=4, seq_len=32)
    _, family, _ = scale.choose_coefficients(
        args, reachable, RunSettings(budget=10**6), schedule, 1, 1
    )
    assert seen == [(3, None, 2), (3, None, 2)] and family == "depth"  # tied, no race: 2.02


def test_a_raced_grid_point_continues_from_its_checkpoint_exactly(tmp_path):
    """The study's top rung under the race's longer schedule equals the study's own schedule's
    top rung; continued from the checkpoint, the race rung equals an uninterrupted run's."""
    settings = RunSettings(
        budget=10**6,
        task="recall",
        seq_len=32,
        task_options={"num_pairs": 4, "n_val": 32},
        recipe=Recipe(val_tokens=256),
    )
    c = ArchConfig(vocab_size=34, seq_len=32, causal=True, depth=1, d_model=16, n_heads=1)
    study = RungSchedule(first_steps=2, batch_size=4, seq_len=32, rungs=2)
    longer = race_schedule(study, 1)
    assert longer.rungs == 3 and longer.first_steps == 2
    ckpt = str(tmp_path / "p.pt")
    own = train_rungs_job((c.to_dict(), settings, study, 1, None, 1))
    stopped = train_rungs_job((c.to_dict(), settings, longer, 1, ckpt, 1))
    assert own["status"] == stopped["status"] == "ok" and own["resumed_from"] is None
    assert stopped["loss"] == own["loss"] and stopped["tokens"] == own["tokens"] == 2 * 3 * 128
    raced = train_rungs_job((c.to_dict(), settings, longer, 1, ckpt, 2))
    straight = train_rungs_job((c.to_dict(), settings, longer, 1, None, 2))
    assert raced["resumed_from"] == 1 and straight["resumed_from"] is None
    assert raced["loss"] == straight["loss"] and raced["tokens"] == 2 * 9 * 128


def test_a_negative_race_is_a_usage_error():
    from tests.search_tests.conftest import run_cli

    proc = run_cli("search.scale", "--study", "x", "--targets", "5M", "--grid-race", "-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "invalid --grid-race '-1': expected a whole number >= 0" in proc.stderr
