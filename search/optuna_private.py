"""Every use of Optuna's private API, in one place.

Optuna has no public way to do these few things, so the rest of the code calls these helpers
instead of touching `study._storage`, `trial._trial_id` or `optuna.storages._rdb` itself.
tests/search_tests/test_optuna_private.py pins each behaviour against the installed Optuna: an
upgrade that breaks one fails there, naming the helper, not somewhere deep in a search.

* `storage_of(study)`, `study_id(study)`, `trial_id(trial)`: the storage handles that
  optuna-dashboard's notes and artifacts and our claim/annotate writes need.
* `rdb_models()`: Optuna's SQLAlchemy table models, for the two writes its storage API refuses
  (claiming a WAITING trial atomically; a user attribute on a finished trial).
* `OPTIMIZE_LOGGER`: the logger Optuna reports failed trials on (we filter Ctrl-C tracebacks).
"""

from __future__ import annotations

from types import ModuleType

import optuna
from optuna.storages import BaseStorage

OPTIMIZE_LOGGER = "optuna.study._optimize"


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage object a loaded study reads and writes (its RDBStorage, possibly wrapped in
    Optuna's cache)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's row id in the storage (what storage methods take)."""
    return study._study_id


def trial_id(trial: optuna.trial.FrozenTrial | optuna.Trial) -> int:
    """The trial's row id in the storage; differs from `trial.number` once a database holds
    several studies."""
    return trial._trial_id


def frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """A running trial's stored record (its system attributes included), read alone."""
    return storage_of(trial.study).get_trial(trial_id(trial))


def storage_url(study: optuna.Study) -> str | None:
    """The database URL the study was loaded from, or None for in-memory storage."""
    storage = storage_of(study)
    url = getattr(getattr(storage, "_backend", storage), "url", None)
    return url if isinstance(url, str) else None


def rdb_models() -> ModuleType:
    """Optuna's own table models (`TrialModel`, `TrialUserAttributeModel`, ...)."""
    from optuna.storages._rdb import models

    return models
