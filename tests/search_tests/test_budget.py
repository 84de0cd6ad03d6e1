"""Tests for search.budget: FLOP budget parsing, formatting and argparse wrappers."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from search.budget import (
    DEVICE_RE,
    DEVICES,
    MAX_FLOPS,
    BudgetError,
    device_arg,
    flops_arg,
    flops_list_arg,
    format_flops,
    parse_flops,
    parse_flops_list,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

ACCEPTED = [
    ("2GFLOPs", 2_000_000_000),
    ("2 GFLOPs", 2_000_000_000),
    ("2   GFLOPs", 2_000_000_000),
    ("  2GFLOPs  ", 2_000_000_000),
    ("\t2 GFLOPs\n", 2_000_000_000),
    ("2gflops", 2_000_000_000),
    ("2GFLOPS", 2_000_000_000),
    ("2GFLOP", 2_000_000_000),
    ("2G", 2_000_000_000),
    ("2g", 2_000_000_000),
    ("2e9", 2_000_000_000),
    ("2E9", 2_000_000_000),
    ("2000000000", 2_000_000_000),
    ("1.5GFLOPs", 1_500_000_000),
    ("1.5e9", 1_500_000_000),
    ("1.5E+9", 1_500_000_000),
    (".5G", 500_000_000),
    ("2.G", 2_000_000_000),
    ("+2G", 2_000_000_000),
    ("2.000000001G", 2_000_000_001),
    ("0.1e1G", 1_000_000_000),
    ("20e-1G", 2_000_000_000),
    ("500MFLOPs", 500_000_000),
    ("500 mflops", 500_000_000),
    ("750KFLOPs", 750_000),
    ("750k", 750_000),
    ("1TFLOPs", 10**12),
    ("1T", 10**12),
    ("1PFLOPs", 10**15),
    ("3p", 3 * 10**15),
    ("2GMACs", 2_000_000_000),
    ("2 GMAC", 2_000_000_000),
    ("2gmacs", 2_000_000_000),
    ("3MACs", 3),
    ("3 MAC", 3),
    ("3MMACs", 3_000_000),
    ("2FLOPs", 2),
    ("2FLOP", 2),
    ("2 flops", 2),
    ("1", 1),
    ("0.5", 1),  # rounds half up
    ("1.4999", 1),
    ("2.5", 3),
    ("1.0000000004G", 1_000_000_000),
    ("1.0000000005G", 1_000_000_001),
    ("123456789012345678", 123_456_789_012_345_678),  # beyond float precision
    ("1e21", MAX_FLOPS),
    ("1000000PFLOPs", MAX_FLOPS),
    ("1000000000000000000000.4", MAX_FLOPS),
]

REJECTED = [
    ("", "empty"),
    ("   ", "empty"),
    ("\t\n", "empty"),
    ("0", "positive"),
    ("0G", "positive"),
    ("0.0e5", "positive"),
    ("-0", "positive"),
    ("-2G", "positive"),
    ("-1", "positive"),
    ("nan", "finite"),
    ("NaN", "finite"),
    ("inf", "finite"),
    ("-inf", "finite"),
    ("+inf", "finite"),
    ("Infinity", "finite"),
    ("infG", "finite"),
    ("2GB", "unknown unit 'GB'"),
    ("2GiFLOPs", "unknown unit 'GiFLOPs'"),
    ("2 parsecs", "unknown unit 'parsecs'"),
    ("2X", "unknown unit 'X'"),
    ("2E", "unknown unit 'E'"),
    ("2EFLOPs", "unknown unit 'EFLOPs'"),
    ("2 MiB", "unknown unit 'MiB'"),
    ("2 µFLOPs", "unknown unit 'µFLOPs'"),
    ("1e", "unknown unit 'e'"),
    ("2GFLOPs!", "trailing text '!'"),
    ("2 G FLOPs extra", "trailing text"),
    ("2 GFLOPs extra", "trailing text"),
    ("2G2", "more than one number"),
    ("2 3", "more than one number"),
    ("2G 3G", "more than one number"),
    ("1_000", "trailing text"),
    ("2,000", "trailing text"),
    ("2GFLOPs,4GFLOPs", "trailing text"),
    ("G", "missing number"),
    ("GFLOPs", "missing number"),
    (".", "missing number"),
    ("e9", "missing number"),
    ("two GFLOPs", "missing number"),
    ("0.4", "rounds to 0"),
    ("0.0000000001G", "rounds to 0"),
    ("1e-400", "rounds to 0"),
    ("1e-99999999999999999999", "rounds to 0"),
    ("1000000000000000000001", "too large"),
    ("1000000000000000000000.5", "too large"),
    ("1.000000000000000000001e21", "too large"),
    ("1e22", "too large"),
    ("10000000PFLOPs", "too large"),
    ("1e400", "too large"),
    ("1e400G", "too large"),
    ("1e99999999999999999999", "too large"),
    ("9" * 400, "too large"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_parse_flops_accepts(text: str, expected: int) -> None:
    result = parse_flops(text)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_parse_flops_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_flops(text)
    assert isinstance(info.value, BudgetError)
    message = str(info.value)
    assert message.startswith(f"invalid FLOP budget {text!r}: ")
    assert reason in message
    assert info.value.text == text
    assert reason in info.value.reason
    assert "Expected" in message and "e.g." in message
    assert "fvcore" in message


def test_rejection_message_matches_documented_example() -> None:
    with pytest.raises(ValueError) as info:
        parse_flops("2GB")
    assert str(info.value) == (
        "invalid FLOP budget '2GB': unknown unit 'GB'. Expected a positive number with an "
        "optional SI prefix (K, M, G, T, P) and unit (FLOPs or MACs; fvcore counts one "
        "multiply-add as one FLOP), e.g. 2GFLOPs, 500MFLOPs, 1.5e9, 2G."
    )


@pytest.mark.parametrize("value", [2, 2.0, None, b"2G", ["2G"], True])
def test_parse_flops_rejects_non_str(value: object) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        parse_flops(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)
    assert "Expected" in str(info.value)


def test_macs_and_flops_are_the_same_quantity() -> None:
    for prefix in ("", "K", "M", "G", "T", "P"):
        assert parse_flops(f"7{prefix}MACs") == parse_flops(f"7{prefix}FLOPs")
        assert parse_flops(f"7{prefix}") == parse_flops(f"7{prefix}FLOPs")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (2_000_000_000, "2.00 GFLOPs"),
        (1_234_567, "1.23 MFLOPs"),
        (999, "999 FLOPs"),
        (5, "5 FLOPs"),
        (0, "0 FLOPs"),
        (1_000, "1.00 KFLOPs"),
        (1_500, "1.50 KFLOPs"),
        (12_345_678, "12.3 MFLOPs"),
        (123_456_789, "123 MFLOPs"),
        (999_999, "1.00 MFLOPs"),  # rounds up into the next prefix
        (10**12, "1.00 TFLOPs"),
        (2.5e15, "2.50 PFLOPs"),
        (MAX_FLOPS, "1000000 PFLOPs"),
        (1.5e9, "1.50 GFLOPs"),
        (-2_000_000_000, "-2.00 GFLOPs"),
    ],
)
def test_format_flops(n: float, expected: str) -> None:
    assert format_flops(n) == expected


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("2GFLOPs", 2 * 10**9),
        ("500MFLOPs", 500 * 10**6),
        ("750KFLOPs", 750 * 10**3),
        ("1TFLOPs", 10**12),
        ("3.14G", 314 * 10**7),
        ("1234567", 123 * 10**4),  # three significant digits: 1.23 MFLOPs
        ("9876543", 988 * 10**4),  # 9.88 MFLOPs
    ],
)
def test_format_then_parse_round_trips_to_three_digits(text: str, back: int) -> None:
    assert parse_flops(format_flops(parse_flops(text))) == back


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GFLOPs,8GFLOPs,16G", [4 * 10**9, 8 * 10**9, 16 * 10**9]),
        (" 4G , 8 GMACs ", [4 * 10**9, 8 * 10**9]),
        ("2G", [2 * 10**9]),
        ("2G,2G", [2 * 10**9, 2 * 10**9]),
    ],
)
def test_parse_flops_list_accepts(text: str, expected: list[int]) -> None:
    assert parse_flops_list(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty budget list"),
        ("  ", "empty budget list"),
        ("4G,,8G", "item 2 of 3 is empty"),
        ("4G,", "item 2 of 2 is empty"),
        (",4G", "item 1 of 2 is empty"),
        ("4G, ,8G", "item 2 of 3 is empty"),
        ("4G,2GB", "item 2 of 2 ('2GB'): unknown unit 'GB'"),
        ("4G,8G,-1G", "item 3 of 3 ('-1G'): must be positive"),
        ("4G;8G", "item 1 of 1 ('4G;8G'): unexpected trailing text"),
    ],
)
def test_parse_flops_list_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_flops_list(text)
    message = str(info.value)
    assert message.startswith(f"invalid FLOP budget list {text!r}: ")
    assert reason in message
    assert "Expected" in message and "e.g." in message


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search")
    parser.add_argument("--budget", type=flops_arg)
    parser.add_argument("--budgets", type=flops_list_arg)
    return parser


def test_argparse_accepts_budget() -> None:
    args = _parser().parse_args(["--budget", "2GFLOPs", "--budgets", "4G,8G"])
    assert args.budget == 2_000_000_000
    assert args.budgets == [4_000_000_000, 8_000_000_000]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--budget", "2GB"], "invalid FLOP budget '2GB': unknown unit 'GB'"),
        (["--budget=-1G"], "invalid FLOP budget '-1G': must be positive"),
        (["--budgets", "4G,,8G"], "invalid FLOP budget list '4G,,8G': item 2 of 3 is empty"),
    ],
)
def test_argparse_rejects_with_status_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "e.g. " in err
    assert "usage: search" in err


def test_flops_arg_raises_argument_type_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="unknown unit 'GB'"):
        flops_arg("2GB")
    with pytest.raises(argparse.ArgumentTypeError, match="is empty"):
        flops_list_arg("4G,")


_CLI_SCRIPT = """
import argparse
from search.budget import flops_arg
parser = argparse.ArgumentParser(prog="search")
parser.add_argument("--budget", type=flops_arg, required=True)
print(parser.parse_args().budget)
"""


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT, *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_subprocess_accepts() -> None:
    result = _run_cli("--budget", "2 GFLOPs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2000000000"


def test_cli_subprocess_rejects_with_status_2() -> None:
    result = _run_cli("--budget", "2GB")
    assert result.returncode == 2
    assert "argument --budget: invalid FLOP budget '2GB': unknown unit 'GB'" in result.stderr
    assert "Expected a positive number" in result.stderr
    assert "Traceback" not in result.stderr


@given(st.integers(min_value=1, max_value=10**18 - 1))
def test_parse_flops_round_trips_plain_integers(n: int) -> None:
    assert parse_flops(str(n)) == n
    assert parse_flops(f"{n}FLOPs") == n
    assert parse_flops(f" {n} macs ") == n


@given(st.integers(min_value=1, max_value=10**15 - 1))
def test_parse_flops_kilo_prefix(k: int) -> None:
    n = k * 1000
    assert parse_flops(f"{n // 1000}K") == n
    assert parse_flops(f"{n // 1000} KFLOPs") == n


@given(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=0, max_value=6),
    st.sampled_from(["", "K", "M", "G", "T", "P"]),
)
def test_parse_flops_decimal_fraction_is_exact(whole: int, frac_digits: int, prefix: str) -> None:
    scale = {"": 0, "K": 3, "M": 6, "G": 9, "T": 12, "P": 15}[prefix]
    digits = str(whole).rjust(frac_digits + 1, "0")
    text = f"{digits[:-frac_digits]}.{digits[-frac_digits:]}" if frac_digits else digits
    numerator = whole * 10**scale
    denominator = 10**frac_digits
    expected = (2 * numerator + denominator) // (2 * denominator)  # round half up
    if expected == 0:
        with pytest.raises(BudgetError, match="rounds to 0 FLOPs"):
            parse_flops(f"{text}{prefix}")
        return
    assert parse_flops(f"{text}{prefix}") == expected


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_device_arg_accepts_what_its_message_lists(device: str) -> None:
    assert device_arg(device) == device
    assert device.split(":")[0] in DEVICES


def test_device_arg_message_lists_every_accepted_kind() -> None:
    # before: mps was accepted, but the message said "expected cpu, cuda or cuda:N"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        device_arg("tpu")
    assert str(info.value) == "invalid --device 'tpu': expected cpu, cuda, cuda:N or mps"
    kinds = DEVICE_RE.pattern.replace("(:[0-9]+)?", "").strip("^$()").split("|")
    assert sorted(kinds) == ["cpu", "cuda", "mps"]
    assert all(kind in DEVICES for kind in kinds)
