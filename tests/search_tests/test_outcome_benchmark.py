"""benchmarks.outcome's command line: a replicate's seed."""

from __future__ import annotations

import pytest

from benchmarks.outcome import parser


def test_train_seed_defaults_to_the_studys_and_rejects_a_negative_one(capsys):
    assert parser().parse_args(["--study", "s"]).train_seed is None
    assert parser().parse_args(["--study", "s", "--train-seed", "1"]).train_seed == 1
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--study", "s", "--train-seed", "-1"])
    assert exit_info.value.code == 2
    assert "invalid --train-seed '-1': expected a whole number >= 0" in capsys.readouterr().err
