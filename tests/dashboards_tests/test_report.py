"""`python -m dashboards.report`: the HTML report and its figures, on a real tiny study and on
hand-made studies for the edge cases (scaled, nearly empty, unknown variant)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from dashboards import report
from dashboards.figures import X_LABEL, variant_colors
from dashboards.report import write_report
from dashboards.trials import Point, pareto_front
from spaces import ATTENTION

CONVENTION = "fvcore: 1 multiply-add = 1 FLOP"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_figure(path: Path) -> None:
    width, height = png_size(path)
    assert width >= 8 * 120 and height >= 5 * 120, (width, height)  # >= 8x5 in at >= 120 dpi
    assert 10_000 < path.stat().st_size < 1_500_000


def assert_self_contained(page: str) -> None:
    # no script, stylesheet, image or font fetched from anywhere: figures are data: URIs
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    srcs = re.findall(r'<img src="([^"]{0,30})', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_report_of_a_real_study(built_study, tmp_path, capsys):
    out = tmp_path / "report"
    code = report.main(
        ["--study", built_study.name, "--out", str(out), "--storage", built_study.storage]
    )
    assert code == 0, capsys.readouterr().err
    index = out / "index.html"
    assert index.is_file() and "wrote" in capsys.readouterr().out
    page = index.read_text(encoding="utf-8")
    assert_self_contained(page)
    for name in ("flops_vs_metric.png", "history.png"):
        assert_figure(out / name)
    assert CONVENTION in page and X_LABEL in page

    study = built_study.load()
    completed = study.get_trials(states=(TrialState.COMPLETE,))
    assert completed, "the tiny search should complete trials"
    for t in completed:
        row = f'<td class="num">{t.number}</td><td>complete</td><td>{t.user_attrs["variant"]}</td>'
        assert row in page, f"trial {t.number} missing from the report"
    assert f"All trials ({len(study.trials)})" in page
    # importances: a figure, or a note saying why not
    if (out / "importances.png").exists():
        assert_figure(out / "importances.png")
        assert "PED-ANOVA" in page
    else:
        assert "Parameter importances" in page and 'class="note"' in page
    assert "not a scaled study" in page and not (out / "scaling.png").exists()
    assert "Top 10 configs" in page and "<th>tokens/s</th>" in page
    assert f"python -m search.export --study {built_study.name}" in page


def test_report_refuses_bad_input(built_study, tmp_path, capsys):
    out = str(tmp_path)
    code = report.main(["--study", "nope", "--out", out, "--storage", built_study.storage])
    err = capsys.readouterr().err
    assert code == 2 and "no study 'nope'" in err and repr(built_study.name) in err

    missing = tmp_path / "missing.db"
    code = report.main(
        ["--study", "x", "--out", str(tmp_path), "--storage", f"sqlite:///{missing}"]
    )
    assert code == 2 and "no study database" in capsys.readouterr().err
    assert not missing.exists(), "a report must never create an empty database"

    code = report.main(["--study", "x", "--out", str(tmp_path), "--storage", "studies.db"])
    assert code == 2 and "not a database URL" in capsys.readouterr().err

    afile = tmp_path / "afile"
    afile.write_text("x")
    name, url = built_study.name, built_study.storage
    code = report.main(["--study", name, "--out", str(afile / "sub"), "--storage", url])
    err = capsys.readouterr().err
    assert (
        code == 2 and err == f"error: cannot create --out '{afile / 'sub'}': '{afile}' is a file\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--study", name, "--out", str(tmp_path / "r"), "--storage", url, "--top", "0"])
    assert exit_info.value.code == 2
    assert "invalid --top '0': expected a whole number >= 1" in capsys.readouterr().err


def _study(**attrs) -> optuna.Study:
    study = optuna.create_study(direction=attrs.pop("study_direction", "maximize"))
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    return study


def test_scaled_study_gets_a_scaling_figure(tmp_path):
    study = _study(kind="scaled", budget=4_000_000, direction="maximize", metric="accuracy")
    dist = {"depth": IntDistribution(1, 8)}
    n = 0
    for target in (1_000_000, 2_000_000, 4_000_000):
        for frac, depth in ((0.5, 1), (0.8, 2), (0.95, 3)):
            n += 1
            study.add_trial(
                create_trial(
                    value=0.3 + 0.1 * depth + target / 1e8,
                    params={"depth": depth},
                    distributions=dist,
                    user_attrs={
                        "target": target,
                        "flops": int(frac * target),
                        "metric": 0.3 + 0.1 * depth + target / 1e8,
                        "variant": "window",
                    },
                )
            )
    index = write_report(study, tmp_path)
    page = index.read_text(encoding="utf-8")
    assert_figure(tmp_path / "scaling.png")
    assert "across scaling targets" in page and "No scaling figure" not in page
    assert_self_contained(page)


def test_importances_get_a_figure_when_enough_trials_completed(tmp_path):
    from dashboards.trials import importances

    study = _study(budget=1_000_000, direction="maximize", metric="accuracy")
    dist = {
        "depth": IntDistribution(1, 8),
        "attention": CategoricalDistribution(["full", "window"]),
    }
    for i in range(20):  # the metric follows depth alone; attention alternates
        depth, attention = 1 + i % 8, ("full", "window")[i % 2]
        study.add_trial(
            create_trial(
                value=0.1 * depth,
                params={"depth": depth, "attention": attention},
                distributions=dist,
                user_attrs={"variant": attention, "flops": 100_000 * depth},
            )
        )
    imp, note = importances(study)
    assert imp is not None and set(imp) == {"depth", "attention"}
    assert imp["depth"] > imp["attention"] and abs(sum(imp.values()) - 1) < 1e-9
    assert note.startswith("PED-ANOVA importances (Optuna) over 20 completed trials")
    page = write_report(study, tmp_path).read_text(encoding="utf-8")
    assert_figure(tmp_path / "importances.png")
    assert "PED-ANOVA" in page and "need at least" not in page


def test_nearly_empty_study_and_unknown_variant(tmp_path):
    study = _study(budget=1_000_000, direction="minimize", metric="loss")
    dist = {"attention": CategoricalDistribution(["full", "mystery"])}
    study.add_trial(
        create_trial(
            value=2.5,
            params={"attention": "mystery"},
            distributions=dist,
            user_attrs={"variant": "mystery", "flops": 500_000},
        )
    )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"attention": "full"},
            distributions=dist,
            user_attrs={"variant": "full", "flops": 3_000_000, "status": "over_budget"},
        )
    )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"status": "diverged"}))
    index = write_report(study, tmp_path / "r")
    page = index.read_text(encoding="utf-8")
    assert "need at least" in page and not (tmp_path / "r" / "importances.png").exists()
    assert '<td class="num">0</td><td>complete</td><td>mystery</td>' in page
    assert "over budget" in page and "not a scaled study" in page
    assert_figure(tmp_path / "r" / "flops_vs_metric.png")

    empty = write_report(_study(), tmp_path / "empty")  # no attrs, no trials: still a report
    assert "All trials (0)" in empty.read_text(encoding="utf-8")


@pytest.mark.parametrize("maximize", [True, False])
def test_pareto_front(maximize):
    sign = 1 if maximize else -1
    pts = [
        Point(0, "complete", "full", 100.0, sign * 0.5, "ok", ""),
        Point(1, "complete", "full", 200.0, sign * 0.4, "ok", ""),  # dominated by 0
        Point(2, "complete", "window", 300.0, sign * 0.9, "ok", ""),
        Point(3, "complete", "lsh", 50.0, sign * 0.1, "ok", ""),
        Point(4, "complete", "lsh", 100.0, sign * 0.5, "ok", ""),  # ties 0: not better
        Point(5, "over_budget", "lsh", 900.0, None, "over_budget", ""),
    ]
    assert [p.number for p in pareto_front(pts, maximize)] == [3, 0, 2]


def test_variant_colours_cover_every_variant_consistently():
    colors = variant_colors()
    assert set(ATTENTION.names()) <= set(colors)
    registered = [colors[n] for n in ATTENTION.names()]
    assert len(set(registered)) == len(registered), "two variants share a colour"
    again = variant_colors(["zzz-new"])
    assert all(again[n] == colors[n] for n in ATTENTION.names()) and "zzz-new" in again
