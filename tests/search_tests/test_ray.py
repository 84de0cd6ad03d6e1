"""The Ray Tune backend: same study, objective and budget rule as the Optuna backend.

The unit tests of the worker side (`run_trial`, `TuneTrial`) and the "Ray not installed" test do
not need Ray; the end-to-end runs do (`pytest.importorskip("ray")`) and are marked slow: each
starts a local Ray instance (about 10-20 s on a small machine).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from search.budget import parse_flops
from search.objective import Objective, TrialFailed
from search.settings import build_settings, load_preset
from tests.search_tests.conftest import ROOT, TINY_BUDGET, run_cli, search_args

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SMALL = {  # a config of the tiny space well within TINY_BUDGET
    "attention": "full",
    "depth": 1,
    "n_heads": 1,
    "head_dim": 8,
    "ffn_mult": 1.0,
    "sharing": "none",
}


def tiny_settings(preset):
    return build_settings(load_preset(preset), {"budget": parse_flops(TINY_BUDGET)})


def asked(study: optuna.Study, params: dict) -> optuna.Trial:
    study.enqueue_trial(params)
    return study.ask()


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def assert_sound(study: optuna.Study) -> None:
    """What the Optuna backend guarantees, checked on a study the Ray backend wrote."""
    budget = parse_flops(TINY_BUDGET)
    for t in study.get_trials():
        a = t.user_attrs
        assert t.state != TrialState.RUNNING
        if t.state == TrialState.COMPLETE:
            assert {"config", "flops", "flop_convention", "params", "metric", "status"} <= set(a)
            assert a["flops"] <= budget and a["status"] == "ok"
            assert math.isfinite(t.value) and 0 <= t.value <= 1
            assert t.value == a["metric"]
        if a.get("flops", 0) > budget:
            assert t.state == TrialState.PRUNED and a["status"] == "over_budget"
            assert "over budget" in a["reason"]
        if a.get("status") == "stopped":
            assert t.state == TrialState.PRUNED and a["reason"]
    numbers = [t.number for t in study.get_trials()]
    assert numbers == list(range(len(numbers)))


# ---- worker side, no Ray needed ---------------------------------------------------------------


def test_run_trial_reports_all_but_the_final_point_and_completes(tiny_preset):
    from search.ray_backend import run_trial

    settings = tiny_settings(tiny_preset)
    study = optuna.create_study(direction="maximize")
    trial = asked(study, SMALL)
    sent = []
    state = run_trial(study, trial._trial_id, Objective(settings, threads=1), sent.append)
    frozen = study.trials[0]
    assert state == TrialState.COMPLETE == frozen.state
    assert frozen.user_attrs["status"] == "ok" and frozen.value == frozen.user_attrs["metric"]
    # Tune (and so ASHA) sees every validation point except the final one.
    assert len(sent) == len(frozen.intermediate_values) - 1 >= 1
    assert all(0 < m["fraction"] < 1 for m in sent)
    assert [m["step"] for m in sent] == sorted(frozen.intermediate_values)[:-1]
    # A trial already told (e.g. a Tune retry of it) is left alone.
    assert run_trial(study, trial._trial_id, Objective(settings, threads=1), sent.append) is None


class Diverges(Objective):
    def __call__(self, trial):
        self.suggest(trial)
        raise TrialFailed("diverged: non-finite training loss at step 3")


class ReturnsNaN(Objective):
    def __call__(self, trial):
        self.suggest(trial)
        return float("nan")


class OverBudget(Objective):
    def __call__(self, trial):
        raise optuna.TrialPruned("over budget")


@pytest.mark.parametrize(
    "objective, state",
    [(Diverges, TrialState.FAIL), (ReturnsNaN, TrialState.FAIL), (OverBudget, TrialState.PRUNED)],
)
def test_run_trial_never_completes_failed_or_nan_trials(tiny_preset, objective, state):
    from search.ray_backend import run_trial

    study = optuna.create_study(direction="maximize")
    trial = asked(study, SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna warns when it fails a NaN value
        told = run_trial(study, trial._trial_id, objective(tiny_settings(tiny_preset)), print)
    assert told == state == study.trials[0].state
    if objective is Diverges:
        assert "diverged" in study.trials[0].system_attrs["fail_reason"]


def test_ray_backend_without_ray_exits_2_with_install_command(tmp_path, tiny_preset):
    """Run the CLI with `import ray` blocked, whether or not Ray is installed here."""
    storage = f"sqlite:///{tmp_path}/noray.db"
    args = [*search_args(tiny_preset, storage, "noray", 2), "--backend", "ray"]
    code = textwrap.dedent(
        f"""
        import sys

        class BlockRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
                return None

        sys.meta_path.insert(0, BlockRay())
        from search.run import main

        sys.exit(main({args!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install -e '.[ray]'" in proc.stderr
    assert not (tmp_path / "noray.db").exists()  # refused before creating anything


# ---- end to end on a local Ray instance --------------------------------------------------------


@pytest.mark.slow
def test_ray_backend_runs_resumes_and_alternates_with_optuna(tmp_path, tiny_preset):
    """One study: `--backend ray` for 4 trials, `--backend optuna` to 5, then the first command
    again with `--trials 6` resumes it to 6. Two Ray starts in all, to keep the suite short."""
    pytest.importorskip("ray")
    storage = f"sqlite:///{tmp_path}/r.db"
    first = run_cli(
        "search.run", *search_args(tiny_preset, storage, "ray", 4, "--backend", "ray"), check=True
    )
    assert "top configs" in first.stdout
    study = load(storage, "ray")
    trials = study.get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == 4 == len(trials)
    assert [t for t in trials if t.state == TrialState.COMPLETE]
    assert_sound(study)
    assert (tmp_path / "ray_results").is_dir()  # Tune's folders next to the study file
    assert not (ROOT / "ray_results").exists()

    run_cli("search.run", *search_args(tiny_preset, storage, "ray", 5), check=True)
    assert len(load(storage, "ray").get_trials(states=FINISHED)) == 5

    run_cli(
        "search.run", *search_args(tiny_preset, storage, "ray", 6, "--backend", "ray"), check=True
    )
    study = load(storage, "ray")
    assert len(study.get_trials(states=FINISHED)) == 6 == len(study.get_trials())
    assert_sound(study)
