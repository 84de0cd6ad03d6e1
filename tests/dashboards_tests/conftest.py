"""One tiny real study for the dashboard and report tests, built once per test session.

It is the search tests' tiny preset (tests/search_tests/conftest.py), so six trials take
seconds; the real CLI `python -m search.run` makes it.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import optuna
import pytest

from tests.search_tests.conftest import TINY_PRESET, run_cli, search_args

STUDY = "dash"
TRIALS = 6
FAST_PRESET = TINY_PRESET


@dataclasses.dataclass(frozen=True)
class BuiltStudy:
    storage: str  # sqlite URL
    name: str
    root: Path  # the folder holding the database

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)


@pytest.fixture(scope="session")
def built_study(tmp_path_factory: pytest.TempPathFactory) -> BuiltStudy:
    root = tmp_path_factory.mktemp("dashboards")
    preset = root / "tiny.toml"
    preset.write_text(FAST_PRESET)
    storage = f"sqlite:///{root}/studies.db"
    run_cli("search.run", *search_args(preset, storage, STUDY, TRIALS), check=True)
    return BuiltStudy(storage=storage, name=STUDY, root=root)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
