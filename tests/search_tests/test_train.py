"""`python -m search.train`: exported configs train for real; bad input is one line, exit 2."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from search.budget import count_arg
from search.train import main
from spaces import ArchConfig
from tests.search_tests.conftest import ROOT, guard
from trainers.proxy import Recipe
from trainers.tasks import get_task


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


def test_an_export_trains_with_the_recipe_its_study_judged_by(tmp_path, capsys):
    """The study's recipe travels in the export (before: search.train used today's default
    whatever the search had judged with, e.g. an older study's unscaled rate)."""
    import optuna

    from search.export import document
    from search.train import build, parser

    task = get_task("recall", seq_len=32, num_pairs=4, n_val=32)
    cfg = ArchConfig(**task.interface(), depth=1, d_model=32, n_heads=2, ffn_mult=2.0)
    # an older study's recipe: stored without lr_batch_tokens, so its rate has no batch factor
    stored = json.loads(
        json.dumps(Recipe(base_lr=1e-3, lr_batch_tokens=0, batch_tokens=512).stored())
    )
    assert "lr_batch_tokens" not in stored
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    attrs = {"task": "recall", "task_options": {"num_pairs": 4, "n_val": 32}, "seed": 0}
    for key, value in {**attrs, "recipe": stored}.items():
        study.set_user_attr(key, value)
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"config": cfg.to_dict()}))
    doc = document(study, study.trials[0])
    assert doc["provenance"]["recipe"] == stored
    path = tmp_path / "best.json"
    path.write_text(json.dumps(doc))

    def built(*extra: str):
        args = [str(path), "--tokens", "4096", "--out", str(tmp_path / "r"), *extra]
        return build(parser().parse_args(args))

    def trainer(*extra: str):
        return built(*extra)[0]

    t = trainer()
    assert t.recipe == Recipe(base_lr=1e-3, lr_batch_tokens=0, batch_tokens=512)
    assert t.batch_size == 512 // 32  # the recipe's batch, no schedule in this export
    assert t.peak_lr == pytest.approx(1e-3 * math.sqrt(256 / 32))  # no batch factor
    assert trainer("--lr", "5e-4").peak_lr == 5e-4  # --lr still wins
    # the banner says where the rate comes from, with the rule's numbers
    assert built()[2] == "the study's recipe: 0.001 x (256 / 32)^0.5"
    assert built("--lr", "5e-4")[2] == "--lr"
    # a scaled study keeps its source's recipe inside its identity
    scaled = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="scaled")
    scaled.set_user_attr("identity", {"recipe": stored})
    scaled.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"config": cfg.to_dict()}))
    assert document(scaled, scaled.trials[0])["provenance"]["recipe"] == stored
    # an export without one (older, or hand-written) trains with today's default
    del doc["provenance"]["recipe"]
    path.write_text(json.dumps(doc))
    assert trainer().recipe == Recipe()
    assert built()[2] == "the default recipe: 0.002 x (256 / 32)^0.5"  # 4,096-token steps
    got = built("--batch-tokens", "1024")[2]
    assert got == "the default recipe: 0.002 x (256 / 32)^0.5 x sqrt(1024 / 4096)"
    # a bad one is one line naming the file, exit 2
    doc["provenance"]["recipe"] = {"base_lr": -1}
    path.write_text(json.dumps(doc))
    assert main([str(path), "--tokens", "4096", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: provenance.recipe: ") and len(err.splitlines()) == 1
