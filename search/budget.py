"""Parse and format FLOP budgets such as ``--budget 2GFLOPs``.

FLOP convention: we follow fvcore, which counts one multiply-add (MAC) as one FLOP. So "GMACs"
and "GFLOPs" name the same quantity here, and ``2GMACs == 2GFLOPs``. Hardware FLOPs (one
multiply plus one add = two FLOPs) are about 2x the numbers used in this project.

Prefixes are decimal SI: K=1e3, M=1e6, G=1e9, T=1e12, P=1e15. Units and prefixes are
case-insensitive, so ``M`` and ``m`` both mean mega (there is no milli).
"""

from __future__ import annotations

import argparse
import decimal
import math
import re

__all__ = [
    "EXPECTED",
    "MAX_FLOPS",
    "SI_PREFIXES",
    "BudgetError",
    "count_arg",
    "flops_arg",
    "flops_list_arg",
    "format_flops",
    "parse_flops",
    "parse_flops_list",
]

#: Largest budget accepted, in FLOPs (fvcore convention). Anything bigger is a typo.
MAX_FLOPS = 10**21
_MAX_MAGNITUDE = len(str(MAX_FLOPS)) - 1  # 21
_TOO_LARGE = f"too large (the limit is 1e{_MAX_MAGNITUDE} FLOPs)"

#: Decimal SI prefixes (upper-case) and their power of ten.
SI_PREFIXES: dict[str, int] = {"": 0, "K": 3, "M": 6, "G": 9, "T": 12, "P": 15}

_UNIT_SUFFIXES = ("", "flop", "flops", "mac", "macs")

#: Every accepted unit, lower-cased, mapped to its power of ten.
_UNITS: dict[str, int] = {
    prefix.lower() + suffix: exponent
    for prefix, exponent in SI_PREFIXES.items()
    for suffix in _UNIT_SUFFIXES
}

_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_UNIT_RE = re.compile(r"[^\W\d_]+")  # a run of letters (any script), no digits or underscores
_NON_FINITE_RE = re.compile(r"[+-]?(?:nan|inf)", re.IGNORECASE)

EXPECTED = (
    "Expected a positive number with an optional SI prefix (K, M, G, T, P) and unit "
    "(FLOPs or MACs; fvcore counts one multiply-add as one FLOP), "
    "e.g. 2GFLOPs, 500MFLOPs, 1.5e9, 2G."
)

_EXPECTED_LIST = (
    "Expected a comma-separated list of positive numbers, each with an optional SI prefix "
    "(K, M, G, T, P) and unit (FLOPs or MACs; fvcore counts one multiply-add as one FLOP), "
    "e.g. 4GFLOPs,8GFLOPs,16G."
)


class BudgetError(ValueError):
    """A FLOP budget (or budget list) could not be parsed.

    ``text`` is the offending input and ``reason`` says what was wrong, without the boilerplate.
    """

    def __init__(self, message: str, text: object = None, reason: str = "") -> None:
        super().__init__(message)
        self.text = text
        self.reason = reason


def _fail(text: object, reason: str) -> BudgetError:
    return BudgetError(f"invalid FLOP budget {text!r}: {reason}. {EXPECTED}", text, reason)


def _fail_list(text: object, reason: str) -> BudgetError:
    return BudgetError(
        f"invalid FLOP budget list {text!r}: {reason}. {_EXPECTED_LIST}", text, reason
    )


def _reason(text: str) -> tuple[int | None, str]:
    """Parse ``text``; return ``(flops, "")`` on success or ``(None, reason)`` on failure."""
    parts, reason = _split(text)
    if parts is None:
        return None, reason
    return _to_flops(*parts)


def _split(text: str) -> tuple[tuple[str, str] | None, str]:
    """``((number, unit), "")`` for a well-formed budget, else ``(None, reason)``."""
    stripped = text.strip()
    if not stripped:
        return None, "empty budget"
    number = _NUMBER_RE.match(stripped)
    if number is None:
        if _NON_FINITE_RE.match(stripped):
            return None, "not a finite number"
        return None, "missing number (it must start with a digit or '.')"
    rest = stripped[number.end() :].lstrip()
    unit_match = _UNIT_RE.match(rest)
    unit = unit_match.group() if unit_match else ""
    trailing = rest[len(unit) :]
    if unit.lower() not in _UNITS:
        return None, f"unknown unit {unit!r}"
    if trailing:
        if _NUMBER_RE.match(trailing.lstrip()):
            return None, f"more than one number (unexpected trailing text {trailing!r})"
        return None, f"unexpected trailing text {trailing!r}"
    return (number.group(), unit), ""


def _to_flops(number: str, unit: str) -> tuple[int | None, str]:
    """The exact integer FLOPs of ``number`` x the unit's power of ten, or ``(None, reason)``."""
    try:
        value = decimal.Decimal(number)
    except decimal.InvalidOperation:
        # Only reachable with absurd exponents such as 1e99999999999999999999.
        exponent = number.lower().partition("e")[2]
        if exponent.startswith("-"):
            return None, "rounds to 0 FLOPs"
        return None, _TOO_LARGE
    if value.is_zero():
        return None, "must be positive, got zero"
    if value.is_signed():
        return None, "must be positive, got a negative number"
    power = _UNITS[unit.lower()]
    magnitude = value.adjusted() + power  # floor(log10(value * 10**power))
    if magnitude > _MAX_MAGNITUDE:  # value >= 10 * MAX_FLOPS
        return None, _TOO_LARGE
    if magnitude < -1:
        return None, "rounds to 0 FLOPs"
    # Enough precision that scaling and rounding to an integer are exact.
    context = decimal.Context(prec=len(number) + 2 * _MAX_MAGNITUDE)
    scaled = value.scaleb(power, context=context)
    flops = int(scaled.to_integral_value(rounding=decimal.ROUND_HALF_UP, context=context))
    if flops > MAX_FLOPS:
        return None, _TOO_LARGE
    if flops == 0:
        return None, "rounds to 0 FLOPs"
    return flops, ""


def parse_flops(text: str) -> int:
    """Parse a FLOP budget such as ``"2GFLOPs"``, ``"500 MMACs"`` or ``"1.5e9"`` into an int.

    Raises ``TypeError`` for non-str input and ``BudgetError`` (a ``ValueError``) otherwise.
    """
    if not isinstance(text, str):
        raise TypeError(
            f"invalid FLOP budget {text!r}: expected a str, got {type(text).__name__}. {EXPECTED}"
        )
    flops, reason = _reason(text)
    if flops is None:
        raise _fail(text, reason)
    return flops


def parse_flops_list(text: str) -> list[int]:
    """Parse a comma-separated list of budgets such as ``"4GFLOPs,8GFLOPs,16G"``."""
    if not isinstance(text, str):
        raise TypeError(
            f"invalid FLOP budget list {text!r}: expected a str, got {type(text).__name__}. "
            f"{_EXPECTED_LIST}"
        )
    if not text.strip():
        raise _fail_list(text, "empty budget list")
    items = text.split(",")
    result = []
    for index, item in enumerate(items, start=1):
        where = f"item {index} of {len(items)}"
        if not item.strip():
            raise _fail_list(text, f"{where} is empty")
        flops, reason = _reason(item)
        if flops is None:
            raise _fail_list(text, f"{where} ({item.strip()!r}): {reason}")
        result.append(flops)
    return result


def format_flops(n: float) -> str:
    """Format a FLOP count (int or float) with 3 significant digits.

    The unit is the convention-neutral "FLOPs", e.g. ``2_000_000_000 -> "2.00 GFLOPs"``.
    """
    if isinstance(n, float) and not math.isfinite(n):
        return f"{n} FLOPs"
    sign = "-" if n < 0 else ""
    rounded = float(f"{abs(n):.3g}")  # round first so 999_999 becomes 1.00 M, not 1000 K
    prefix = ""
    for name, power in SI_PREFIXES.items():
        if rounded >= 10**power:
            prefix = name
    mantissa = rounded / 10 ** SI_PREFIXES[prefix]
    if not prefix and mantissa.is_integer():
        digits = f"{int(mantissa)}"  # small whole counts read better as "5 FLOPs"
    elif mantissa >= 100:
        digits = f"{mantissa:.0f}"
    elif mantissa >= 10:
        digits = f"{mantissa:.1f}"
    elif mantissa >= 1:
        digits = f"{mantissa:.2f}"
    else:
        digits = f"{mantissa:.3g}"
    return f"{sign}{digits} {prefix}FLOPs"


def flops_arg(text: str) -> int:
    """``argparse`` ``type=`` callable: parse a budget, reporting errors as usage errors."""
    try:
        return parse_flops(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def flops_list_arg(text: str) -> list[int]:
    """``argparse`` ``type=`` callable for a comma-separated list of budgets."""
    try:
        return parse_flops_list(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def whole_number_arg(name: str, minimum: int):
    """``argparse`` ``type=`` callable for a whole number >= `minimum`, e.g. ``--seed``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"invalid {name} {text!r}: expected a whole number >= {minimum}"
            )
        return value

    return parse


DEVICE_RE = re.compile(r"^(cpu|cuda(:[0-9]+)?|mps)$")
DEVICES = "cpu, cuda, cuda:N or mps"  # what DEVICE_RE accepts, for messages


def device_problem(device: str) -> str | None:
    """Why torch cannot use `device` on this machine (no CUDA or MPS device), or None; every
    command checks it before any work, so a missing GPU is one line, not a traceback."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (
            f"--device {device} was given but torch sees no CUDA device "
            "(install a CUDA build of torch, see README, or use --device cpu)"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        return "--device mps was given but torch sees no MPS device (use --device cpu)"
    return None


def device_arg(text: str) -> str:
    """``argparse`` ``type=`` callable for ``--device``: cpu, cuda, cuda:N or mps."""
    if not DEVICE_RE.match(text):
        raise argparse.ArgumentTypeError(f"invalid --device {text!r}: expected {DEVICES}")
    return text


def number_arg(name: str, low: float, high: float, example: str):
    """``argparse`` ``type=`` callable for a finite number in the open range (low, high), e.g.
    ``--lr`` or ``--tolerance``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low < value < high):
            bounds = f"> {low:g}" if high == math.inf else f"in ({low:g}, {high:g})"
            raise argparse.ArgumentTypeError(
                f"invalid {name} {text!r}: expected a finite number {bounds}, e.g. {example}"
            )
        return value

    return parse


_COUNT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")


_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def count_arg(text: str) -> int:
    """A positive count such as 5M, 500k, 2.5e6 (k, M, G, T are powers of 1000)."""
    m = _COUNT_RE.match(text)
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()] if m else 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}: expected a positive number, e.g. 5M, 500k or 2.5e6"
        )
    return round(value)
