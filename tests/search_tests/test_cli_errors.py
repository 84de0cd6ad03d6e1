"""Every user-facing command line turns a usage error into one line on stderr, exit 2:
`<prog>: error: <argparse's message> (see --help)`, never the usage block (18 lines for
`search.run`) before it. `--help` is argparse's, unchanged."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import pytest

from search.cli import EXIT_BROKEN_PIPE, Parser, one_line, run_main
from tests.search_tests.conftest import ROOT, guard, run_cli

# module with a `parser()` function, its prog, and bad argv with a piece of argparse's message
CASES = {
    "search.run_flags": (
        "python -m search.run",
        [
            (["--trials", "x"], "argument --trials: invalid int value: 'x'"),
            (["--sampler", "nope"], "argument --sampler: invalid choice: 'nope'"),
            (["--budget", "2GB"], "argument --budget: invalid FLOP budget '2GB'"),
            (["--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
    "search.export": (
        "python -m search.export",
        [
            ([], "the following arguments are required: --study"),
            (["--study", "s", "--trial", "x"], "argument --trial: invalid int value: 'x'"),
            (
                ["--study", "s", "--trial", "1", "--top", "2"],
                "argument --top: not allowed with argument --trial",
            ),
            (["--study", "s", "--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
    "search.scale_flags": (
        "python -m search.scale",
        [
            (["--study", "s"], "the following arguments are required: --targets"),
            (["--study", "s", "--targets", "4M", "--trial", "x"], "argument --trial: invalid int"),
            (["--study", "s", "--targets", "4M", "--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
    "search.train": (
        "python -m search.train",
        [
            (["--tokens", "1M"], "the following arguments are required: config"),
            (["c.json", "--tokens", "1M", "--compile", "maybe"], "argument --compile: invalid"),
            (["c.json", "--tokens", "many"], "argument --tokens: "),
            (["c.json", "--tokens", "1M", "--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
    "search.fidelity": (
        "python -m search.fidelity",
        [
            ([], "the following arguments are required: --study"),
            (["--study", "s", "--factor", "1"], "argument --factor: invalid --factor '1'"),
            (["--study", "s", "--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
    "dashboards.report": (
        "python -m dashboards.report",
        [
            (["--study", "s"], "the following arguments are required: --out"),
            (["--study", "s", "--out", "r", "--top", "0"], "argument --top: invalid --top '0'"),
            (["--study", "s", "--out", "r", "--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
    "dashboards.serve": (
        "python -m dashboards.serve",
        [
            (["--port", "70000"], "argument --port: port 70000 is outside 1..65535"),
            (["--top", "x"], "argument --top: invalid int value: 'x'"),
            (["--bogus"], "unrecognized arguments: --bogus"),
        ],
    ),
}

PARAMS = [
    pytest.param(module, prog, argv, message, id=f"{module}:{' '.join(argv) or 'no-args'}")
    for module, (prog, cases) in CASES.items()
    for argv, message in cases
]


def _parser(module: str) -> argparse.ArgumentParser:
    return importlib.import_module(module).parser()


@pytest.mark.parametrize(("module", "prog", "argv", "message"), PARAMS)
def test_a_usage_error_is_one_line_and_exit_2(module, prog, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        _parser(module).parse_args(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.endswith(" (see --help)\n"), err
    assert err.startswith(f"{prog}: error: ") and message in err, err
    assert "usage:" not in err and "Traceback" not in err


@pytest.mark.parametrize("module", list(CASES))
def test_every_cli_uses_the_one_line_parser_and_keeps_its_help(module, capsys):
    p = _parser(module)
    assert isinstance(p, Parser)
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--help"])
    assert info.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: {CASES[module][0]} ") and err == ""


def test_a_message_over_several_lines_is_joined_into_one():
    assert one_line("prog", "first\n  second\n\nthird ") == (
        "prog: error: first second third (see --help)"
    )


def test_search_run_from_the_shell_prints_one_line():
    proc = run_cli("search.run", "--trials", "x", timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "python -m search.run: error: argument --trials: invalid int value: 'x' (see --help)\n"
    )


@pytest.mark.parametrize(
    "module",
    [
        "benchmarks.outcome",
        "benchmarks.scaling_outcome",
        "benchmarks.hybrid_outcome",
        "benchmarks.rung_fidelity",
        "benchmarks.search_quality",
    ],
)
def test_the_benchmarks_usage_errors_are_one_line_too(module, capsys):
    with pytest.raises(SystemExit) as info:
        _parser(module).parse_args(["--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"python -m {module}: error: "), err


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (
            "cuda:1",
            "--device cuda:1 was given but torch sees no CUDA device (install a CUDA build of "
            "torch, see README, or use --device cpu)",
        ),
        ("mps", "--device mps was given but torch sees no MPS device (use --device cpu)"),
        ("cpu", None),
    ],
)
def test_a_device_torch_cannot_see_is_named_before_any_work(
    monkeypatch, tmp_path, capsys, device, message
):
    """search.run, search.train, search.scale and search.fidelity share one check
    (search.budget.device_problem); search.run --device mps used to end in a traceback
    ('PyTorch is not linked with support for mps devices') from the plan's timing."""
    import torch

    from search import run
    from search.budget import device_problem

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device_problem(device) == message
    if message is None:
        return
    db = tmp_path / "s.db"
    argv = ["--budget", "2GFLOPs", "--device", device, "--storage", f"sqlite:///{db}"]
    assert run.main(argv) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not db.exists()  # refused before the study was created


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`python -m search.fidelity ... | head`: once `head` has its lines, the command's next
    write fails (EPIPE). It ends with the shell's status for a piped command, 141, and prints no
    BrokenPipeError traceback (benchmarks.flops | head -1 printed one)."""
    code = (
        "from search.cli import run_main\n"
        "def main():\n"
        "    for i in range(200_000):\n"  # about 2 MB, far over a pipe's buffer
        "        print('line', i)\n"
        "    return 0\n"
        "run_main(main)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == "line 0\n"
    proc.stdout.close()  # the reader stops, as `head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=guard(60)) == EXIT_BROKEN_PIPE == 141
    assert err == ""


def test_a_command_that_finishes_keeps_its_exit_status():
    for main, status in [(lambda: 0, 0), (lambda: 3, 3), (lambda: None, None)]:
        with pytest.raises(SystemExit) as info:
            run_main(main)
        assert info.value.code == status


def test_every_command_line_ends_through_run_main():
    """Each `python -m` entry point of search/, dashboards/ and benchmarks/ hands its main to
    `run_main`, so none of them ends a `| head` in a traceback."""
    mains = sorted(
        path
        for folder in ("search", "dashboards", "benchmarks")
        for path in (ROOT / folder).glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text()
    )
    assert len(mains) >= 20, mains
    for path in mains:
        block = path.read_text().split('if __name__ == "__main__":', 1)[1]
        assert "run_main(" in block, path
