"""`python -m search.train`: exported configs train for real; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.budget import count_arg
from search.train import main
from spaces import ArchConfig
from tests.search_tests.conftest import ROOT, guard
from trainers.tasks import get_task


@pytest.fixture
def export(tmp_path):
    """An export-shaped file (config + provenance) for a tiny recall task."""
    task = get_task("recall", seq_len=32, num_pairs=4, n_val=32)
    cfg = ArchConfig(**task.interface(), depth=1, d_model=32, n_heads=2, ffn_mult=2.0)
    path = tmp_path / "best.json"
    prov = {
        "task": "recall",
        "task_options": {"num_pairs": 4, "n_val": 32},
        "seed": 0,
        "schedule": {"batch_size": 8},
    }
    path.write_text(json.dumps({"config": cfg.to_dict(), "provenance": prov}))
    return path


def test_count_arg():
    assert [count_arg(x) for x in ("5M", "500k", "2.5e6", "7")] == [
        5_000_000,
        500_000,
        2_500_000,
        7,
    ]
    for bad in ("0", "-3", "5X", "lots"):
        with pytest.raises(Exception, match="expected a positive number"):
            count_arg(bad)


def test_trains_an_export_with_its_provenance(export, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([str(export), "--tokens", "2560", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "on recall for 2,560 tokens: 10 steps of 8 x 32" in text  # batch from provenance
    assert "ok: 2,560 tokens, val loss" in text
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "history.json"}
    # the same folder again without --resume is refused, and nothing is overwritten
    before = (out / "model.safetensors").read_bytes()
    assert main([str(export), "--tokens", "2560", "--out", str(out), "--quiet"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


def test_divergence_is_printed_with_its_reason(export, tmp_path, capsys):
    code = main(
        [str(export), "--tokens", "2560", "--out", str(tmp_path / "r"), "--lr", "1e30", "--quiet"]
    )
    assert code == 1
    assert "error: training diverged: non-finite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.json", "--tokens", "1k"], "config file 'missing.json' not found"),
        (
            ["{export}", "--tokens", "1k", "--task", "listops"],
            "error: the config's vocab_size=34, causal=True, num_classes=0 do not fit task "
            "'listops' (vocab_size 16, causal False, num_classes 10); pass the task it was "
            "searched on, e.g. --task recall\n",
        ),
        (["{export}", "--tokens", "1k", "--task", "nope"], "unknown task"),
        (["{export}", "--tokens", "1k", "--device", "cuda"], None),
        (["{export}", "--tokens", "1k", "--kd-weight", "0.3"], "need --teacher RUN_DIR"),
        (["{export}", "--tokens", "1k", "--teacher", "nowhere"], "is not a trained run (missing"),
    ],
)
def test_bad_input_is_one_line_exit_2(export, tmp_path, capsys, args, message):
    if message is None:  # --device cuda: refused only where no GPU is visible
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is visible")
        message = "no CUDA device"
    argv = [a.replace("{export}", str(export)) for a in args] + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_distils_from_a_trained_run_and_counts_its_compute(export, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    assert main([str(export), "--tokens", "2560", "--out", str(teacher), "--quiet"]) == 0
    alone = json.loads((teacher / "result.json").read_text())
    capsys.readouterr()
    out = tmp_path / "student"
    argv = [str(export), "--tokens", "2560", "--out", str(out), "--quiet", "--teacher"]
    assert main([*argv, str(teacher), "--kd-weight", "0.7", "--temperature", "3"]) == 0
    text = capsys.readouterr().out
    assert "kd-weight 0.7, temperature 3.0" in text and "forward counted" in text
    row = json.loads((out / "result.json").read_text())
    assert row["status"] == "ok" and row["teacher"]["kd_weight"] == 0.7
    # the same config as teacher and student: 3 forwards + 1 teacher forward per sequence
    assert row["train_flops"] == alone["train_flops"] * 4 / 3


def test_a_teacher_for_another_task_is_refused(export, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    cfg = ArchConfig.from_file(export)
    teacher.mkdir()
    cfg.replace(vocab_size=cfg.vocab_size + 1).to_file(teacher / "config.json")
    (teacher / "model.safetensors").write_bytes(b"")
    argv = [str(export), "--tokens", "1k", "--out", str(tmp_path / "s"), "--teacher", str(teacher)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not share the task's interface: vocab_size=" in err and err.count("\n") == 1


def one_line(capsys, message: str) -> str:
    """stderr is exactly one line and holds `message`; nothing was trained. Returns it."""
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "training" not in captured.out
    return captured.err


def tiny_config(path, **change) -> str:
    """A bare (provenance-free) recall config file at `path`."""
    task = get_task("recall", seq_len=32)
    cfg = ArchConfig(**task.interface(), depth=1, d_model=32, n_heads=2, ffn_mult=2.0)
    path.write_text(json.dumps({**cfg.to_dict(), **change}))
    return str(path)


@pytest.mark.parametrize(
    "extra, source",
    [
        (
            ["--batch-tokens", "1000000"],
            "--batch-tokens 1,000,000 = 31,250 sequences of 32 = 1,000,000 tokens",
        ),
        ([], "the export's batch = 8 sequences of 32 = 256 tokens"),
    ],
)
def test_tokens_less_than_one_batch_are_refused(export, tmp_path, capsys, extra, source):
    # before: --tokens 2048 --batch-tokens 1000000 trained 1,000,000 tokens in one step
    out = tmp_path / "run"
    tokens = "2048" if extra else "200"
    assert main([str(export), "--tokens", tokens, *extra, "--out", str(out), "--quiet"]) == 2
    count = f"{int(tokens):,}"
    one_line(
        capsys,
        f"error: --tokens {count} is less than one batch ({source}); raise --tokens or lower "
        "--batch-tokens\n",
    )
    assert not out.exists()


def test_tokens_less_than_the_default_batch_are_refused(tmp_path, capsys):
    config = tiny_config(tmp_path / "c.json")
    out = tmp_path / "run"
    assert main([config, "--task", "recall", "--tokens", "4000", "--out", str(out)]) == 2
    one_line(capsys, "(the default batch = 128 sequences of 32 = 4,096 tokens)")
    assert not out.exists()


def test_an_out_that_cannot_be_a_folder_is_refused_before_training(export, tmp_path, capsys):
    # before: a traceback at the first checkpoint, after training had started
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    argv = [str(export), "--tokens", "256", "--quiet", "--out"]
    assert main([*argv, str(afile)]) == 2
    one_line(capsys, f"error: --out {str(afile)!r} is a file; give a folder\n")
    under = afile / "sub" / "run"
    assert main([*argv, str(under)]) == 2
    one_line(capsys, f"error: cannot create --out {str(under)!r}: {str(afile)!r} is a file\n")
    assert afile.read_text() == "keep me"
    if Path("/proc/self").is_dir():  # Linux: nothing can be created in /proc
        assert main([*argv, "/proc/x"]) == 2
        one_line(capsys, "error: cannot create --out '/proc/x': No such file or directory\n")


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--device", "bogus", "invalid --device 'bogus': expected cpu, cuda or cuda:N"),
        ("--threads", "-1", "invalid --threads '-1': expected a whole number >= 1"),
        ("--threads", "0", "invalid --threads '0': expected a whole number >= 1"),
        ("--lr", "0", "invalid --lr '0': expected a finite number > 0, e.g. 3e-4"),
        ("--lr", "-1", "invalid --lr '-1': expected a finite number > 0, e.g. 3e-4"),
        ("--lr", "inf", "invalid --lr 'inf': expected a finite number > 0, e.g. 3e-4"),
        ("--lr", "nan", "invalid --lr 'nan': expected a finite number > 0, e.g. 3e-4"),
    ],
)
def test_bad_flag_values_are_usage_errors(export, tmp_path, capsys, flag, value, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main([str(export), "--tokens", "256", f"{flag}={value}", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: {message}\n" in err and "Traceback" not in err
    assert not out.exists()


def test_resume_without_a_run_is_refused(export, tmp_path, capsys):
    # before: --resume with nothing to continue silently started a new run
    argv = [str(export), "--tokens", "256", "--quiet", "--resume", "--out"]
    for out in (tmp_path / "missing", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        assert main([*argv, str(out)]) == 2
        one_line(
            capsys,
            f"error: --resume: no run in {str(out)!r} to continue; drop --resume to start a "
            "new run\n",
        )
    assert not (tmp_path / "missing").exists() and not any((tmp_path / "empty").iterdir())


@pytest.mark.parametrize(
    "flags, differs",
    [
        (["--tokens", "4096"], "--tokens (the checkpoint's run: 2,048; now 4,096)"),
        (["--batch-tokens", "512"], "--batch-tokens (the checkpoint's run: 256; now 512)"),
        (
            ["--seed", "3", "--lr", "1e-3"],
            "--lr (the checkpoint's run: default; now 0.001), "
            "--seed (the checkpoint's run: 0; now 3)",
        ),
    ],
)
def test_a_resume_with_other_flags_names_them_with_both_values(
    export, tmp_path, capsys, flags, differs
):
    # before: "differs in: steps, warmup", the trainer's internal names
    out = tmp_path / "run"
    argv = [str(export), "--out", str(out), "--quiet"]
    assert main([*argv, "--tokens", "2048"]) == 0
    before = (out / "train_state.pt").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--tokens", "2048", *flags, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: the checkpoint in {out} was written by a different run: it differs in "
        f"{differs}; resume with the same config and flags, or use a new --out\n"
    )
    assert (out / "train_state.pt").read_bytes() == before


def write_teacher(folder, cfg: ArchConfig, weights_cfg: ArchConfig | None = None) -> str:
    """A run folder with `cfg` as its config.json and `weights_cfg`'s (fresh) weights."""
    from safetensors.torch import save_file

    from spaces import build_model

    folder.mkdir()
    cfg.to_file(folder / "config.json")
    model = build_model(weights_cfg or cfg)
    save_file({k: v.clone() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return str(folder)


def test_a_teacher_with_junk_or_mismatched_weights_is_one_line(export, tmp_path, capsys):
    # before: a SafetensorError traceback; an error cut after "Error(s) in loading state_dict"
    cfg = ArchConfig.from_file(export)
    out = tmp_path / "student"
    argv = [str(export), "--tokens", "256", "--out", str(out), "--quiet", "--teacher"]
    junk = tmp_path / "junk"
    write_teacher(junk, cfg)
    (junk / "model.safetensors").write_bytes(b"garbage\n")
    assert main([*argv, str(junk)]) == 2
    one_line(capsys, f"error: --teacher {str(junk)!r}: model.safetensors is unreadable (")
    deeper = write_teacher(tmp_path / "deeper", cfg.replace(depth=2), cfg)
    assert main([*argv, deeper]) == 2
    err = one_line(
        capsys,
        f"error: --teacher {deeper!r}: its weights do not match its config.json (missing: "
        "blocks.1.",
    )
    assert err.endswith(" more)\n") and "unexpected" not in err  # two keys named, then a count
    wider = write_teacher(tmp_path / "wider", cfg.replace(d_model=64), cfg)
    assert main([*argv, wider]) == 2
    one_line(capsys, "(shape in the file vs config.json: ")
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("ls.json", b"\x7fELF\x02\x01\x01\xd0\xff", "{path}: not a UTF-8 JSON or YAML config"),
        (
            "list.json",
            b"[1, 2]",
            '{path}: expected a mapping of ArchConfig fields, or an export with "config" and '
            '"provenance"; got a list',
        ),
        ("empty.yaml", b"", "{path}: expected a mapping of ArchConfig fields"),
        ("c.json", b'{"config": [1]}', '{path}: "config" must be a mapping of ArchConfig fields'),
        ("bad.json", b'{"config": ', "{path}: not valid JSON: "),
        ("bad.yaml", b"a: [", "{path}: not valid YAML"),
        (
            "extra.json",
            b'{"config": {}, "provenance": {}, "extra": 1}',
            "{path}: unknown key 'extra' in an exported file; allowed: config, provenance",
        ),
        (
            "field.json",
            b'{"vocab_size": 34, "seq_len": 32, "causal": true, "bogus": 1}',
            "{path}: unknown ArchConfig field(s) ['bogus']; allowed: ",
        ),
        ("folder", None, "{path} is a folder; give a config file (.json or .yaml)"),
    ],
)
def test_a_config_file_that_is_not_one_is_named(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    out = tmp_path / "run"
    assert main([str(path), "--tokens", "4096", "--task", "recall", "--out", str(out)]) == 2
    one_line(capsys, "error: " + message.format(path=path))
    assert not out.exists()


def test_a_bare_config_for_another_task_names_the_task_that_fits(tmp_path, capsys):
    # before: "vocab_size=34 (task: 256)", naming neither the task used nor --task
    config = tiny_config(tmp_path / "c.json")
    assert main([config, "--tokens", "4096", "--out", str(tmp_path / "run")]) == 2
    one_line(
        capsys,
        "error: the config's vocab_size=34 does not fit task 'text' (vocab_size 256); pass "
        "the task it was searched on, e.g. --task recall\n",
    )
    other = tiny_config(tmp_path / "o.json", vocab_size=35)  # no built-in task's vocabulary
    assert main([other, "--tokens", "4096", "--out", str(tmp_path / "run")]) == 2
    one_line(capsys, "pass the task it was searched on with --task (and its --option values)\n")


def test_usage_errors_exit_2(export):
    with pytest.raises(SystemExit) as exc:
        main([str(export), "--tokens", "many"])
    assert exc.value.code == 2


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def train_cmd(export, out) -> list[str]:
    """search.train of `export` for 256K tokens into `out`, evaluating every 10 steps."""
    cmd = [sys.executable, "-m", "search.train", str(export), "--tokens", "256k"]
    return [*cmd, "--out", str(out), "--eval-every", "2560", "--quiet"]


def stop_after_the_first_checkpoint(cmd: list[str], out, sig: int) -> None:
    """Start `cmd` (a search.train run into `out`), send `sig` once it has checkpointed, and
    check it stopped as Ctrl-C should: exit 130, one line naming --resume, a checkpoint."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "history.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=guard(120))
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "--resume" in stdout and "Traceback" not in stderr
    assert json.loads((out / "history.json").read_text())[-1]["step"] >= 10
    assert (out / "train_state.pt").is_file()


@pytest.mark.slow
def test_ctrl_c_keeps_a_valid_checkpoint_and_resume_finishes(export, tmp_path):
    out = tmp_path / "run"
    cmd = train_cmd(export, out)
    stop_after_the_first_checkpoint(cmd, out, signal.SIGINT)
    other = subprocess.run(
        [*cmd[:5], "30720", *cmd[6:], "--resume"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert other.returncode == 2 and "different run" in other.stderr  # other --tokens: refused
    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "ok: 256,000 tokens" in resumed.stdout, resumed.stdout
    history = json.loads((out / "history.json").read_text())
    assert history[0]["step"] == 10 and history[-1]["step"] == 1000


@pytest.mark.slow
def test_kill_checkpoints_like_ctrl_c(export, tmp_path):
    # before: SIGTERM ended the process at once, mid-step (exit -15)
    out = tmp_path / "run"
    cmd = train_cmd(export, out)
    stop_after_the_first_checkpoint(cmd, out, signal.SIGTERM)


def test_an_export_from_a_data_search_trains_on_that_data(tmp_path):
    """The search's --data travels in the export, so search.train trains on the same text."""
    import optuna

    from search.export import document
    from search.train import build, parser
    from trainers.tasks.text import corpus_name

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 400, encoding="utf-8")
    task = get_task("text", seq_len=32, data=[str(corpus)])
    cfg = ArchConfig(**task.interface(), depth=1, d_model=32, n_heads=2)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    for key, value in {
        "task": "text",
        "task_options": {},
        "data": [str(corpus)],
        "seed": 0,
    }.items():
        study.set_user_attr(key, value)
    study.add_trial(
        optuna.trial.create_trial(value=1.0, user_attrs={"config": cfg.to_dict(), "flops": 1})
    )
    doc = document(study, study.trials[0])
    assert doc["provenance"]["data"] == [str(corpus)]
    path = tmp_path / "best.json"
    path.write_text(json.dumps(doc))

    def corpus_of(*extra: str) -> str:
        ns = parser().parse_args(
            [str(path), "--tokens", "4096", "--out", str(tmp_path / "r"), *extra]
        )
        return build(ns)[0].task.corpus

    other = tmp_path / "other.txt"
    other.write_text("x = 1\n" * 2000, encoding="utf-8")
    assert corpus_of() == corpus_name([str(corpus)])  # the export's data
    assert corpus_of("--data", str(other)) == corpus_name([str(other)])  # --data wins
    assert corpus_of("--task", "text") == corpus_name(None)  # another --task: the export's
    # options and data are dropped, so text falls back to the stdlib sources
