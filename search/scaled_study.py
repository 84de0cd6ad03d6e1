"""The scaled study `search.scale` writes once all its work has succeeded.

One study per scaling run, `<study>-scaled` by default, linked to its base study: attributes
`kind = "scaled"`, `base_study`, `coefficients` and the grid; one trial per grid point and per
target (untrained targets PRUNED with status `untrained`). FLOPs: fvcore, 1 multiply-add = 1 FLOP.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from search.compound import Coefficients
from spaces import ArchConfig
from spaces.flops import FLOP_CONVENTION, count_flops, count_params
from spaces.layers import describe_stack


@dataclasses.dataclass(frozen=True)
class ScaleOutcome:
    """Everything one scaling run produced."""

    base_trial: int
    base: ArchConfig
    coeffs: Coefficients
    source: str  # "given" or the grid family that won
    grid_rows: list[dict[str, Any]]  # one per grid point trained
    scaled: list[tuple[float, ArchConfig, float]]  # (target, config, phi)
    trained: list[dict[str, Any] | None]  # the base's result, then one per target (or None)


def write_study(
    storage, study: optuna.Study, out_name: str, o: ScaleOutcome, tolerance: float, settings
) -> None:
    """Store everything as the scaled study; only called once all work succeeded. Only a
    scaled study is ever replaced (ValueError otherwise): never the base or a search study."""
    kinds = {
        s.study_name: s.user_attrs.get("kind", "search")
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    if out_name == study.study_name or kinds.get(out_name, "scaled") != "scaled":
        raise ValueError(
            f"study {out_name!r} is a {kinds[out_name]} study, not a scaled study; "
            "nothing was written (choose another --out-study)"
        )
    if out_name in kinds:
        optuna.delete_study(study_name=out_name, storage=storage)
    out = optuna.create_study(study_name=out_name, storage=storage, direction="minimize")
    attrs = {
        "kind": "scaled",
        "base_study": study.study_name,
        "base_trial": o.base_trial,
        "base_flops": count_flops(o.base),
        "coefficients": list(o.coeffs.as_tuple()),
        "coefficient_source": o.source,
        "tolerance": tolerance,
        "grid": o.grid_rows,
        "targets": sorted(target for target, _, _ in o.scaled),
        "flop_convention": FLOP_CONVENTION,
        "metric": "val_loss",
        "direction": "minimize",
        "task_metric": study.user_attrs.get("task_metric"),
        "identity": study.user_attrs.get("identity"),
        "seed": settings.seed,
        "task": settings.task,
        "versions": study.user_attrs.get("versions"),
    }
    for key, value in attrs.items():
        out.set_user_attr(key, value)

    def add(cfg: ArchConfig, role: str, extra: dict, loss: float | None) -> None:
        user_attrs = {
            "role": role,
            "config": cfg.to_dict(),
            "variant": cfg.attention,
            **({"stack": describe_stack(cfg)} if cfg.layer_attention else {}),
            "span": cfg.span,
            "d_model": cfg.d_model,
            "flops": count_flops(cfg),
            "flop_convention": FLOP_CONVENTION,
            "params": count_params(cfg),
            **extra,
        }
        state = (
            optuna.trial.TrialState.COMPLETE if loss is not None else optuna.trial.TrialState.PRUNED
        )
        out.add_trial(optuna.trial.create_trial(state=state, value=loss, user_attrs=user_attrs))

    for g in o.grid_rows:
        add(
            ArchConfig.from_dict(g["config"]),
            "grid",
            {k: v for k, v in g.items() if k != "config"},
            g["loss"],
        )
    for (target, cfg, phi), res in zip(o.scaled, o.trained[1:]):
        res = res or {"loss": None, "metric": None, "status": "untrained", "reason": ""}
        add(cfg, "target", {"target": target, "phi": phi, **res}, res["loss"])
    study.set_user_attr("scaling_coefficients", list(o.coeffs.as_tuple()))
    study.set_user_attr("scaled_study", out_name)
