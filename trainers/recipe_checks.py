"""What each field of `trainers.proxy.Recipe` may hold, checked when a recipe is made.

A preset's [recipe] table reaches `Recipe` unchecked by TOML, so a negative batch or a
warm-up of 2 would otherwise start a search that fails (or trains nonsense) minutes later.
`check_recipe` raises one `ValueError` naming the key, what it holds and what it should hold;
the CLIs turn that into exit 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _int(v) and v >= low), f"an integer >= {low}"


def _fraction(low_open: bool = False, high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
    def ok(v: Any) -> bool:
        return _num(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    return ok, f"a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}"


def _betas(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and len(v) == 2 and all(_num(b) and 0 <= b < 1 for b in v)


# field -> (accepts the value, what the message says it must be)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "steps": _int_at_least(1),
    "batch_size": ((lambda v: v is None or (_int(v) and v >= 1)), "an integer >= 1, or unset"),
    "max_batch_size": _int_at_least(1),
    "base_lr": ((lambda v: _num(v) and 0 < v < math.inf), "a finite number > 0, e.g. 2e-3"),
    "lr_batch_tokens": _int_at_least(0),
    "lr_width_power": ((lambda v: _num(v) and 0 <= v <= 2), "a number in [0, 2], e.g. 0.5 or 1"),
    "warmup_frac": _fraction(),
    "final_lr_frac": _fraction(),
    "weight_decay": ((lambda v: _num(v) and 0 <= v < math.inf), "a finite number >= 0"),
    "betas": (_betas, "two numbers in [0, 1), e.g. [0.9, 0.98]"),
    "grad_clip": ((lambda v: _num(v) and v > 0), "a number > 0 (inf: no clipping)"),
    "n_evals": _int_at_least(1),
    "eval_batch_size": _int_at_least(1),
    "intermediate_val_fraction": _fraction(low_open=True),
    "batch_tokens": _int_at_least(1),
    "wsd_warmup_frac": _fraction(low_open=True),
    "decay_frac": _fraction(high_open=True),
    "val_tokens": _int_at_least(1),
}


def check_recipe(values: dict[str, Any]) -> None:
    """Raise ValueError for the first field of `values` that its check refuses."""
    for name, value in values.items():
        accepts, must_be = CHECKS[name]
        if not accepts(value):
            raise ValueError(f"recipe: {name} must be {must_be}, got {value!r}")
