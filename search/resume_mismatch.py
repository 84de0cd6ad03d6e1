"""How `search.train --resume` names a checkpoint written by another run: the flag behind each
differing `FinalTrainer.identity()` field, with the checkpoint's value and the new one."""

from __future__ import annotations

from typing import Any

from trainers.final import CheckpointMismatch


def tokens_of(identity: dict[str, Any], steps: bool = True) -> int | None:
    """Training tokens (with steps=False, tokens per step) of a FinalTrainer identity."""
    try:
        per_step = int(identity["batch_size"]) * int(identity["config"]["seq_len"])
        return per_step * int(identity["steps"]) if steps else per_step
    except (KeyError, TypeError, ValueError):
        return None


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _fields(a: Any, b: Any) -> tuple[str, str]:
    """The differing keys of two mappings, as "k=v, ..." for each side."""
    a, b = (x if isinstance(x, dict) else {} for x in (a, b))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}={a.get(k)}" for k in keys), ", ".join(f"{k}={b.get(k)}" for k in keys)


Row = tuple[str, Any, Any]  # what differs (a flag where one sets it), the checkpoint's, now


def _same(t: dict[str, Any], o: dict[str, Any], *keys: str) -> bool:
    return all(t.get(k) == o.get(k) for k in keys)


def _teacher(t: dict[str, Any], o: dict[str, Any]) -> list[Row]:
    then, now = t.get("teacher"), o.get("teacher")
    if not (isinstance(then, dict) and isinstance(now, dict)):
        return [("--teacher", "a teacher" if then else "none", "a teacher" if now else "none")]
    rows: list[Row] = []
    if then.get("config") != now.get("config"):
        rows.append(("--teacher's config", *_fields(then.get("config"), now.get("config"))))
    for key, flag in (("kd_weight", "--kd-weight"), ("temperature", "--temperature")):
        if then.get(key) != now.get(key):
            rows.append((flag, then.get(key), now.get(key)))
    return rows


def _lr(identity: dict[str, Any]) -> Any:
    return "default" if identity.get("lr") is None else identity["lr"]


#: How each FinalTrainer.identity() field that differs is named to the user: the flag that sets
#: it with both values; derived fields (warmup follows --tokens) say nothing of their own.
MISMATCH_ROWS: dict[str, Any] = {
    "config": lambda t, o: [("the config file", *_fields(t.get("config"), o.get("config")))],
    "task": lambda t, o: [("--task", t.get("task"), o.get("task"))],
    "task_interface": lambda t, o: (
        [("--option", *_fields(t.get("task_interface"), o.get("task_interface")))]
        if _same(t, o, "config", "task")
        else []
    ),
    "steps": lambda t, o: (
        [("--tokens", _count(tokens_of(t)), _count(tokens_of(o)))]
        if tokens_of(t) != tokens_of(o)
        else []
    ),
    "batch_size": lambda t, o: [
        ("--batch-tokens", _count(tokens_of(t, steps=False)), _count(tokens_of(o, steps=False)))
    ],
    "seed": lambda t, o: [("--seed", t.get("seed"), o.get("seed"))],
    "lr": lambda t, o: [("--lr", _lr(t), _lr(o))],
    "teacher": _teacher,
    "version": lambda t, o: [
        ("the checkpoint format", f"version {t.get('version')}", f"version {o.get('version')}")
    ],
    "recipe": lambda t, o: [
        ("the recipe (another release)", *_fields(t.get("recipe"), o.get("recipe")))
    ],
    "warmup": lambda t, o: [],
}


def mismatch_line(exc: CheckpointMismatch) -> str:
    """The flags, with both values, in which a resumed run differs from its checkpoint's."""
    rows: list[Row] = []
    for key in exc.fields:
        rule = MISMATCH_ROWS.get(key, lambda t, o, k=key: [(k, t.get(k), o.get(k))])
        rows += rule(exc.theirs, exc.ours)
    parts = [f"{what} (the checkpoint's run: {then}; now {now})" for what, then, now in rows]
    return (
        f"the checkpoint in {exc.out} was written by a different run: it differs in "
        f"{', '.join(parts or exc.fields)}; resume with the same config and flags, or use a new "
        "--out"
    )


__all__ = ["MISMATCH_ROWS", "mismatch_line", "tokens_of"]
