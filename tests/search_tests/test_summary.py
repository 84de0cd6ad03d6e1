"""The end-of-run report says why candidates failed, not only the database."""

from __future__ import annotations

import optuna

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
