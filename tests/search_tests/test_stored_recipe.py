"""A study keeps the learning-rate rule it judged with, before and after the batch factor."""

from __future__ import annotations

import math

import pytest

from search.objective import make_task
from search.settings import RunSettings
from search.study import StudyMismatch, open_study, settings_from_study
from spaces import ArchConfig
from trainers.proxy import Recipe

CFG = ArchConfig(vocab_size=34, seq_len=64, causal=True, depth=1, d_model=64, n_heads=2)


def test_a_new_study_stores_the_batch_factor_and_rebuilds_it(tmp_path):
    settings = RunSettings(budget=10**6, task="recall")
    study = open_study(settings, "new", f"sqlite:///{tmp_path}/s.db", make_task(settings))
    assert study.user_attrs["identity"]["recipe"]["lr_batch_tokens"] == 4096
    recipe = settings_from_study(study).recipe
    assert recipe == Recipe() and recipe.lr_for(CFG, 1024) == 2e-3 * 2 * 0.5


def test_an_old_study_keeps_the_unscaled_rate_and_resumes_only_with_it(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    old = RunSettings(budget=10**6, task="recall", recipe=Recipe(lr_batch_tokens=0))
    study = open_study(old, "old", url, make_task(old))
    # stored as every study was before the field existed: without it
    assert "lr_batch_tokens" not in study.user_attrs["identity"]["recipe"]
    recipe = settings_from_study(study).recipe
    assert recipe.lr_batch_tokens == 0
    assert recipe.lr_for(CFG, 1024) == recipe.lr_for(CFG, 4096) == 2e-3 * math.sqrt(256 / 64)
    new = RunSettings(budget=10**6, task="recall")
    with pytest.raises(StudyMismatch, match=r"resumes with lr_batch_tokens = 0 in its preset"):
        open_study(new, "old", url, make_task(new))
    assert open_study(old, "old", url, make_task(old)).study_name == "old"


def test_the_width_power_is_stored_only_when_it_is_not_the_square_root(tmp_path):
    """Every study before the field was judged with the square root, and stored no power: a
    default study stores none either (so both resume), another power is stored and rebuilt."""
    url = f"sqlite:///{tmp_path}/s.db"
    default = RunSettings(budget=10**6, task="recall")
    study = open_study(default, "sqrt", url, make_task(default))
    assert "lr_width_power" not in study.user_attrs["identity"]["recipe"]
    assert settings_from_study(study).recipe.lr_width_power == 0.5
    linear = RunSettings(budget=10**6, task="recall", recipe=Recipe(lr_width_power=1.0))
    study = open_study(linear, "linear", url, make_task(linear))
    assert study.user_attrs["identity"]["recipe"]["lr_width_power"] == 1.0
    assert settings_from_study(study).recipe.lr_for(CFG, 4096) == 2e-3 * 256 / 64
    with pytest.raises(StudyMismatch):
        open_study(default, "linear", url, make_task(default))
