"""`python -m search.scale` refuses bad flags before any work: one line (argparse's message for a
flag it checks), exit 2, no database opened or written, no password printed."""

from __future__ import annotations

import pytest

from tests.search_tests.conftest import run_cli, run_scale


def test_password_never_printed():
    url = "postgresql://user:secret@127.0.0.1:1/db"
    proc = run_cli("search.scale", "--study", "x", "--storage", url, "--targets", "5M")
    assert proc.returncode == 2 and "secret" not in proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(
        "error: cannot open --storage postgresql://user:***@127.0.0.1:1/db"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        *(
            (
                ["--tolerance", text],
                f"argument --tolerance: invalid --tolerance {text!r}: expected a finite number "
                "in (0, 1), e.g. 0.25",
            )
            for text in ("nan", "-1", "0", "1")
        ),
        *(
            (
                ["--device", "bogus", *train],
                "argument --device: invalid --device 'bogus': expected cpu, cuda, cuda:N or mps",
            )
            for train in ([], ["--train"])
        ),
        *(
            (
                [flag, text],
                f"argument {flag}: invalid {flag} {text!r}: expected a whole number >= 1",
            )
            for flag, text in (("--threads", "-1"), ("--threads", "0"), ("--workers", "0"))
        ),
        *(
            (
                ["--out-study", text],
                f"argument --out-study: invalid --out-study {text!r}: expected a study name, e.g. "
                "text-2.00GFLOPs-scaled (leave the flag out for the default <study>-scaled)",
            )
            for text in ("", "  ")  # before: '' silently became the default <study>-scaled
        ),
        (
            ["--coefficients", "1,1,1"],
            "argument --coefficients: invalid --coefficients '1,1,1': expected three numbers "
            ">= 1 for depth, width and span, at least one > 1, e.g. 1.2,1.1,1.15",
        ),
    ],
)
def test_bad_flags_are_usage_errors(capsys, tmp_path, extra, message):
    db = tmp_path / "s.db"
    code, _, err = run_scale(
        capsys, "--study", "s", "--storage", f"sqlite:///{db}", "--targets", "4M", *extra
    )
    assert code == 2 and err == f"python -m search.scale: error: {message} (see --help)\n"
    assert "Traceback" not in err and not db.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--targets", "4M,3M,4000000"],
            "--targets names 4.00 MFLOPs (4,000,000 FLOPs) twice; give each target once",
        ),
        (
            ["--targets", "4M", "--tokens", "2k"],
            "--tokens needs --train (it sets how long --train trains each config)",
        ),
        (
            ["--targets", "4M", "--device", "cuda", "--train"],
            "--device cuda was given but torch sees no CUDA device (install a CUDA build of "
            "torch, see README, or use --device cpu)",
        ),
    ],
)
def test_flag_combinations_are_refused_before_any_work(
    capsys, tmp_path, monkeypatch, extra, message
):
    """One line, exit 2, and the storage is never even opened (no database file appears)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    db = tmp_path / "s.db"
    code, out, err = run_scale(capsys, "--study", "s", "--storage", f"sqlite:///{db}", *extra)
    assert (code, out, err) == (2, "", f"error: {message}\n")
    assert not db.exists()
