"""`Recipe` refuses a value its field cannot hold, naming the key, when it is made."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from trainers.proxy import Recipe
from trainers.recipe_checks import CHECKS

# field -> (a value at the edge that is accepted, a value just past it that is refused)
EDGES = {
    "steps": (1, 0),
    "batch_size": (None, 0),
    "max_batch_size": (1, 0),
    "base_lr": (1e30, 0.0),
    "lr_batch_tokens": (0, -1),
    "lr_width_power": (2.0, 2.5),
    "warmup_frac": (0.0, 1.5),
    "final_lr_frac": (1.0, -0.1),
    "weight_decay": (0.0, math.inf),
    "betas": ((0.0, 0.999), (0.9, 1.0)),
    "grad_clip": (math.inf, 0.0),
    "n_evals": (1, 2.0),
    "eval_batch_size": (1, True),
    "intermediate_val_fraction": (1.0, 0.0),
    "batch_tokens": (1, 0),
    "wsd_warmup_frac": (1.0, 0.0),
    "decay_frac": (0.0, 1.0),
    "val_tokens": (1, "1024"),
}


def test_every_field_has_a_check_and_the_defaults_pass():
    assert set(CHECKS) == {f.name for f in dataclasses.fields(Recipe)} == set(EDGES)
    Recipe()


@pytest.mark.parametrize("name", sorted(EDGES))
def test_a_field_accepts_its_edge_and_refuses_just_past_it(name):
    good, bad = EDGES[name]
    assert getattr(Recipe(**{name: good}), name) == good
    refused = rf"^recipe: {name} must be .*, got {re.escape(repr(bad))}$"
    with pytest.raises(ValueError, match=refused):
        Recipe(**{name: bad})


def test_nan_is_refused_and_betas_from_toml_become_a_tuple():
    with pytest.raises(ValueError, match="recipe: base_lr must be"):
        Recipe(base_lr=math.nan)
    assert Recipe(betas=[0.8, 0.9]).betas == (0.8, 0.9)  # type: ignore[arg-type]
    assert dataclasses.replace(Recipe(), decay_frac=0.5).decay_frac == 0.5  # replace checks too
    with pytest.raises(ValueError, match="recipe: decay_frac"):
        dataclasses.replace(Recipe(), decay_frac=-1)
