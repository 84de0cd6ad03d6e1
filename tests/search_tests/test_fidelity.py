"""`python -m search.fidelity`: proxy vs long-run ranking on a tiny real study (seconds)."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from scipy import stats

from search import fidelity
from search.budget import parse_flops
from search.driver import optimize
from search.fidelity_stats import default_k, fidelity_stats, verdict
from search.objective import Objective, make_task
from search.results import feasible_trials
from search.settings import build_settings, load_preset
from search.study import open_study
from tests.search_tests.conftest import TINY_BUDGET, TINY_PRESET, run_cli
from trainers.rungs import RungSchedule

PROXY_COMPUTE = 50_000_000  # a third of the tiny preset's, to keep the module fast


def _settings(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    path.write_text(TINY_PRESET)
    flags = {"budget": parse_flops(TINY_BUDGET), "proxy_compute": PROXY_COMPUTE, "pruner": "none"}
    return build_settings(load_preset(path), flags)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A real tiny study of 6 trials (some may be over budget), built in this process."""
    import torch

    threads = torch.get_num_threads()
    storage = f"sqlite:///{tmp_path_factory.mktemp('db')}/s.db"
    settings = _settings(tmp_path_factory)
    task = make_task(settings)
    schedule = RungSchedule(first_steps=2, batch_size=8, seq_len=task.seq_len)
    study = open_study(settings, "tiny", storage, task, schedule=schedule)
    optimize(study, Objective(settings, schedule, threads=1), 6)
    torch.set_num_threads(threads)
    assert len(feasible_trials(study)) >= 4, "the tiny study needs 4 completed trials"
    return storage


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _same(stored: float | None, expected: float | None) -> bool:
    """A stored statistic equals scipy's (both None where scipy gives nan)."""
    if expected is None:
        return stored is None
    return stored == pytest.approx(expected)


def test_cli_stores_long_metrics_and_scipy_statistics(tiny_study, capsys):
    storage = tiny_study
    args = ["--study", "tiny", "--storage", storage, "--top", "2", "--random", "2"]
    proc = run_cli("search.fidelity", *args, "--factor", "2", check=True)
    assert "Kendall tau" in proc.stdout and "verdict:" in proc.stdout

    study = optuna.load_study(study_name="tiny", storage=storage)
    fid = study.user_attrs["fidelity"]
    best_two = [t.number for t in feasible_trials(study)[:2]]
    retrained = fid["trials"]
    assert len(retrained) == 4 and set(best_two) <= set(retrained)
    assert [c for n, c in zip(retrained, fid["chosen"]) if n in best_two] == ["top", "top"]
    by_number = {t.number: t for t in study.get_trials()}
    for number, t in by_number.items():
        a = t.user_attrs
        if number in retrained:
            # the study ranks by validation loss, so the long runs report their loss too
            assert a["long_status"] == "ok" and 0.0 < a["long_metric"] < 10.0
            # the user's training: 2x the tokens the search judged it on, not equal compute
            assert a["long_factor"] == 2.0 and a["long_tokens"] == 2 * a["tokens"]
            assert "long_compute" not in a
        else:
            assert "long_metric" not in a and "long_factor" not in a

    # recompute from the database: trial values vs stored long-run metrics
    proxy = [by_number[n].value for n in retrained]
    long = [by_number[n].user_attrs["long_metric"] for n in retrained]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when one side is constant (nan result)
        tau = _nan_to_none(stats.kendalltau(proxy, long).statistic)
        rho = _nan_to_none(stats.spearmanr(proxy, long).statistic)
    assert _same(fid["kendall_tau"], tau) and _same(fid["spearman_rho"], rho)
    assert fid["k"] == 2 and fid["n"] == 4 and fid["direction"] == "minimize"
    assert fid["verdict"] == verdict(fid["kendall_tau"])
    assert fid["proxy_metrics"] == proxy and fid["long_metrics"] == long

    # a second run reuses the stored long runs (same factor) and gives the same statistics
    assert fidelity.main([*args, "--factor", "2"]) == 0
    assert "stored" in capsys.readouterr().out
    again = optuna.load_study(study_name="tiny", storage=storage).user_attrs["fidelity"]
    assert {k: v for k, v in again.items() if k != "when"} == {
        k: v for k, v in fid.items() if k != "when"
    }


@pytest.mark.parametrize(
    "tau, start",
    [
        (1.0, "trustworthy"),
        (0.6, "trustworthy"),  # boundary: >= 0.6
        (0.5999, "rough guide"),
        (0.45, "rough guide"),
        (0.3, "rough guide"),  # boundary: >= 0.3
        (0.2999, "not trustworthy"),
        (0.0, "not trustworthy"),
        (-0.8, "not trustworthy"),
        (None, "undefined"),
        (float("nan"), "undefined"),
    ],
)
def test_verdict_thresholds(tau, start):
    text = verdict(tau)
    assert text.startswith(start)
    if start != "trustworthy":
        assert "--" in text  # says what to do: --timeout, --rung-tokens / --random
        assert "--proxy-compute" not in text  # it lengthens the long runs, not the rungs


def test_a_low_tau_hint_asks_for_longer_rungs(capsys):
    import argparse

    from search.fidelity import print_report

    f = {
        "proxy_compute": 30 * 10**9,
        "long_compute": 120 * 10**9,
        "metric": "val_loss",
        "kendall_tau": 0.2,
        "kendall_p": 0.5,
        "spearman_rho": 0.3,
        "spearman_p": 0.5,
        "top_k_overlap": 0.5,
        "proxy_pick_long_rank": 3,
        "verdict": verdict(0.2),
        "first_rung_tokens": 65536,
    }
    args = argparse.Namespace(storage="sqlite:///x.db")
    print_report(args, f, "minimize", 2, 8)
    out = capsys.readouterr().out
    assert "give a new study longer rungs: a longer --timeout, or --rung-tokens 196608" in out
    print_report(args, {**f, "first_rung_tokens": None}, "minimize", 2, 8)
    assert "a longer --timeout, or a larger --rung-tokens" in capsys.readouterr().out


def test_fidelity_stats_hand_example():
    proxy = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    long = [0.7, 0.9, 0.4, 0.8, 0.6, 0.5]
    s = fidelity_stats(proxy, long, "maximize", 3)
    # top-3 by proxy: {0, 1, 2}; by long run: {1 (0.9), 3 (0.8), 0 (0.7)} -> overlap {0, 1}
    assert s["top_k_overlap"] == pytest.approx(2 / 3)
    assert s["proxy_pick_long_rank"] == 3  # trial 0 is third after the long run
    assert s["kendall_tau"] == pytest.approx(stats.kendalltau(proxy, long).statistic)
    assert s["spearman_rho"] == pytest.approx(stats.spearmanr(proxy, long).statistic)
    assert (s["n"], s["k"]) == (6, 3)

    # minimize (e.g. bits per byte): top = lowest; the correlation is the same agreement
    m = fidelity_stats(proxy, long, "minimize", 2)
    # lowest 2 by proxy: {5, 4}; by long run: {2 (0.4), 5 (0.5)} -> overlap {5}
    assert m["top_k_overlap"] == pytest.approx(1 / 2)
    assert m["kendall_tau"] == pytest.approx(s["kendall_tau"])
    assert m["proxy_pick_long_rank"] == 2  # trial 5 is second lowest after the long run

    same = fidelity_stats(proxy, proxy, "maximize", 3)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["top_k_overlap"] == 1.0
    assert same["proxy_pick_long_rank"] == 1
    rev = fidelity_stats(proxy, proxy[::-1], "maximize", 3)
    assert rev["kendall_tau"] == pytest.approx(-1.0) and rev["top_k_overlap"] == 0.0

    # ties are broken by position: the first listed of equal values wins
    assert fidelity_stats([1.0, 1.0, 0.5], [0.2, 0.9, 0.5], "maximize", 1)["top_k_overlap"] == 0


def test_fidelity_stats_undefined_and_bad_input():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = fidelity_stats([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "maximize", 1)
    assert s["kendall_tau"] is None and s["spearman_rho"] is None
    for args in (
        ([1.0, 2.0], [1.0], "maximize", 1),
        ([1.0, 2.0], [1.0, 2.0], "maximize", 0),
        ([1.0, 2.0], [1.0, 2.0], "maximize", 3),
        ([1.0, 2.0], [1.0, 2.0], "up", 1),
        ([1.0, float("nan")], [1.0, 2.0], "maximize", 1),
    ):
        with pytest.raises(ValueError):
            fidelity_stats(*args)


def test_default_k():
    assert [default_k(5, 10), default_k(5, 4), default_k(2, 3), default_k(0, 6)] == [5, 2, 1, 1]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--factor", "0"], "--factor"),
        (["--factor", "1"], "--factor"),
        (["--factor", "nan"], "--factor"),
        (["--factor", "inf"], "--factor"),
        (["--top", "-1"], "--top"),
        (["--random", "two"], "--random"),
        (["--threads", "0"], "--threads"),
        (["--seed", "-3"], "--seed"),
        (["--device", "bogus"], "invalid --device 'bogus': expected cpu, cuda, cuda:N or mps"),
    ],
)
def test_bad_numbers_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        fidelity.main(["--study", "x", "--storage", "sqlite:///:memory:", *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_error_exits(tiny_study, tmp_path, tmp_path_factory, capsys):
    storage = tiny_study
    assert fidelity.main(["--study", "nope", "--storage", storage]) == 2
    assert "no study 'nope'" in capsys.readouterr().err

    few = ["--top", "1", "--random", "1"]
    assert fidelity.main(["--study", "tiny", "--storage", storage, *few]) == 2
    assert "at least 3" in capsys.readouterr().err

    other = f"sqlite:///{tmp_path}/few.db"
    settings = _settings(tmp_path_factory)
    study = open_study(settings, "few", other, make_task(settings))
    for value in (0.1, 0.2):  # two completed trials, no training needed
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, user_attrs={"flops": 1000})
        )
    assert fidelity.main(["--study", "few", "--storage", other]) == 2
    assert "2 completed trial(s)" in capsys.readouterr().err

    optuna.create_study(study_name="plain", storage=other)  # not made by search.run
    assert fidelity.main(["--study", "plain", "--storage", other]) == 2
    assert "identity" in capsys.readouterr().err

    scaled = optuna.create_study(study_name="few-scaled", storage=other)
    scaled.set_user_attr("kind", "scaled")
    scaled.set_user_attr("base_study", "few")
    assert fidelity.main(["--study", "few-scaled", "--storage", other]) == 2
    assert capsys.readouterr().err == (
        "error: 'few-scaled' is a scaled study (from 'few'); search.fidelity measures a search "
        "study: pass --study few\n"
    )


def test_hand_baseline_is_the_largest_that_fits():
    from benchmarks.search_quality import hand_baseline_config
    from spaces import ArchConfig
    from spaces.flops import count_flops
    from trainers.tasks import get_task

    interface = get_task("recall", seq_len=32, num_pairs=4, n_val=32).interface()
    budget = 3_000_000
    cfg = hand_baseline_config(interface, budget, max_depth=12, max_heads=16)
    assert cfg.attention == "full" and cfg.head_dim == 64 and cfg.ffn_mult == 4.0
    assert count_flops(cfg) <= budget
    grown = []
    if cfg.depth < 12:
        grown.append((cfg.depth + 1, cfg.n_heads))
    if cfg.n_heads < 16:
        grown.append((cfg.depth, cfg.n_heads + 1))
    assert grown, "the tiny budget should not reach the end of both ranges"
    for depth, heads in grown:
        bigger = ArchConfig(
            **interface, depth=depth, d_model=64 * heads, n_heads=heads, ffn_mult=4.0
        )
        assert count_flops(bigger) > budget
    with pytest.raises(ValueError, match="smallest needs"):
        hand_baseline_config(interface, 1000)


def test_benchmark_table_median_and_spread():
    from benchmarks.search_quality import Record, markdown, summary_rows

    cfg = {
        "vocab_size": 10,
        "seq_len": 16,
        "causal": True,
        "depth": 2,
        "d_model": 32,
        "n_heads": 2,
    }
    records = [
        Record("recall", "tpe", 0, 0.5, cfg, 10.0, 4),
        Record("recall", "tpe", 1, 0.7, cfg, 12.0, 5),
        Record("recall", "tpe", 2, 0.6, cfg, 11.0, 6),
        Record("recall", "variant:window", 0, 0.4, cfg),
        Record("recall", "variant:window", 2, None, None),
    ]
    rows = summary_rows(records, [0, 1, 2])
    tpe = rows[0]
    assert (tpe["median"], tpe["spread"], tpe["seeds"]) == ("0.6000", "0.5000-0.7000", "3/3")
    assert tpe["feasible"] == "5" and tpe["wall"] == "11"
    assert rows[1]["seeds"] == "1/3" and "window" in rows[1]["method"]
    text = markdown(
        rows,
        {
            "budget": 1e6,
            "proxy_compute": 1e8,
            "trials": 4,
            "seeds": [0, 1, 2],
            "threads": 1,
            "total_s": 1.0,
        },
    )
    assert text.count("\n| recall |") == 2 and "best val loss (median)" in text


def test_a_study_without_a_rung_schedule_keeps_equal_compute_long_runs(
    tmp_path, tmp_path_factory, capsys
):
    """Studies made before the rung evaluator were ranked by equal-compute proxy runs; their
    long runs stay equal compute (F x the proxy compute, trainers.proxy)."""
    from spaces import ArchConfig

    url = f"sqlite:///{tmp_path}/old.db"
    settings = _settings(tmp_path_factory)
    task = make_task(settings)
    study = open_study(settings, "old", url, task)  # no schedule stored
    assert study.user_attrs.get("schedule") is None
    for i, width in enumerate((8, 16, 16)):
        cfg = ArchConfig(**task.interface(), depth=1 + i % 2, d_model=width, n_heads=1)
        attrs = {"config": cfg.to_dict(), "flops": 1000, "variant": "full", "tokens": 4096}
        study.add_trial(create_trial(value=3.0 - 0.1 * i, user_attrs=attrs))
    assert fidelity.main(["--study", "old", "--storage", url, "--top", "3", "--random", "0"]) == 0
    out = capsys.readouterr().out
    assert "with 4 x the proxy compute = 200 MFLOPs training FLOPs each (equal compute" in out
    for t in optuna.load_study(study_name="old", storage=url).trials:
        a = t.user_attrs
        assert a["long_compute"] == 4 * PROXY_COMPUTE and "long_tokens" not in a
        assert a["long_status"] == "ok" and 0.0 < a["long_metric"] < 10.0


def test_a_long_run_that_cannot_start_fails_alone(tiny_study, monkeypatch, capsys):
    """A ValueError from one long run (e.g. a model too large for the device) marks that trial
    failed; the others train and the statistics use them."""
    from search import retrain

    calls: list[int] = []

    def train_config(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("model too large: training at batch 8 requires at least 9 GiB")
        return retrain.train_config(*args, **kwargs)

    monkeypatch.setattr("search.fidelity_runs.train_config", train_config)
    args = ["--study", "tiny", "--storage", tiny_study, "--top", "2", "--random", "2"]
    assert fidelity.main([*args, "--factor", "3"]) == 0
    out = capsys.readouterr().out
    assert "-> long failed [failed: model too large: training at batch 8" in out
    fid = optuna.load_study(study_name="tiny", storage=tiny_study).user_attrs["fidelity"]
    assert len(fid["failed_trials"]) == 1 and fid["n"] == 3
