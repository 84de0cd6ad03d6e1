"""`python -m search.train` refuses bad input before training: one line naming the flag or
file and what is expected, exit 2, nothing trained or written (search/train_input.py,
search/resume_mismatch.py, trainers.distill.Teacher.load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.train import main
from spaces import ArchConfig
from trainers.tasks import get_task


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
    one_line(capsys, "(the recipe's batch = 128 sequences of 32 = 4,096 tokens)")
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
        ("--device", "bogus", "invalid --device 'bogus': expected cpu, cuda, cuda:N or mps"),
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
    assert err == f"python -m search.train: error: argument {flag}: {message} (see --help)\n"
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
    printed, err = capsys.readouterr()
    assert err == (
        f"error: the checkpoint in {out} was written by a different run: it differs in "
        f"{differs}; resume with the same config and flags, or use a new --out\n"
    )
    # before: the banner ("training ... checkpoints in <out>") came first, as if it would train
    assert printed == ""
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
