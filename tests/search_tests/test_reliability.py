"""Issue 14's defects, one test each: bad storage, bad numbers, read-only commands that create
nothing, and passwords never printed. Every failure is one line on stderr and exit 2."""

from __future__ import annotations

import json

import pytest

from search import export, fidelity, scale
from search import run as search_run
from search.settings import build_settings
from tests.search_tests.conftest import TINY_BUDGET, TINY_PRESET

PG_DOWN = "postgresql://user:s3cretpw@127.0.0.1:1/db"  # nothing listens on port 1


@pytest.fixture
def preset(tmp_path):
    def write(extra: str = "", drop: str = "") -> str:
        lines = [ln for ln in TINY_PRESET.splitlines() if not (drop and ln.startswith(drop))]
        path = tmp_path / "p.toml"
        path.write_text(extra + "\n" + "\n".join(lines))
        return str(path)

    return write


def one_line_exit_2(code: int, capsys, *expected: str) -> str:
    out = capsys.readouterr()
    assert code == 2, out.err
    assert out.err.count("\n") == 1 and "Traceback" not in out.err, out.err
    for text in expected:
        assert text in out.err
    assert "s3cretpw" not in out.err + out.out
    return out.err


def run_args(preset_path: str, storage: str, *extra: str) -> list[str]:
    return [
        "--budget",
        TINY_BUDGET,
        "--preset",
        preset_path,
        "--storage",
        storage,
        "--study",
        "s",
        "--trials",
        "1",
        "--timeout",
        "0",
        "--workers",
        "1",
        "--quiet",
        *extra,
    ]


def test_bad_storage_scheme_is_one_line(preset, capsys):
    code = search_run.main(run_args(preset(), "foo://x"))
    one_line_exit_2(code, capsys, "cannot open --storage foo://x")


@pytest.mark.parametrize(
    "module, args",
    [
        (search_run, None),
        (export, ["--study", "s"]),
        (scale, ["--study", "s", "--targets", "2MFLOPs"]),
        (fidelity, ["--study", "s"]),
    ],
)
def test_unreachable_postgres_is_one_line_without_the_password(module, args, preset, capsys):
    argv = run_args(preset(), PG_DOWN) if args is None else [*args, "--storage", PG_DOWN]
    one_line_exit_2(module.main(argv), capsys, "cannot open --storage postgresql://user:***@")


@pytest.mark.parametrize("module", [export, fidelity, scale])
def test_corrupt_database_is_one_line(module, tmp_path, capsys):
    db = tmp_path / "bad.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\x17" * 3000)
    argv = ["--study", "s", "--storage", f"sqlite:///{db}"]
    if module is scale:
        argv += ["--targets", "2MFLOPs"]
    one_line_exit_2(module.main(argv), capsys, "cannot open --storage sqlite:///")


@pytest.mark.parametrize("module", [export, fidelity, scale])
def test_a_mistyped_sqlite_path_creates_nothing(module, tmp_path, capsys):
    argv = ["--study", "s", "--storage", f"sqlite:///{tmp_path}/typo/x.db"]
    if module is scale:
        argv += ["--targets", "2MFLOPs"]
    one_line_exit_2(module.main(argv), capsys, "no study database at")
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    "extra, drop, message",
    [
        ("proxy_compute = -5", "proxy_compute", "proxy_compute must be a positive finite"),
        ("budget = 1e400", "", "budget must be a positive finite FLOP count, got inf"),
        ('seq_len = "abc"', "seq_len", "seq_len must be an integer, got 'abc'"),
        ('device = "tpu"', "", "--device 'tpu' is not cpu, cuda, cuda:N or mps"),
    ],
)
def test_preset_numbers_pass_the_flag_checks(preset, tmp_path, capsys, extra, drop, message):
    argv = run_args(preset(extra, drop), f"sqlite:///{tmp_path}/s.db")
    if extra.startswith("budget"):
        argv = argv[2:]  # the preset's budget only
    one_line_exit_2(search_run.main(argv), capsys, message)
    assert not (tmp_path / "s.db").exists()  # nothing written before the checks


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("lr_batch_tokens", "-1", "recipe: lr_batch_tokens must be an integer >= 0, got -1"),
        ("base_lr", '"abc"', "recipe: base_lr must be a finite number > 0, e.g. 2e-3, got 'abc'"),
        ("batch_tokens", "0", "recipe: batch_tokens must be an integer >= 1, got 0"),
        ("warmup_frac", "2.0", "recipe: warmup_frac must be a number in [0, 1], got 2.0"),
        ("betas", "[0.9]", "recipe: betas must be two numbers in [0, 1), e.g. [0.9, 0.98]"),
    ],
)
def test_a_bad_recipe_value_is_one_line_before_anything_is_written(
    preset, tmp_path, capsys, key, value, message
):
    path = preset(drop=key)
    with open(path, "a") as f:  # the preset ends in its [recipe] table
        f.write(f"\n{key} = {value}\n")
    one_line_exit_2(search_run.main(run_args(path, f"sqlite:///{tmp_path}/s.db")), capsys, message)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "tpu"], "--device 'tpu' is not cpu"),
        (["--top", "-1"], "--top must be >= 1"),
        (["--threads", "-2"], "--threads must be >= 1"),
    ],
)
def test_bad_run_flags_write_nothing(preset, tmp_path, capsys, flags, message):
    argv = run_args(preset(), f"sqlite:///{tmp_path}/s.db", *flags)
    one_line_exit_2(search_run.main(argv), capsys, message)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("top", ["0", "-1"])
def test_export_top_below_one_is_refused(tmp_path, capsys, top):
    argv = ["--study", "s", "--storage", f"sqlite:///{tmp_path}/x.db", "--top", top]
    one_line_exit_2(export.main(argv), capsys, "--top must be >= 1")


@pytest.mark.parametrize("bad", ["nan,1,1", "inf,1,1", "1,1"])
def test_non_finite_coefficients_are_a_usage_error(bad):
    with pytest.raises(SystemExit) as exc:
        scale.parser().parse_args(["--study", "s", "--targets", "2M", "--coefficients", bad])
    assert exc.value.code == 2


def test_settings_accept_numbers_and_strings_alike():
    a = build_settings({"budget": "2GFLOPs"}, {})
    b = build_settings({"budget": 2e9}, {})
    assert a.budget == b.budget == 2_000_000_000


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "5"], "different seed: study has 0, this run 5"),
        (["--sampler", "random"], "different sampler: study has 'tpe', this run 'random'"),
    ],
)
def test_resume_with_another_seed_or_sampler_is_refused(preset, tmp_path, capsys, flags, message):
    import optuna

    from search.objective import make_task
    from search.settings import load_preset
    from search.study import open_study

    path = preset()
    settings = build_settings(load_preset(path), {"budget": TINY_BUDGET})
    storage = f"sqlite:///{tmp_path}/s.db"
    open_study(settings, "s", storage, make_task(settings))  # as a first run creates it
    err = one_line_exit_2(search_run.main(run_args(path, storage, *flags)), capsys, message)
    assert "--study name" in err
    assert optuna.load_study(study_name="s", storage=storage).get_trials() == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"depth": 1_000_000}, "depth must be an integer in [1, 65,536], got 1000000"),
        ({"depth": 1000, "d_model": 65536, "n_heads": 512}, "model too large: training at batch"),
    ],
)
def test_search_train_refuses_absurd_sizes_before_allocating(tmp_path, capsys, change, message):
    from search import train

    cfg = {"vocab_size": 256, "seq_len": 64, "causal": True, "depth": 2, "d_model": 32}
    path = tmp_path / "big.json"
    path.write_text(json.dumps({**cfg, "n_heads": 2, **change}))
    out = tmp_path / "run"
    argv = [str(path), "--task", "text", "--tokens", "4096", "--out", str(out)]
    one_line_exit_2(train.main(argv), capsys, message)
    assert not out.exists()


def test_search_run_seq_len_beyond_the_limit_is_refused(preset, tmp_path, capsys):
    argv = run_args(preset(), f"sqlite:///{tmp_path}/s.db", "--seq-len", "5000000")
    one_line_exit_2(search_run.main(argv), capsys, "--seq-len must be in [8, 1,048,576]")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("module", [scale, fidelity])
def test_a_task_import_path_stored_in_the_database_is_not_imported(
    module, preset, tmp_path, capsys, monkeypatch
):
    from search.objective import make_task
    from search.settings import load_preset
    from search.study import open_study

    marker = tmp_path / "imported"
    (tmp_path / "evil_task_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Task: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = build_settings(load_preset(preset()), {"budget": TINY_BUDGET})
    storage = f"sqlite:///{tmp_path}/s.db"
    study = open_study(settings, "s", storage, make_task(settings))
    study.set_user_attr("identity", {**study.user_attrs["identity"], "task": "evil_task_mod:Task"})
    argv = ["--study", "s", "--storage", storage]
    argv += ["--targets", "5M"] if module is scale else []
    err = one_line_exit_2(module.main(argv), capsys, "--allow-task evil_task_mod:Task")
    assert "does not import code named in it" in err
    assert not marker.exists()
