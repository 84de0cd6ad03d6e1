"""Knowledge distillation from a trained teacher (Hinton et al. 2015; DistilBERT's logit loss).

`Teacher.load(folder, task)` reads a run that `search.train` wrote (config.json +
model.safetensors), checks that it shares the task's interface (vocabulary, classes, sequence
length, attention direction) and runs it in eval mode without gradients (bf16 autocast on
CUDA). `Teacher.loss(logits, batch)` is the student's training loss:

    (1 - kd_weight) * task loss + kd_weight * T^2 * KL(teacher_T || student_T)

per scored token for LM tasks and per example for classification (`Task.distill_loss`).
The teacher's forward FLOPs (`flops_per_sequence`) count toward the run's training compute.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from spaces import ArchConfig, build_model
from spaces.flops import count_flops
from trainers.step import autocast
from trainers.tasks import Batch, Task

DEFAULT_KD_WEIGHT = 0.5
DEFAULT_TEMPERATURE = 2.0  # DistilBERT's


def check_interface(cfg: ArchConfig, task: Task, source: str) -> None:
    """Refuse a teacher whose vocabulary, classes, length or direction differ from the task's."""
    if got := task.mismatch(cfg):
        raise ValueError(f"the teacher {source} does not share the task's interface: {got}")


def _some(keys: list[str], shown: int = 2) -> str:
    """The first `shown` keys and how many more, e.g. "a, b and 3 more"."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def weights_mismatch(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> str:
    """One line on how `weights` differ from `model`'s parameters (missing, unexpected, other
    shapes), "" when they load strictly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [
        f"{k} {list(weights[k].shape)} vs {list(expected[k].shape)}"
        for k in sorted(set(expected) & set(weights))
        if weights[k].shape != expected[k].shape
    ]
    parts = [
        f"{label}: {_some(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape in the file vs config.json", shapes),
        )
        if keys
    ]
    return "; ".join(parts)


class Teacher:
    """A frozen trained model whose softened predictions the student learns from."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: ArchConfig,
        task: Task,
        *,
        kd_weight: float = DEFAULT_KD_WEIGHT,
        temperature: float = DEFAULT_TEMPERATURE,
        source: str = "",
    ) -> None:
        if not (isinstance(kd_weight, (int, float)) and 0.0 <= kd_weight <= 1.0):
            raise ValueError(f"--kd-weight must be in [0, 1], got {kd_weight!r} (e.g. 0.5)")
        if not (
            isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(
                f"--temperature must be a positive number, got {temperature!r} (e.g. 2)"
            )
        check_interface(cfg, task, source)
        self.model = model.eval().requires_grad_(False)
        self.cfg, self.task, self.source = cfg, task, source
        self.kd_weight, self.temperature = float(kd_weight), float(temperature)
        self.flops_per_sequence = count_flops(cfg)  # forward only: the teacher never trains

    @classmethod
    def load(
        cls, folder: str | Path, task: Task, device: str | torch.device = "cpu", **kw: Any
    ) -> Teacher:
        """The teacher in `folder` (a `search.train` output: config.json + model.safetensors)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
        if missing:
            raise ValueError(
                f"--teacher {str(folder)!r} is not a trained run (missing {', '.join(missing)}); "
                "pass a folder that python -m search.train wrote"
            )
        where = f"--teacher {str(folder)!r}"
        try:
            cfg = ArchConfig.from_file(folder / "config.json")
        except UnicodeDecodeError:
            raise ValueError(f"{where}: config.json is not UTF-8 JSON") from None
        check_interface(cfg, task, repr(str(folder)))  # before building anything
        model = build_model(cfg)
        try:
            weights = load_file(folder / "model.safetensors")
        except (SafetensorError, OSError, ValueError) as exc:  # junk, truncated, unreadable
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{where}: model.safetensors is unreadable ({first})") from None
        if problem := weights_mismatch(model, weights):
            raise ValueError(f"{where}: its weights do not match its config.json ({problem})")
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{where}: cannot load its weights: {first}") from None
        return cls(model.to(device), cfg, task, source=repr(str(folder)), **kw)

    def logits(self, batch: Batch) -> torch.Tensor:
        with torch.inference_mode(), autocast(batch.tokens.device):
            return self.model(batch.tokens, batch.mask).float()

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The distillation training loss of the student's `logits` on `batch`."""
        task_loss = self.task.loss(logits, batch)
        if self.kd_weight == 0.0:
            return task_loss
        teacher = self.logits(batch).clone()  # out of inference mode, so autograd may read it
        kd = self.task.distill_loss(logits, teacher, batch, self.temperature)
        return (1.0 - self.kd_weight) * task_loss + self.kd_weight * kd

    def identity(self) -> dict[str, Any]:
        """What a resumed run must match."""
        return {
            "config": self.cfg.to_dict(),
            "kd_weight": self.kd_weight,
            "temperature": self.temperature,
        }


__all__ = [
    "DEFAULT_KD_WEIGHT",
    "DEFAULT_TEMPERATURE",
    "Teacher",
    "check_interface",
    "weights_mismatch",
]
