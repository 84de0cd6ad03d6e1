"""A study keeps the positions its models were trained with, before and after `positions`."""

from __future__ import annotations

import dataclasses

import pytest

from search.objective import make_task
from search.settings import RunSettings
from search.study import StudyMismatch, open_study, settings_from_study
from spaces.space import SearchSpace


def _old_study(url: str):
    """A study as made before `positions` existed: its stored space has no such key."""
    settings = RunSettings(budget=10**6, task="recall", space=SearchSpace(positions="learned"))
    study = open_study(settings, "old", url, make_task(settings))
    assert "positions" not in study.user_attrs["identity"]["space"]
    return study


def test_a_new_study_stores_and_rebuilds_rotary_positions(tmp_path):
    settings = RunSettings(budget=10**6, task="recall")
    study = open_study(settings, "new", f"sqlite:///{tmp_path}/s.db", make_task(settings))
    assert study.user_attrs["identity"]["space"]["positions"] == "rope"
    assert settings_from_study(study).space.positions == "rope"


def test_an_old_study_rebuilds_learned_positions_and_resumes_only_with_them(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = _old_study(url)
    assert settings_from_study(study).space.positions == "learned"
    rope = RunSettings(budget=10**6, task="recall")
    with pytest.raises(StudyMismatch, match="positions: study has 'learned', this run 'rope'"):
        open_study(rope, "old", url, make_task(rope))
    learned = dataclasses.replace(rope, space=SearchSpace(positions="learned"))
    assert open_study(learned, "old", url, make_task(learned)).study_name == "old"
