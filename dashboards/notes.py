"""The study's markdown note and its best trials' exported configs, shown by optuna-dashboard.

`annotate(study, artifact_dir, top=3)` is idempotent: the note is rewritten only when its text
changes (text a user added below the marker line is kept), and a trial that already carries
its `trial-<N>-config.json` artifact is left alone (the file is written again only if it is
missing from `artifact_dir`).

Why trial artifacts are recorded in the *study's* system attributes: Optuna refuses to change a
finished trial (`optuna.artifacts.upload_artifact` on a FrozenTrial raises
UpdateFinishedTrialError), and the best trials are only known once they have finished. The
dashboard also reads trial artifacts from study system attributes under
`dashboard:artifacts:<trial_id>:<artifact_id>` (its own upload format), and serves them from
`/artifacts/<study_id>/<trial_id>/<artifact_id>`, so we write the metadata there and the file into
an `optuna.artifacts.FileSystemArtifactStore`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import mimetypes
import shlex
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna_dashboard import get_note, save_note

from search.budget import format_flops
from search.export import document
from search.optuna_private import storage_of, study_id, trial_id
from search.optuna_private import storage_url as storage_url_of
from search.plateau import pick, pick_notes
from search.results import attention_label, feasible_trials, trial_counts
from search.storage import safe_url
from spaces.flops import FLOP_UNIT

MARKER = (
    "*Written by attnsearch (`dashboards.annotate`); it rewrites everything above this line. "
    "Your own notes go below it and are kept.*"
)
# optuna-dashboard's key for trial artifacts kept in study system attributes (its upload format)
TRIAL_ARTIFACT_PREFIX = "dashboard:artifacts:{trial_id}:"
OPTUNA_ARTIFACT_PREFIX = "artifacts:"  # optuna.artifacts' key in trial/study system attributes


@dataclasses.dataclass
class Annotation:
    """What `annotate` did: whether the note changed, and per best trial number its artifact."""

    note_written: bool
    uploaded: list[int]  # trials that got a new artifact
    present: list[int]  # trials whose artifact was already there (file rewritten if missing)
    artifacts: dict[int, str]  # trial number -> artifact id


def artifact_name(trial: optuna.trial.FrozenTrial) -> str:
    return f"trial-{trial.number}-config.json"


def _storage_url(study: optuna.Study) -> str | None:
    url = storage_url_of(study)
    return safe_url(url) if url else None


def _evaluation_row(s: dict) -> tuple[str, str]:
    """How candidates were judged: rungs of equal tokens (the search's default), or, for older
    and scaled studies, equal proxy compute."""
    sched = s.get("schedule")
    if sched:
        tokens = [
            sched["first_steps"] * sched["eta"] ** k * sched["batch_size"] * sched["seq_len"]
            for k in range(sched["rungs"])
        ]
        same = (
            "the same tokens for every candidate"
            if s.get("evaluation", "tokens") == "tokens"
            else "tokens of a budget-sized model; equal training FLOPs, so smaller models "
            "see proportionally more"
        )
        return (
            "evaluation",
            f"successive halving over rungs of {', '.join(f'{t:,}' for t in tokens)} training "
            f"tokens (eta {sched['eta']}), {same}; ranked by validation loss, task metric "
            f"{s.get('task_metric', '?')} recorded",
        )
    return (
        "proxy compute",
        f"{_fmt_flops(s.get('proxy_compute'))} of training per trial, the same for every "
        "candidate (training FLOPs ≈ 3 × forward)",
    )


def _storage_lines(study: optuna.Study, storage_url: str | None) -> tuple[list[str], str]:
    """(lines that set $STORAGE, the flag that uses it); nothing when the URL is unknown."""
    url = safe_url(storage_url) if storage_url else _storage_url(study)
    if not url:
        return [], ""
    return [f"STORAGE={shlex.quote(url)}"], ' --storage "$STORAGE"'


def _fmt_flops(value: Any) -> str:
    return format_flops(value) if isinstance(value, (int, float)) else "?"


def study_note(
    study: optuna.Study,
    best: list[optuna.trial.FrozenTrial],
    storage_url: str | None = None,
) -> str:
    """The markdown note (the part above MARKER) describing the study and how to export."""
    s = study.user_attrs
    name = study.study_name
    storage_set, storage_flag = _storage_lines(study, storage_url)
    options = ", ".join(f"{k}={v}" for k, v in (s.get("task_options") or {}).items())
    task = f"`{s.get('task', '?')}`"
    details = [f"seq_len {s['seq_len']}"] if s.get("seq_len") else []
    if options:
        details.append(f"options: {options}")
    if details:
        task += f" ({'; '.join(details)})"
    direction = s.get("direction", "maximize")
    better = "higher is better" if direction == "maximize" else "lower is better"
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in trial_counts(study).items() if v)
    rows = [
        ("task", task),
        ("budget", f"{_fmt_flops(s.get('budget'))} forward per sequence"),
        ("FLOP convention", f"**{FLOP_UNIT}**, forward pass, one sequence"),
        ("metric", f"{s.get('metric', '?')} ({direction}: {better})"),
        _evaluation_row(s),
        ("objectives", str(s.get("objectives", "single"))),
        (
            "sampler / pruner / seed",
            f"{s.get('sampler', '?')} / {s.get('pruner', '?')} / {s.get('seed', '?')}",
        ),
        ("trials", counts or "none yet"),
    ]
    if s.get("kind"):
        rows.insert(0, ("kind", str(s["kind"])))
    lines = [
        f"## {name}",
        "",
        "Architecture search by attnsearch. Every FLOP figure is fvcore's convention, "
        "**one multiply-add = one FLOP** (multiply by 2 for hardware FLOPs; a training step "
        "costs about 3 forward passes).",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "### Best configs within the budget",
        "",
    ]
    if best:
        for rank, t in enumerate(best, start=1):
            a = t.user_attrs
            params = f"{a['params']:,}" if isinstance(a.get("params"), int) else "?"
            lines.append(
                f"{rank}. **trial {t.number}**: {attention_label(a) or '?'}, "
                f"{_fmt_flops(a.get('flops'))}, {params} params, "
                f"{s.get('metric', 'metric')} {t.values[0]:.4f}; config `{artifact_name(t)}`"
            )
        lines += [
            "",
            "Each of these trials carries its exported config as an artifact: open the trial "
            "(*Trials* in the left bar, pick the trial number), then *Artifacts*, and download "
            "the JSON.",
        ]
    else:
        lines.append("No completed trial within the budget yet.")
    for note in _pick_notes(study):  # search/plateau.py: a pick other than the first; ties
        lines += ["", f"**{note.removeprefix('note: ')}**"]
    lines += [
        "",
        "### Export",
        "",
        "```",
        *storage_set,
        f"python -m search.export --study {name} --out best.json{storage_flag}",
        f"python -m search.export --study {name} --top 3 --out best.json{storage_flag}",
        f"python -m search.export --study {name} --trial N --out trial-N.json{storage_flag}",
        f"python -m dashboards.report --study {name} --out report/{storage_flag}",
        "```",
        "",
        'Use it: `cfg = spaces.ArchConfig.from_file("best.json")`, '
        "`model = spaces.build_model(cfg)`.",
        "",
        "---",
        "",
        MARKER,
    ]
    return "\n".join(lines)


def _pick_notes(study: optuna.Study) -> list[str]:
    """The notes on the pick, as the summary prints them (`search.plateau.pick_notes`)."""
    try:
        chosen = pick(study)
    except LookupError:  # nothing finished within the budget yet
        return []
    return pick_notes(study, chosen)


def trial_note(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    top: int,
    storage_url: str | None = None,
) -> str:
    """The note of a best trial: where its config is and how to export it (rank-free, so it
    stays true when later trials overtake it; the study note has the current ranking)."""
    a = trial.user_attrs
    metric = study.user_attrs.get("metric", "metric")
    storage_set, storage_flag = _storage_lines(study, storage_url)
    return "\n".join(
        [
            f"### Trial {trial.number}: {attention_label(a) or '?'}, "
            f"{_fmt_flops(a.get('flops'))} ({FLOP_UNIT}), {metric} {trial.values[0]:.4f}",
            "",
            f"Among the {top} best configs at the last `annotate` (ranking: study note). "
            f"Config: the artifact `{artifact_name(trial)}` below, or",
            "",
            "```",
            *storage_set,
            f"python -m search.export --study {study.study_name} --trial {trial.number} "
            f"--out {artifact_name(trial)}{storage_flag}",
            "```",
            "",
            "---",
            "",
            MARKER,
        ]
    )


def _trial_handle(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Any:
    """What `optuna_dashboard.save_note` / `get_note` read from a trial (`storage`, `study`,
    `_trial_id`); a finished trial cannot be reopened as `optuna.Trial` without side effects."""
    return SimpleNamespace(storage=storage_of(study), study=study, _trial_id=trial_id(trial))


def _write_note(target: Any, ours: str) -> bool:
    existing = get_note(target)
    note = _merge_note(ours, existing)
    if note == existing:
        return False
    save_note(target, note)
    return True


def _merge_note(ours: str, existing: str) -> str:
    """Our section, then whatever the user wrote below the marker (or the whole note if the
    user wrote it without our marker)."""
    if MARKER in existing:
        tail = existing.split(MARKER, 1)[1]
    elif existing.strip():
        tail = "\n\n" + existing.strip() + "\n"
    else:
        tail = "\n"
    return ours + tail


def _trial_artifacts(
    study_attrs: dict[str, Any], trial: optuna.trial.FrozenTrial
) -> list[dict[str, Any]]:
    """Artifact metadata the dashboard shows for `trial` (deleted entries are null)."""
    prefix = TRIAL_ARTIFACT_PREFIX.format(trial_id=trial_id(trial))
    metas = [v for k, v in study_attrs.items() if k.startswith(prefix)]
    metas += [v for k, v in trial.system_attrs.items() if k.startswith(OPTUNA_ARTIFACT_PREFIX)]
    out = []
    for value in metas:
        meta = json.loads(value) if isinstance(value, str) else value
        if isinstance(meta, dict):
            out.append(meta)
    return out


def _exists(store: FileSystemArtifactStore, artifact_id: str) -> bool:
    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


def attach_config(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    store: FileSystemArtifactStore,
    study_attrs: dict[str, Any],
) -> tuple[str, bool]:
    """Attach `trial`'s exported config as a dashboard artifact; returns (id, newly made)."""
    name = artifact_name(trial)
    body = (json.dumps(document(study, trial), indent=2) + "\n").encode("utf-8")
    for meta in _trial_artifacts(study_attrs, trial):
        if meta.get("filename") == name and meta.get("artifact_id"):
            if not _exists(store, meta["artifact_id"]):
                store.write(meta["artifact_id"], io.BytesIO(body))
            return meta["artifact_id"], False
    artifact_id = str(uuid.uuid4())
    store.write(artifact_id, io.BytesIO(body))
    meta = {
        "artifact_id": artifact_id,
        "filename": name,
        "mimetype": mimetypes.guess_type(name)[0] or "application/json",
        "encoding": None,
    }
    storage_of(study).set_study_system_attr(
        study_id(study),
        TRIAL_ARTIFACT_PREFIX.format(trial_id=trial_id(trial)) + artifact_id,
        json.dumps(meta),
    )
    return artifact_id, True


def annotate(
    study: optuna.Study,
    artifact_dir: str | Path,
    top: int = 3,
    *,
    storage_url: str | None = None,
) -> Annotation:
    """Write the study's dashboard note and attach the exported config of its `top` best
    feasible trials as artifacts in `artifact_dir` (a FileSystemArtifactStore). Idempotent.

    `storage_url` is only shown in the note's export commands (password hidden); by default it
    is read from the study's storage. Serve the artifacts with the same directory:
    `python -m dashboards.serve --artifacts DIR`.
    """
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    best = [t for t in feasible_trials(study)[: max(0, top)] if "config" in t.user_attrs]
    study_attrs = storage_of(study).get_study_system_attrs(study_id(study))
    uploaded: list[int] = []
    present: list[int] = []
    ids: dict[int, str] = {}
    for t in best:
        ids[t.number], new = attach_config(study, t, store, study_attrs)
        (uploaded if new else present).append(t.number)

    for t in best:
        _write_note(_trial_handle(study, t), trial_note(study, t, top, storage_url))
    written = _write_note(study, study_note(study, best, storage_url))
    return Annotation(note_written=written, uploaded=uploaded, present=present, artifacts=ids)


def annotate_all(
    storage, artifact_dir: str | Path, top: int = 3, storage_url: str | None = None
) -> dict[str, Annotation | Exception]:
    """`annotate` every study in `storage`; a study that fails is reported, not raised."""
    results: dict[str, Annotation | Exception] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        try:
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            results[summary.study_name] = annotate(
                study, artifact_dir, top, storage_url=storage_url
            )
        except Exception as exc:
            results[summary.study_name] = exc
    return results
