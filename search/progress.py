"""The progress bar of a search: trained candidates, and what the running ones are doing.

Workers (local processes or Ray tasks) write each running trial's live progress (`progress`:
rung, tokens, loss) to the study every few seconds; the bar polls the study from a thread, so
it stays alive during a long trial whatever backend runs the workers.
"""

from __future__ import annotations

import threading

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from search.budget import format_flops
from search.results import attention_label, trained_candidates, trained_count


def _tokens(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def describe_running(trials: list[optuna.trial.FrozenTrial]) -> str:
    parts = []
    for t in trials:
        a = t.user_attrs
        if t.state != TrialState.RUNNING or a.get("status") != "training":
            continue
        p = a.get("progress") or {}
        cfg = a.get("config", {})
        shape = f"{attention_label(a)} {cfg.get('depth')}x{cfg.get('d_model')}"
        shape += f" {format_flops(a.get('flops', 0))}"
        if p:
            shape += f" r{p['rung']} {_tokens(p['tokens'])} tok loss {p['loss']:.3f}"
        parts.append(f"#{t.number} {shape}")
    return " | ".join(parts)


def best_loss(trials: list[optuna.trial.FrozenTrial]) -> str:
    done = [
        t.user_attrs["loss"]
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.user_attrs.get("loss") is not None
        and t.user_attrs.get("status") == "ok"
    ]
    return f"{min(done):.4f}" if done else "-"


class StudyProgress:
    """A tqdm bar over `total` trained candidates, refreshed from the study every `every` s."""

    def __init__(self, study: optuna.Study, total: int, quiet: bool, every: float = 2.0) -> None:
        self.study, self.total, self.every = study, total, every
        self.bar = tqdm(
            total=total,
            initial=min(trained_count(study), total),
            unit="cand",
            disable=quiet,
            dynamic_ncols=True,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def refresh(self) -> None:
        try:
            trials = self.study.get_trials(deepcopy=False)  # one read per refresh
            self.bar.n = min(trained_candidates(trials), self.total)
            running = describe_running(trials)
            self.bar.set_postfix_str(f"best loss {best_loss(trials)}; {running}"[:400])
        except Exception:  # a transient database error must never end the search
            return

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.refresh()

    def __enter__(self) -> StudyProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.refresh()
        self.bar.close()


__all__ = ["StudyProgress", "describe_running"]
