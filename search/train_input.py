"""What `search.train` reads and checks before it trains: the config or export file, the task
it fits, the batch, and the checkpoint folder. Each check raises ValueError with one line that
names the file or flag (the CLI prints it, exit 2), before anything trains or is written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spaces import ArchConfig
from spaces.atomic import make_folder
from spaces.config import parse_config_text
from trainers.proxy import Recipe
from trainers.tasks import TASKS, Task, get_task

EXPORT_KEYS = ("config", "provenance")  # the top level of an exported file


def read_document(path: Path) -> Any:
    """The parsed JSON or YAML of the config file `path`; ValueError naming it otherwise."""
    name = str(path)
    if path.is_dir():
        raise ValueError(f"{name} is a folder; give a config file (.json or .yaml)")
    if not path.exists():
        raise ValueError(f"config file {name!r} not found (export one with search.export)")
    if not path.is_file():
        raise ValueError(f"{name} is not a regular file; give a config file (.json or .yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not a UTF-8 JSON or YAML config") from None
    return parse_config_text(text, path)


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


def read_export(path: Path) -> tuple[ArchConfig, dict[str, Any]]:
    """(config, provenance) of a config or export file; provenance is {} for a bare config.
    ValueError naming the file when it is not one."""
    name, data = str(path), read_document(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{name}: expected a mapping of ArchConfig fields, or an export with "
            f'"config" and "provenance"; got {_kind(data)}'
        )
    provenance: dict[str, Any] = {}
    if "config" in data and "vocab_size" not in data:  # an export, as ArchConfig.from_file
        if unknown := sorted(set(data) - set(EXPORT_KEYS)):
            raise ValueError(
                f"{name}: unknown key {unknown[0]!r} in an exported file; allowed: "
                f"{', '.join(EXPORT_KEYS)}"
            )
        provenance, data = data.get("provenance") or {}, data["config"]
        if not isinstance(provenance, dict):
            raise ValueError(f'{name}: "provenance" must be a mapping, got {_kind(provenance)}')
        if not isinstance(data, dict):
            raise ValueError(
                f'{name}: "config" must be a mapping of ArchConfig fields, got {_kind(data)}'
            )
    try:
        return ArchConfig.from_dict(data), provenance
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def fits(cfg: ArchConfig, name: str) -> bool:
    """Whether the built-in task `name`, with its default options, fits `cfg`."""
    try:
        return not get_task(name, seq_len=cfg.seq_len).mismatch(cfg)
    except Exception:  # a task that cannot be built at this length fits nothing
        return False


def check_task(cfg: ArchConfig, task: Task, name: str) -> None:
    """ValueError naming the interface fields where `cfg` does not fit `task` and, where one
    fits, a built-in task to pass instead."""
    interface = task.interface()
    differ = [k for k, v in interface.items() if getattr(cfg, k) != v]
    if not differ:
        return
    ours = ", ".join(f"{k}={getattr(cfg, k)}" for k in differ)
    theirs = ", ".join(f"{k} {interface[k]}" for k in differ)
    others = [n for n in TASKS.names() if n != name and fits(cfg, n)]
    hint = f", e.g. --task {others[0]}" if others else " with --task (and its --option values)"
    verb = "does" if len(differ) == 1 else "do"
    raise ValueError(
        f"the config's {ours} {verb} not fit task {name!r} ({theirs}); pass the task it was "
        f"searched on{hint}"
    )


def recipe_of(provenance: dict[str, Any], name: str) -> Recipe:
    """The recipe the search judged the config by (the export's `recipe`, as the study stored
    it: `Recipe.from_stored`), else today's default for a bare config or an older export;
    ValueError naming the file when the stored one is not a valid recipe."""
    stored = provenance.get("recipe")
    if stored is None:
        return Recipe()
    if not isinstance(stored, dict):
        raise ValueError(f'{name}: "provenance.recipe" must be a mapping, got {_kind(stored)}')
    try:
        return Recipe.from_stored(stored)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: provenance.recipe: {exc}") from None


def batch_of(
    args: argparse.Namespace, cfg: ArchConfig, schedule: dict[str, Any], recipe: Recipe
) -> int:
    """Sequences per step (flag, else the export's schedule, else the recipe's); ValueError
    when --tokens is less than one batch (it would be rounded up to a whole one)."""
    if args.batch_tokens:
        batch_size = max(1, round(args.batch_tokens / cfg.seq_len))
        source = f"--batch-tokens {args.batch_tokens:,}"
    elif schedule.get("batch_size"):
        batch_size = schedule["batch_size"]
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(
                f"the export's schedule.batch_size must be a whole number >= 1, got "
                f"{batch_size!r}; pass --batch-tokens"
            )
        source = "the export's batch"
    else:
        batch_size = max(1, round(recipe.batch_tokens / cfg.seq_len))
        source = "the recipe's batch"
    tokens = batch_size * cfg.seq_len
    if args.tokens < tokens:
        raise ValueError(
            f"--tokens {args.tokens:,} is less than one batch ({source} = {batch_size:,} "
            f"sequences of {cfg.seq_len} = {tokens:,} tokens); raise --tokens or lower "
            "--batch-tokens"
        )
    return batch_size


def prepare_out(out: Path) -> None:
    """Create the checkpoint folder and check that it takes a file, so that an --out that
    cannot be a folder is refused before training (ValueError)."""
    make_folder(out, "--out", probe=True)


__all__ = [
    "EXPORT_KEYS",
    "batch_of",
    "check_task",
    "prepare_out",
    "read_document",
    "read_export",
    "recipe_of",
]
