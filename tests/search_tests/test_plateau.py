"""The pick when the search's first is still on the task's plateau (search/plateau.py): the
text task's bigram loss, exactly; the fallback to the seeded hand baseline in the summary, the
export and scaling; and no fallback where the ranking has left the plateau."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import optuna
import pytest

from benchmarks.outcome import candidates
from dashboards.notes import study_note
from search.export import main as export_main
from search.plateau import (
    PLATEAU_MARGIN,
    TIE_MARGIN,
    on_plateau,
    pick,
    seeded_baselines,
    tie_note,
    tied_with,
)
from search.scale import pick_base
from search.settings import RunSettings
from search.study import open_study
from search.summary import summarize
from spaces import ArchConfig
from trainers.tasks.base import get_task
from trainers.tasks.text import BIGRAM_SMOOTHING

PLATEAU = 2.4


def test_the_text_tasks_plateau_is_the_bigram_loss_of_its_validation_windows(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcab" * 40 + "aacb" * 10)
    task = get_task("text", seq_len=4, seed=0, data=[str(corpus)], n_val=3)
    raw = corpus.read_bytes()
    n_val = math.ceil(len(raw) * 0.1)
    train, val = raw[: len(raw) - n_val], raw[len(raw) - n_val :]
    pairs, firsts = Counter(itertools.pairwise(train)), Counter(train[:-1])
    chunks = (len(val) - 1) // 4
    starts = sorted({round(i * (chunks - 1) / 2) * 4 for i in range(3)})  # linspace, 3 windows
    scored = [(val[s + i], val[s + i + 1]) for s in starts for i in range(4)]
    expected = -sum(
        math.log((pairs[a, b] + BIGRAM_SMOOTHING) / (firsts[a] + 256 * BIGRAM_SMOOTHING))
        for a, b in scored
    ) / len(scored)
    assert task.plateau_loss() == pytest.approx(expected, rel=1e-12)
    assert get_task("recall", seq_len=64, seed=0).plateau_loss() is None


def test_on_plateau_is_anything_short_of_the_margin_below_it():
    assert PLATEAU_MARGIN == 0.10
    assert on_plateau(2.17, 2.4) and not on_plateau(2.15, 2.4)  # 0.9 x 2.4 = 2.16
    assert on_plateau(2.5, 2.4)


def _trial(loss_rung, depth=1, flops=1000, seeded=False, d_model=64):
    loss, rung = loss_rung
    done = rung == 2
    attrs = {
        "status": "ok",
        "loss": loss,
        "metric": loss / math.log(2),
        "rung": rung,
        "flops": flops,
        "config": ArchConfig(256, 64, True, depth=depth, d_model=d_model, n_heads=4).to_dict(),
        "variant": "window" if not seeded else "full",
        "d_model": d_model,
        "tokens": 100 * 3**rung,
        **({"seeded": "baseline"} if seeded else {}),
    }
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED,
        value=loss if done else None,
        intermediate_values={3**r: loss for r in range(rung + 1)},
        user_attrs=attrs,
    )


def _study(tmp_path, first_loss: float, plateau: float | None = PLATEAU, baselines=True):
    storage = f"sqlite:///{tmp_path}/p.db"
    study = optuna.create_study(storage=storage, study_name="p")
    for key, value in {"eta": 3, "rungs": 3, "budget": 2000, "task_metric": "bits"}.items():
        study.set_user_attr(key, value)
    if plateau is not None:
        study.set_user_attr("plateau_loss", plateau)
    if baselines:  # 0: one layer, the most FLOPs; 1 and 2: three layers, equal FLOPs
        study.add_trial(_trial((2.37, 2), depth=1, flops=1950, seeded=True, d_model=512))
        study.add_trial(_trial((2.39, 2), depth=3, flops=1650, seeded=True, d_model=256))
        study.add_trial(_trial((2.47, 1), depth=3, flops=1650, seeded=True, d_model=256))
    study.add_trial(_trial((first_loss, 2), depth=1, flops=1280))  # the search's first
    study.add_trial(_trial((2.6, 0), depth=8, flops=900))
    return study, storage


def test_on_the_plateau_the_pick_is_the_largest_multi_layer_seeded_baseline(tmp_path):
    study, _ = _study(tmp_path, first_loss=2.35)
    assert [t.number for t in seeded_baselines(study)] == [1, 2, 0]  # multi-layer, FLOPs, rank
    chosen = pick(study)
    assert chosen.ranked_first.number == 3 and chosen.trial.number == 1
    assert chosen.fallback and chosen.plateau == PLATEAU
    assert pick_base(study, None).number == 1  # search.scale grows the same pick
    assert pick_base(study, 3).number == 3


def test_past_the_plateau_the_search_decides(tmp_path):
    study, _ = _study(tmp_path, first_loss=2.15)
    chosen = pick(study)
    assert chosen.trial.number == 3 and not chosen.fallback and chosen.plateau is None


def test_a_study_without_a_plateau_loss_keeps_the_searchs_first(tmp_path):
    study, _ = _study(tmp_path, first_loss=2.35, plateau=None)
    assert pick(study).trial.number == 3 and pick(study).plateau is None


def test_summary_names_the_fallback_the_searchs_first_and_the_remedy(capsys, tmp_path):
    study, storage = _study(tmp_path, first_loss=2.35)
    assert summarize(study, RunSettings(budget=2000), storage, top=3) == 0
    out = capsys.readouterr().out
    assert "\npick: trial 1 (full, 3 layers x 256, 1.65 KFLOPs = 82.5% of the budget)" in out
    assert (
        "note: the search's first, trial 3 (window, 1 layers x 64), was still on the task's "
        "plateau: val loss 2.3500 against 2.4000 nats from the previous token alone, less than "
        "10% below it" in out
    )
    assert "export the search's first with --trial 3" in out and "raise --timeout" in out


def test_summary_without_seeded_baselines_keeps_the_first_and_warns(capsys, tmp_path):
    study, storage = _study(tmp_path, first_loss=2.35, baselines=False)
    summarize(study, RunSettings(budget=2000), storage, top=3)
    out = capsys.readouterr().out
    assert "\nbest: trial 0 (window, 1 layers x 64" in out
    assert "no seeded hand baseline to fall back on" in out


def test_summary_past_the_plateau_has_no_note(capsys, tmp_path):
    study, storage = _study(tmp_path, first_loss=2.15)
    summarize(study, RunSettings(budget=2000), storage, top=3)
    out = capsys.readouterr().out
    assert "\nbest: trial 3 (window" in out and "note: the search's first" not in out


def test_export_writes_the_pick_and_says_why_and_trial_exports_the_first(capsys, tmp_path):
    _, storage = _study(tmp_path, first_loss=2.35)
    out = tmp_path / "best.json"
    assert export_main(["--study", "p", "--storage", storage, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["provenance"]["trial"] == 1
    assert "So the pick is the seeded hand baseline, trial 1" in capsys.readouterr().err
    assert (
        export_main(["--study", "p", "--storage", storage, "--trial", "3", "--out", str(out)]) == 0
    )
    assert json.loads(out.read_text())["provenance"]["trial"] == 3
    assert "plateau" not in capsys.readouterr().err


def test_a_text_study_records_its_plateau_loss_and_a_recall_study_none(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 50)
    text = get_task("text", seq_len=16, seed=0, data=[str(corpus)], n_val=4)
    study = open_study(
        RunSettings(budget=10**6, task="text"), "t", f"sqlite:///{tmp_path}/t.db", text
    )
    assert study.user_attrs["plateau_loss"] == text.plateau_loss()
    recall = get_task("recall", seq_len=64, seed=0)
    other = open_study(RunSettings(budget=10**6), "r", f"sqlite:///{tmp_path}/r.db", recall)
    assert "plateau_loss" not in other.user_attrs


def test_the_outcome_benchmark_trains_the_pick_and_labels_the_searchs_first(tmp_path):
    study, _ = _study(tmp_path, first_loss=2.35)
    rows = candidates(study, top=1, n_random=0, seed=0)
    assert [(r["kind"], r["rank"], r["trial"]) for r in rows] == [
        ("search's first", 1, 3),
        ("pick", 3, 1),  # ranked: 3 (2.35), 0 (2.37), 1 (2.39), then the rung-1 trial 2
    ]
    (tmp_path / "past").mkdir()
    past, _ = _study(tmp_path / "past", first_loss=2.15)
    assert [(r["kind"], r["trial"]) for r in candidates(past, 1, 0, 0)] == [("pick", 3)]


def test_the_dashboard_note_says_the_pick_is_the_baseline(tmp_path):
    study, storage = _study(tmp_path, first_loss=2.35)
    note = study_note(study, [], storage)
    assert "**the search's first, trial 3 (window, 1 layers x 64), was still on" in note
    assert "So the pick is the seeded hand baseline, trial 1 (full, 3 layers x 256)" in note
    (tmp_path / "past").mkdir()
    past, storage = _study(tmp_path / "past", first_loss=2.15)
    assert "search's first" not in study_note(past, [], storage)


def test_without_a_candidate_past_the_top_rung_there_is_no_pick(capsys, tmp_path):
    storage = f"sqlite:///{tmp_path}/n.db"
    study = optuna.create_study(storage=storage, study_name="n")
    for key, value in {"eta": 3, "rungs": 3, "budget": 2000, "plateau_loss": PLATEAU}.items():
        study.set_user_attr(key, value)
    study.add_trial(_trial((2.47, 1), depth=3, flops=1650, seeded=True, d_model=256))
    with pytest.raises(LookupError):
        pick(study)
    assert summarize(study, RunSettings(budget=2000), storage, top=3) == 1
    assert "no candidate finished the top rung" in capsys.readouterr().out


def test_among_multi_layer_baselines_the_search_order_decides_not_flops(tmp_path):
    storage = f"sqlite:///{tmp_path}/f.db"
    study = optuna.create_study(storage=storage, study_name="f")
    for key, value in {"eta": 3, "rungs": 3, "budget": 2000, "plateau_loss": PLATEAU}.items():
        study.set_user_attr(key, value)
    # 200 MFLOPs' case: 8 x 32 has more FLOPs but was ranked below 3 x 64 (cut on rung 0)
    study.add_trial(_trial((2.30, 2), depth=3, flops=1860, seeded=True, d_model=64))
    study.add_trial(_trial((2.90, 0), depth=8, flops=1900, seeded=True, d_model=32))
    study.add_trial(_trial((2.25, 2), depth=8, flops=1450))  # the search's first, on the plateau
    assert [t.number for t in seeded_baselines(study)] == [0, 1]
    assert pick(study).trial.number == 0


def test_candidates_within_the_tie_margin_on_the_picks_rung_are_named_as_tied(capsys, tmp_path):
    """2% of the pick's 2.15 is 0.043: 2.19 (seeded) and 2.11 tie with it, 2.20 does not, nor
    does 2.16 one rung lower."""
    assert TIE_MARGIN == 0.02
    storage = f"sqlite:///{tmp_path}/t.db"
    study = optuna.create_study(storage=storage, study_name="t")
    for key, value in {"eta": 3, "rungs": 3, "budget": 2000, "task_metric": "bits"}.items():
        study.set_user_attr(key, value)
    study.add_trial(_trial((2.19, 2), depth=3, flops=1650, seeded=True, d_model=256))  # 0
    study.add_trial(_trial((2.15, 2), depth=2, flops=1280))  # 1
    study.add_trial(_trial((2.20, 2), depth=2, flops=1200))  # 2
    study.add_trial(_trial((2.16, 1), depth=2, flops=1100))  # 3
    chosen = pick(study)
    assert chosen.trial.number == 1
    assert [t.number for t in tied_with(study, chosen)] == [0]
    study.add_trial(_trial((2.11, 2), depth=4, flops=1000))  # 4: the first now; 1 ties with it
    chosen = pick(study)
    assert chosen.trial.number == 4 and [t.number for t in tied_with(study, chosen)] == [1]
    assert summarize(study, RunSettings(budget=2000), storage, top=5) == 0
    assert (
        "note: tied with the pick on its rung, within 2% of its val loss 2.1100 (the spread "
        "between training seeds): trial 1 (window, 2 layers x 64) 2.1500. Their order at this "
        "length is not evidence" in capsys.readouterr().out
    )


def test_a_tie_with_a_seeded_baseline_says_so_and_no_tie_prints_nothing(tmp_path):
    study, storage = _study(tmp_path, first_loss=2.15)  # seeded 2.37 and 2.39 are 10% behind
    assert tied_with(study, pick(study)) == [] and tie_note(study, pick(study)) is None
    assert "tied with the pick" not in study_note(study, [], storage)
    (tmp_path / "close").mkdir()
    close, storage = _study(tmp_path / "close", first_loss=2.35)  # on the plateau: pick trial 1
    note = tie_note(close, pick(close))
    assert note is not None
    assert (
        "trial 3 (window, 1 layers x 64) 2.3500; trial 0 (full, 1 layers x 512) 2.3700, a "
        "seeded hand baseline." in note
    )
    # the dashboard's study note carries it too, after the fallback note
    dash = study_note(close, [], storage)
    assert dash.index("**the search's first, trial 3") < dash.index("**tied with the pick")


def _rungs(values: list[float], stopped: bool = True, seeded: bool = False, **extra):
    """A candidate with these losses on rungs 0, 1, ...: cut by the halving after the last
    (`stopped`), or through the top rung (3 values)."""
    rung = len(values) - 1
    done = rung == 2
    attrs = {
        "status": "ok" if done else "stopped",
        "loss": values[-1],
        "metric": values[-1],
        "rung": rung,
        "flops": 1000,
        "config": ArchConfig(256, 64, True, depth=6, d_model=192, n_heads=6).to_dict(),
        "variant": "full",
        "d_model": 192,
        "tokens": 100 * 3**rung,
        **({"seeded": "baseline"} if seeded else {}),
        **extra,
    }
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED,
        value=values[-1] if done else None,
        intermediate_values={3**r: v for r, v in enumerate(values)},
        user_attrs=attrs,
    )


def test_candidates_cut_while_ahead_of_the_pick_on_their_rung_are_named(capsys, tmp_path):
    """The third default run of 2026-12-07: the seeded 6x192 h6 was cut at rung 1 with 2.0233,
    ahead of the pick's 2.0400 there (promoted on arrival), and ended 0.064 ahead of it."""
    from search.asha import promote
    from search.plateau import passed_over, passed_over_note

    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(storage=storage, study_name="o")
    for key, value in {"eta": 3, "rungs": 3, "budget": 2000, "task_metric": "bits"}.items():
        study.set_user_attr(key, value)
    study.add_trial(_rungs([2.40, 2.04, 1.57], seeded=True))  # 0: the pick
    study.add_trial(_rungs([2.50, 2.10, 1.60]))  # 1: top rung, behind; projects behind too
    assert passed_over_note(study, pick(study)) is None  # nobody cut ahead of the pick
    study.add_trial(_rungs([2.41, 2.0233], seeded=True))  # 2: cut at rung 1, ahead: named
    study.add_trial(_rungs([2.38, 2.05]))  # 3: cut at rung 1 behind the pick's 2.04
    study.add_trial(_rungs([2.39]))  # 4: cut at rung 0, ahead of the pick's 2.40: named
    study.add_trial(_rungs([2.45]))  # 5: cut at rung 0, behind
    study.add_trial(_rungs([2.30, 2.00], time_limited="the time limit"))  # 6: not the halving
    chosen = pick(study)
    assert chosen.trial.number == 0
    got = [(t.number, rung, ours) for t, rung, ours in passed_over(study, chosen)]
    assert got == [(2, 1, 2.04), (4, 0, 2.40)]  # the nearest rung first
    assert summarize(study, RunSettings(budget=2000), storage, top=5) == 0
    assert (
        "note: cut by the halving though ahead of the pick where they stopped: trial 2 (full, "
        "6 layers x 192) 2.0233 at rung 1 (the pick: 2.0400), a seeded hand baseline; trial 4 "
        "(full, 6 layers x 192) 2.3900 at rung 0 (the pick: 2.4000). The halving promotes "
        "early arrivals on the best so far (search/asha.py)" in capsys.readouterr().out
    )
    assert "cut by the halving though ahead of the pick" in study_note(study, [], storage)
    study.add_trial(_rungs([2.36]))  # 7
    study.add_trial(_rungs([2.37]))  # 8: four are ahead now; the note names the best three
    note = passed_over_note(study, pick(study))
    assert note is not None and "trial 4" not in note
    assert "; trial 7 (full, 6 layers x 192) 2.3600 at rung 0 (the pick: 2.4000); trial 8" in note
    assert "trial 8 (full, 6 layers x 192) 2.3700 at rung 0 (the pick: 2.4000) and 1 more." in note
    promote(study, study.trials[7], 0)  # promoted late, not run yet (--timeout ended first)
    got = [t.number for t, _, _ in passed_over(study, pick(study))]
    assert got == [2, 8, 4]  # trial 7 was promoted: not "cut", though its copy has not run
