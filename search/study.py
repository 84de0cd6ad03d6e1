"""Opening a study, and reading back what it was made with.

`open_study` creates a study with its identity (the settings that give its results meaning),
rung schedule and provenance, or resumes one after checking that this run means the same.
`stored_schedule` and `settings_from_study` read back how a study's candidates were trained, for
the commands that retrain its configs (scale, fidelity, the benchmarks); a task stored as an
import path is only imported when the user allows it (`check_task_trusted`).
"""

from __future__ import annotations

import json
import platform
from typing import Any, Literal

import optuna

from search.samplers import holds_at_chance, make_pruner, make_sampler, seed_offset
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, open_storage
from spaces.flops import FLOP_UNIT
from spaces.space import SearchSpace, stored_positions
from trainers.proxy import Recipe
from trainers.rungs import RungSchedule
from trainers.tasks import TASKS


class StudyMismatch(ValueError):
    """Resuming a study with settings that change what its results mean."""


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import fvcore  # noqa: F401
    import torch

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:
            return "unknown"

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "fvcore": v("fvcore"),
        "attnsearch": v("attnsearch"),
    }


def open_study(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    task,
    grace_period: int = GRACE_PERIOD,
    schedule: RungSchedule | None = None,
) -> optuna.Study:
    """Create the study with its attributes and rung schedule, or resume it after checking it
    means the same. A resumed study keeps the schedule it was created with (equal tokens per
    rung across sessions): read it back with `stored_schedule`."""
    storage = open_storage(storage_url, grace_period=grace_period)
    identity = settings.identity()
    identity["seq_len"] = task.seq_len
    identity["corpus"] = getattr(task, "corpus", None)
    # candidates are ranked by validation loss (continuous; accuracy ties at chance)
    directions: list[Literal["minimize", "maximize"]] = (
        ["minimize"] if settings.objectives == "single" else ["minimize", "minimize"]
    )
    existing = {
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        load_if_exists=True,
        directions=directions,
        pruner=make_pruner(settings),
    )
    study.sampler = make_sampler(settings, offset=seed_offset(study))
    if study_name in existing:
        # the seed (data, init) and sampler shape the results and the export's provenance
        mixed = [
            f"{key}: study has {study.user_attrs[key]!r}, this run {value!r}"
            for key, value in (("seed", settings.seed), ("sampler", settings.sampler))
            if key in study.user_attrs and study.user_attrs[key] != value
        ]
        if mixed:
            raise StudyMismatch(
                f"study {study_name!r} was created with a different {'; '.join(mixed)}. Resume "
                "it with the same --seed and --sampler, or pass a new --study name."
            )
        stored = study.user_attrs.get("identity")
        if stored is not None and stored != json.loads(json.dumps(identity)):
            diffs = [k for k in identity if json.dumps(stored.get(k)) != json.dumps(identity[k])]
            details = "; ".join(
                f"{k}: study has {stored.get(k)!r}, this run {identity[k]!r}"
                for k in diffs
                if k not in ("space", "recipe")
            )
            if any(k in ("space", "recipe") for k in diffs):
                details += (
                    "; " + ", ".join(k for k in diffs if k in ("space", "recipe")) + " differ"
                )
            if "lr_batch_tokens" not in (stored.get("recipe") or {}) and "recipe" in diffs:
                details += (
                    " (the learning rate now scales with the step's tokens: a study made before "
                    "resumes with lr_batch_tokens = 0 in its preset's [recipe])"
                )
            was, now = (stored_positions(x.get("space")) for x in (stored, identity))
            if was != now:
                details += (
                    f" (positions: study has {was!r}, this run "
                    f"{now!r}; a study made before rotary positions "
                    'became the default resumes with positions = "learned" in its preset\'s '
                    "[space])"
                )
            raise StudyMismatch(
                f"study {study_name!r} was created with different settings ({details.strip('; ')})"
                f". Resume it with the same settings, or pass a new --study name."
            )
        study.set_user_attr("cut_at_chance", not holds_at_chance(settings))  # this session's
        return study
    study.set_user_attr("identity", identity)
    for key, value in identity.items():
        study.set_user_attr(key, value)
    study.set_user_attr("flop_convention", FLOP_UNIT)
    study.set_user_attr("metric", "val_loss")
    study.set_user_attr("direction", "minimize")
    study.set_user_attr("task_metric", task.metric)
    study.set_user_attr("task_direction", task.direction)
    study.set_user_attr("chance_loss", task.chance_loss())  # the best constant guess, nats
    plateau = task.plateau_loss()  # e.g. a language model's bigram loss (search.plateau)
    if plateau is not None:
        study.set_user_attr("plateau_loss", plateau)
    if schedule is not None:
        study.set_user_attr("schedule", schedule.to_dict())
    study.set_user_attr("sampler", settings.sampler)
    study.set_user_attr("pruner", settings.pruner)
    # whether this run's pruner cuts at an at-chance rung (--cut-at-chance, hyperband, none)
    study.set_user_attr("cut_at_chance", not holds_at_chance(settings))
    study.set_user_attr("seed", settings.seed)
    study.set_user_attr("interface", task.interface())
    study.set_user_attr("versions", versions())
    return study


def stored_schedule(study: optuna.Study) -> RungSchedule | None:
    data = study.user_attrs.get("schedule")
    return None if data is None else RungSchedule(**data)


class UntrustedTask(ValueError):
    """A study names a task by import path, and the user did not allow importing it."""


def check_task_trusted(study: Any, allow_task: str | None = None) -> None:
    """Raise UntrustedTask when the study's task is an import path the user did not allow."""
    task = study.user_attrs.get("identity", {}).get("task")
    if task is not None and task not in TASKS and task != allow_task:
        raise UntrustedTask(
            f"study {study.study_name!r} was made with the task import path {task!r}; a command "
            f"that reads a database does not import code named in it. If you trust that "
            f"module, pass --allow-task {task}"
        )


def settings_from_study(
    study: Any, device: str | None = None, allow_task: str | None = None
) -> RunSettings:
    """The settings a study was created with (from its stored identity), e.g. to retrain its
    configs the same way; `device` overrides where they run.

    A database is data, not code: a task stored as an import path (``pkg.module:Class``) is only
    imported when the user names the same path in `allow_task` (``--allow-task``); built-in
    tasks load as they are."""
    check_task_trusted(study, allow_task)
    ident = study.user_attrs["identity"]
    extra = {
        k: ident[k] for k in ("evaluation", "eta", "rungs") if k in ident
    }  # studies made before the rung evaluator lack these
    return RunSettings(
        budget=ident["budget"],
        task=ident["task"],
        task_options=ident["task_options"],
        data=ident["data"],
        seq_len=ident["seq_len"],
        proxy_compute=ident["proxy_compute"],
        space=SearchSpace.from_stored(ident["space"]),
        recipe=Recipe.from_stored(ident["recipe"]),
        seed=study.user_attrs.get("seed", 0),
        device=device or "cpu",
        **extra,
    )
