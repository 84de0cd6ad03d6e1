"""What the batch memo and the multi-tensor optimizer save a small model's training, side by side.

    python -m benchmarks.step_cost [--task listops] [--seq-len 128] [--batch 8] [--steps 1000]
                                   [--threads 1] [--json PATH]

For each config (by default the nine of the ListOps outcome in docs/results.md: the shapes a
CPU search of ListOps trains) it runs `FinalTrainer` for the same steps three ways, one after
the other in this process:

* `before`: every batch drawn (no memo) and torch's per-tensor AdamW and clipping loops, what
  the trainers did until 2026-12-06;
* `first`: the memo empty (this process's first model draws and stores the stream) and foreach
  AdamW and clipping;
* `later`: the memo filled (every later model of a search worker or an outcome process).

and prints tokens/s of each, the speed-up of `later` over `before`, and whether the three
ended in the same training and validation loss (they must: foreach gives the same numbers).
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import torch

import trainers.step
from benchmarks.outcome import describe
from search.cli import Parser, run_main
from spaces import ArchConfig
from trainers.final import FinalTrainer
from trainers.tasks import get_task
from trainers.tasks.cache import TRAIN_BATCHES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "docs/measurements/outcome/listops-10MFLOPs-seq128-rung262k-b8-outcome.json"


@contextlib.contextmanager
def before(task):
    """The trainers as they were: no memo, per-tensor AdamW and clipping."""
    cls, kernel, clip = type(task), trainers.step._kernel, torch.nn.utils.clip_grad_norm_
    cap = cls.train_cache_mb
    cls.train_cache_mb = 0
    trainers.step._kernel = lambda params: {"foreach": False}
    torch.nn.utils.clip_grad_norm_ = functools.partial(clip, foreach=False)
    try:
        yield
    finally:
        cls.train_cache_mb = cap
        trainers.step._kernel, torch.nn.utils.clip_grad_norm_ = kernel, clip


def train(cfg: ArchConfig, task, steps: int, batch: int) -> tuple[float, float, float]:
    """(tokens/s, last training loss, final validation loss) of `steps` steps."""
    trainer = FinalTrainer(cfg, task, steps * batch * task.seq_len, batch_size=batch)
    trainer.eval_steps = {trainer.steps}  # one evaluation, at the end
    res = trainer.run()
    if res.status != "ok" or res.loss is None:
        raise SystemExit(f"{describe(cfg)}: {res.status} {res.reason}")
    return res.tokens_per_s, res.history[-1].train_loss, res.loss


def main(argv: list[str] | None = None) -> None:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=str(DEFAULT), help="an outcome JSON whose configs to time")
    p.add_argument("--task", default="listops")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--steps", type=int, default=1000, help="training steps per config and way")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = json.loads(Path(args.configs).read_text())["results"]
    task = get_task(args.task, seq_len=args.seq_len, n_val=256)
    print(
        f"task {args.task}, {args.seq_len} tokens, batch {args.batch}, {args.steps} steps per "
        f"run, {args.threads} thread(s); tokens/s"
    )
    print(f"{'config':40s} {'before':>8s} {'first':>8s} {'later':>8s} {'later/before':>12s} same")
    out = []
    for row in rows:
        cfg = ArchConfig.from_dict(row["config"])
        TRAIN_BATCHES.clear()
        with before(task):
            old = train(cfg, task, args.steps, args.batch)
        first = train(cfg, task, args.steps, args.batch)
        later = train(cfg, task, args.steps, args.batch)
        same = old[1:] == first[1:] == later[1:]
        name = describe(cfg)
        print(
            f"{name:40s} {old[0]:8.0f} {first[0]:8.0f} {later[0]:8.0f} "
            f"{later[0] / old[0]:11.2f}x {'yes' if same else 'NO'}",
            flush=True,
        )
        out.append(dict(config=name, before=old[0], first=first[0], later=later[0], same=same))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    run_main(main)
