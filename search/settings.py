"""Everything that defines a search run, from defaults, a study preset and CLI flags.

Precedence: built-in defaults < preset file (`--preset studies/<name>.toml`) < explicit flags.
The part that defines *what* is searched (`identity()`) is stored on the study; resuming a study
with a different identity is refused, so one study never mixes budgets, tasks or spaces.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from search.budget import DEVICE_RE, DEVICES, parse_flops
from search.samplers import PRUNERS, SAMPLERS
from spaces.config import LIMITS
from spaces.space import SearchSpace
from trainers.proxy import Recipe

DEFAULT_TASK = "text"  # byte-level LM; without --data, on the interpreter's stdlib sources
DEFAULT_PROXY_COMPUTE = 30_000_000_000  # training FLOPs per trial for --evaluation compute
OBJECTIVES = ("single", "pareto")
# equal training tokens per rung for every candidate (default), or equal training FLOPs
EVALUATIONS = ("tokens", "compute")


@dataclasses.dataclass
class RunSettings:
    budget: int  # forward FLOPs of one sequence allowed (fvcore: 1 multiply-add = 1 FLOP)
    task: str = DEFAULT_TASK
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: list[str] = dataclasses.field(default_factory=list)
    seq_len: int | None = None
    proxy_compute: int = DEFAULT_PROXY_COMPUTE  # search.fidelity's equal-compute proxy runs
    evaluation: str = "tokens"  # "tokens": equal data per rung; "compute": equal FLOPs
    rung_tokens: int | None = None  # first rung's training tokens (None: from the clock)
    eta: int = 3  # successive halving: each rung is eta x longer, 1/eta are promoted
    rungs: int = 3  # rungs; the top one is eta^(rungs-1) x the first
    objectives: str = "single"
    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    sampler: str = "tpe"
    pruner: str = "halving"
    cut_at_chance: bool = False  # cut even at a rung that ranks mostly at-chance candidates
    seed: int = 0
    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        """What the study's results mean; must match to resume a study."""
        return {
            "task": self.task,
            "task_options": self.task_options,
            "data": [str(Path(p).resolve()) for p in self.data],
            "seq_len": self.seq_len,
            "budget": self.budget,
            "proxy_compute": self.proxy_compute,
            "evaluation": self.evaluation,
            "eta": self.eta,
            "rungs": self.rungs,
            "objectives": self.objectives,
            "space": self.space.to_dict(),
            "recipe": self.recipe.stored(),
        }


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a TOML preset; its keys are RunSettings fields (budget-like values as text)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--preset {str(path)!r}: no such file (e.g. studies/recall.toml)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--preset {str(path)!r}: invalid TOML: {exc}") from exc
    known = {f.name for f in dataclasses.fields(RunSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"--preset {str(path)!r}: unknown key(s) {unknown}; allowed: {', '.join(sorted(known))}"
        )
    return data


def build_settings(preset: dict[str, Any], flags: dict[str, Any]) -> RunSettings:
    """Merge preset and explicitly given flags (None = not given) into RunSettings."""
    merged = {**preset, **{k: v for k, v in flags.items() if v is not None}}
    if "budget" not in merged:
        raise ValueError("--budget is required (e.g. --budget 2GFLOPs), or set budget in a preset")
    _check_types(merged)  # presets and flags pass the same checks
    if isinstance(merged.get("space"), dict):
        merged["space"] = SearchSpace.from_dict(merged["space"])
    if isinstance(merged.get("recipe"), dict):
        fields = {f.name for f in dataclasses.fields(Recipe)}
        bad = sorted(set(merged["recipe"]) - fields)
        if bad:
            raise ValueError(f"recipe: unknown key(s) {bad}; allowed: {', '.join(sorted(fields))}")
        merged["recipe"] = Recipe(**merged["recipe"])
    settings = RunSettings(**merged)
    _check_values(settings)
    return settings


def _check_types(merged: dict[str, Any]) -> None:
    """FLOP counts parsed (in place), integers and strings checked, the device's form."""
    for key in ("budget", "proxy_compute"):
        value = merged.get(key)
        if isinstance(value, str):
            merged[key] = parse_flops(value)
        elif value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value > 0)
        ):
            raise ValueError(
                f"{key} must be a positive finite FLOP count, got {value!r} "
                f'(e.g. {key} = "2GFLOPs")'
            )
    for key in ("seq_len", "eta", "rungs", "rung_tokens", "seed"):
        value = merged.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key} must be an integer, got {value!r}")
    for key in ("task", "sampler", "pruner", "objectives", "evaluation", "device"):
        value = merged.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
    if merged.get("cut_at_chance") is not None and not isinstance(merged["cut_at_chance"], bool):
        raise ValueError(f"cut_at_chance must be true or false, got {merged['cut_at_chance']!r}")
    if merged.get("device") is not None and not DEVICE_RE.match(merged["device"]):
        raise ValueError(f"--device {merged['device']!r} is not {DEVICES}")


def _check_values(settings: RunSettings) -> None:
    """Names from their registries and ranges, each error naming the flag."""
    for name, allowed in (
        ("sampler", SAMPLERS),
        ("pruner", PRUNERS),
        ("objectives", OBJECTIVES),
        ("evaluation", EVALUATIONS),
    ):
        if getattr(settings, name) not in allowed:
            raise ValueError(
                f"--{name} {getattr(settings, name)!r} is not one of {', '.join(allowed)}"
            )
    if settings.seq_len is not None and not 8 <= settings.seq_len <= LIMITS["seq_len"]:
        raise ValueError(f"--seq-len must be in [8, {LIMITS['seq_len']:,}], got {settings.seq_len}")
    if settings.eta < 2:
        raise ValueError(f"--eta must be >= 2, got {settings.eta} (e.g. --eta 3)")
    if not 1 <= settings.rungs <= 6:
        raise ValueError(f"--rungs must be in 1..6, got {settings.rungs} (e.g. --rungs 3)")
    if settings.rung_tokens is not None and settings.rung_tokens < 1:
        raise ValueError(f"--rung-tokens must be >= 1, got {settings.rung_tokens} (e.g. 65536)")
