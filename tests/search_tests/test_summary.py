"""The end-of-run report says why candidates failed, not only the database."""

from __future__ import annotations

import optuna

from search.results import at_chance_by_rung, first_rung_advice
from search.settings import RunSettings
from search.summary import MAX_FAILED_SHOWN, summarize


def test_diverged_candidates_are_reported_with_their_reason(capsys, tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    for i in range(MAX_FAILED_SHOWN + 2):
        attrs = {"status": "diverged", "reason": f"non-finite training loss at step {i + 3}"}
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL, user_attrs={**attrs, "variant": "full"}
            )
        )
    code = summarize(study, RunSettings(budget=10**6), f"sqlite:///{tmp_path}/s.db", top=3)
    out = capsys.readouterr().out
    assert code == 1  # no pick
    assert "trial 0 diverged: non-finite training loss at step 3 (full)" in out
    assert "... and 2 more failed" in out


def _candidate(rung_losses: list[float], number_of_rungs: int = 3) -> optuna.trial.FrozenTrial:
    """A trained candidate that reached len(rung_losses) - 1 (eta 3: reported at 1, 3, 9)."""
    done = len(rung_losses) == number_of_rungs
    cfg = {"depth": 1, "d_model": 32, "attention": "full", "attention_params": {}}
    return optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.PRUNED,
        value=rung_losses[-1] if done else None,
        intermediate_values={3**r: loss for r, loss in enumerate(rung_losses)},
        user_attrs={
            "status": "ok",
            "loss": rung_losses[-1],
            "metric": 0.1,
            "rung": len(rung_losses) - 1,
            "flops": 1000,
            "config": cfg,
            "variant": "full",
            "d_model": 32,
            "tokens": 100,
        },
    )


def _study_with(
    tmp_path, losses: list[list[float]], chance: float | None = 2.25, schedule: bool = False
):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    if schedule:  # rungs of 64, 192 and 576 tokens
        study.set_user_attr(
            "schedule", {"first_steps": 4, "batch_size": 2, "seq_len": 8, "eta": 3, "rungs": 3}
        )
    for key, value in {"eta": 3, "rungs": 3, "budget": 10**6, "task_metric": "accuracy"}.items():
        study.set_user_attr(key, value)
    if chance is not None:
        study.set_user_attr("chance_loss", chance)
    for rung_losses in losses:
        study.add_trial(_candidate(rung_losses))
    return study


def test_rungs_that_ranked_candidates_at_the_chance_loss_are_named(capsys, tmp_path):
    # ListOps' plateau: 2.2512 nats is its best constant guess; a loss within 2% is at chance
    losses = [[2.29, 2.28, 1.89], [2.30, 2.25, 2.14], [2.27], [2.21], [2.15]]
    study = _study_with(tmp_path, losses)
    assert at_chance_by_rung(study) == [(0, 4, 5), (1, 2, 2)]  # 2.21 >= 0.98 x 2.25 = 2.205 > 2.15
    code = summarize(study, RunSettings(budget=10**6), f"sqlite:///{tmp_path}/s.db", top=3)
    out = capsys.readouterr().out
    assert code == 0
    assert "note: candidates still at the chance loss (2.2500 nats" in out
    assert "(rung 0: 4 of 5; rung 1: 2 of 2)" in out and "raise --timeout or --rung-tokens" in out


def test_under_the_hold_rule_the_note_counts_the_cuts_instead(capsys, tmp_path):
    # the default rule: a rung that ranks mostly at-chance candidates cuts nobody
    study = _study_with(tmp_path, [[2.29, 2.28, 1.89], [2.30, 2.25, 2.14], [2.27], [2.15]])
    study.set_user_attr("cut_at_chance", False)
    # one stopped on rung 0 all the same: cut early, before the rung was mostly at chance
    stopped = _candidate([2.21])
    stopped.user_attrs["status"] = "stopped"
    study.add_trial(stopped)
    assert at_chance_by_rung(study) == [(0, 4, 5), (1, 2, 2)]
    summarize(study, RunSettings(budget=10**6), f"sqlite:///{tmp_path}/s.db", top=3)
    out = capsys.readouterr().out
    assert "(rung 0: 4 of 5, 1 cut; rung 1: 2 of 2, 0 cut); a rung cuts nobody while" in out
    assert "--cut-at-chance cuts anyway" in out and "those cuts were noise" not in out


def test_no_chance_note_when_the_rungs_rank_learning_models(capsys, tmp_path):
    losses = [[2.0, 1.9, 1.8], [2.1, 1.95, 1.85], [2.2], [2.3], [2.4]]  # rung 0: 2 of 5 stuck
    study = _study_with(tmp_path, losses)
    assert summarize(study, RunSettings(budget=10**6), "sqlite:///x.db", top=3) == 0
    assert "chance loss" not in capsys.readouterr().out


def test_a_study_without_a_chance_loss_gets_no_note(capsys, tmp_path):
    (tmp_path / "old").mkdir()
    study = _study_with(tmp_path / "old", [[2.3, 2.3, 2.3]] * 3, chance=None)
    assert at_chance_by_rung(study) == []
    assert summarize(study, RunSettings(budget=10**6), "sqlite:///x.db", top=3) == 0
    out = capsys.readouterr().out
    assert "top candidates" in out and "chance loss" not in out


def test_the_note_names_the_first_rung_where_most_had_left_chance(capsys, tmp_path):
    # rung 0: 4 of 5 at chance (>= 2.205); rung 1: 1 of 3; the top rung: 0 of 1
    losses = [[2.29, 2.10, 1.89], [2.30, 2.15], [2.27, 2.22], [2.21], [2.15]]
    study = _study_with(tmp_path, losses, schedule=True)
    assert at_chance_by_rung(study, top=True) == [(0, 4, 5), (1, 1, 3), (2, 0, 1)]
    assert first_rung_advice(study) == (192, 1)  # rung 1's 192 tokens, 3x the first rung
    summarize(study, RunSettings(budget=10**6), f"sqlite:///{tmp_path}/s.db", top=3)
    out = capsys.readouterr().out
    assert "(rung 0: 4 of 5); those cuts were noise." in out
    assert "most had left it by rung 1 (192 tokens): a first rung of --rung-tokens 192" in out
    assert "(3x this run's training per candidate)" in out


def test_the_note_asks_for_more_than_the_top_rung_when_no_rung_left_chance(capsys, tmp_path):
    losses = [[2.29, 2.28, 2.27], [2.30, 2.25, 2.26], [2.27], [2.21], [2.15]]
    study = _study_with(tmp_path, losses, schedule=True)
    assert first_rung_advice(study) == (3 * 576, None)
    summarize(study, RunSettings(budget=10**6), f"sqlite:///{tmp_path}/s.db", top=3)
    out = capsys.readouterr().out
    assert "most were still at it on the top rung (576 tokens)" in out
    assert "--rung-tokens 1728 should rank them (27x" in out


def test_no_advice_when_no_rung_ranked_mostly_at_chance(tmp_path):
    losses = [[2.0, 1.9, 1.8], [2.1, 1.95, 1.85], [2.2], [2.3], [2.4]]
    assert first_rung_advice(_study_with(tmp_path, losses, schedule=True)) is None
