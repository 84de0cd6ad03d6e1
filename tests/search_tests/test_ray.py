"""The Ray backend places the same worker loop as the local backend on Ray.

The "same path" and "Ray not installed" tests do not need Ray; the end-to-end run does
(`pytest.importorskip("ray")`) and is marked slow: each Ray start takes 10-20 s here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import optuna
import pytest

from search.results import trained_count
from tests.search_tests.conftest import ROOT, guard, run_cli, search_args
from tests.search_tests.test_run import assert_sound


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def test_ray_trials_run_the_local_worker_loop(monkeypatch, tiny_preset):
    """Both backends follow one path: a Ray trial is `search.workers.run_worker`, nothing else."""
    ray_backend = pytest.importorskip("search.ray_backend")
    if ray_backend.tune is None:
        pytest.skip("ray is not installed")
    calls, reports = [], []
    monkeypatch.setattr(ray_backend, "run_worker", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(ray_backend.tune, "report", reports.append)
    monkeypatch.setattr(ray_backend, "open_storage", lambda url: optuna.storages.InMemoryStorage())
    monkeypatch.setattr(ray_backend.optuna, "load_study", lambda **k: optuna.create_study())
    ray_backend._worker_trainable(
        {"worker": 3}, "settings", "study", "sqlite:///x.db", 7, None, 2, 30, "/ck"
    )
    ((args, kwargs),) = calls
    assert args == ("settings", "study", "sqlite:///x.db", 7, None, 2, 3)
    assert kwargs == {"grace_period": 30, "checkpoint_dir": "/ck"}
    assert reports == [{"trained": 0}]


def test_ray_backend_without_ray_exits_2_with_install_command(tmp_path, tiny_preset):
    """Run the CLI with `import ray` blocked, whether or not Ray is installed here."""
    storage = f"sqlite:///{tmp_path}/noray.db"
    args = [*search_args(tiny_preset, storage, "noray", 2), "--backend", "ray"]
    code = textwrap.dedent(
        f"""
        import sys

        class BlockRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
                return None

        sys.meta_path.insert(0, BlockRay())
        from search.run import main

        sys.exit(main({args!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=guard(120)
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install -e '.[ray]'" in proc.stderr
    assert not (tmp_path / "noray.db").exists()  # refused before creating anything


# ---- end to end on a local Ray instance --------------------------------------------------------


@pytest.mark.slow
def test_ray_backend_runs_resumes_and_alternates_with_the_local_backend(tmp_path, tiny_preset):
    """One study: `--backend ray` to 4 trained candidates, the local backend to 5, then Ray
    again to 6. Two Ray starts in all, to keep the suite short."""
    pytest.importorskip("ray")
    storage = f"sqlite:///{tmp_path}/r.db"
    ray_args = ("--backend", "ray", "--workers", "2")
    first = run_cli(
        "search.run", *search_args(tiny_preset, storage, "ray", 4, *ray_args), check=True
    )
    assert "top candidates" in first.stdout
    study = load(storage, "ray")
    assert 4 <= trained_count(study) <= 5  # two workers may finish at once
    assert_sound(study)
    assert (tmp_path / "ray_results").is_dir()  # Tune's folders next to the study file
    assert not (ROOT / "ray_results").exists()

    run_cli("search.run", *search_args(tiny_preset, storage, "ray", 6), check=True)
    assert trained_count(load(storage, "ray")) == 6

    run_cli("search.run", *search_args(tiny_preset, storage, "ray", 8, *ray_args), check=True)
    study = load(storage, "ray")
    assert 8 <= trained_count(study) <= 9
    assert_sound(study)
    # the same multi-fidelity records as the local backend wrote
    rungs = {t.user_attrs.get("rung") for t in study.get_trials() if "rung" in t.user_attrs}
    assert 2 in rungs


def test_gpu_share_per_ray_trial():
    """--gpus-per-trial: none on the CPU; 4 trials per GPU by default with CUDA, as local
    workers; Ray's rule (fractions up to 1, whole numbers above) checked before Ray starts."""
    from search.ray_backend import RayConfigError, gpu_share

    assert gpu_share("cpu", None) == 0.0
    assert gpu_share("cuda", None) == 0.25
    assert [gpu_share("cuda", g) for g in (0.5, 1, 2)] == [0.5, 1.0, 2.0]
    for device, g, message in (
        ("cpu", 1, "needs --device cuda"),
        ("cuda", 0, "must be a fraction"),
        ("cuda", 1.5, "must be a fraction"),
        ("cuda", -1, "must be a fraction"),
    ):
        with pytest.raises(RayConfigError, match=message):
            gpu_share(device, g)
