"""`python -m search.train best.json --tokens 5M`: train an exported (or scaled) config for real.

The final step after a search: the config trains with the recipe the search judged it by
(trainers/final.py: AdamW, width- and batch-scaled learning rate, warmup-stable-decay, bf16
autocast on CUDA) on the task's deterministic data stream. An exported file's provenance
supplies the task, its options, the seed and the batch size; flags override them. Checkpoints
(config.json + model.safetensors, loadable with `spaces.build_model` + `load_state_dict`) are
written atomically at every evaluation; `--resume` continues exactly, with the same data order.
Ctrl-C finishes the current step, writes a checkpoint and exits 130.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from pathlib import Path
from typing import Any

from search.budget import (
    count_arg,
    device_arg,
    device_problem,
    format_flops,
    number_arg,
    whole_number_arg,
)
from search.cli import Parser, run_main
from search.parallelism import default_parallelism
from search.resume_mismatch import mismatch_line
from search.settings import DEFAULT_TASK
from search.train_input import batch_of, check_task, prepare_out, read_export, recipe_of
from spaces import ArchConfig
from spaces.atomic import write_text
from spaces.flops import FLOP_CONVENTION, count_flops
from spaces.layers import describe_stack
from trainers.distill import DEFAULT_KD_WEIGHT, DEFAULT_TEMPERATURE, Teacher
from trainers.final import CheckpointMismatch, FinalResult, FinalTrainer
from trainers.proxy import Recipe
from trainers.tasks import get_task

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130

EPILOG = """examples:
  python -m search.export --study text-2.00GFLOPs --out best.json
  python -m search.train best.json --tokens 5M --out runs/best
  python -m search.train best.json --tokens 5M --out runs/best --resume
  python -m search.train cfg.json --task recall --option num_pairs=8 --tokens 2M --device cuda
load the result:  cfg = ArchConfig.from_file("runs/best/config.json"); model = build_model(cfg)
                  model.load_state_dict(safetensors.torch.load_file("runs/best/model.safetensors"))"""


def option_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"invalid --option {text!r}: expected KEY=VALUE, e.g. num_pairs=8"
        )
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m search.train",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("config", help="a config or an exported file (.json, .yaml), e.g. best.json")
    a("--tokens", type=count_arg, required=True, help="training tokens, e.g. 5M or 2.5e6")
    a(
        "--task",
        help="task (text, recall, listops or pkg.module:Class); default: the export's, else "
        f"{DEFAULT_TASK}",
    )
    a(
        "--data",
        nargs="+",
        metavar="PATH",
        help="UTF-8 text files for --task text; default: the export's (the search's --data), "
        "else the interpreter's stdlib sources",
    )
    a(
        "--option",
        type=option_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option (repeatable), e.g. num_pairs=8; default: the export's",
    )
    a("--seed", type=int, help="seed for data and initialisation; default: the export's, else 0")
    a(
        "--batch-tokens",
        type=count_arg,
        help="tokens per optimizer step (default: the search's batch from the export, else "
        f"{Recipe().batch_tokens})",
    )
    a(
        "--lr",
        type=number_arg("--lr", 0, math.inf, "3e-4"),
        help="peak learning rate (default: the rule of the recipe the search judged the config "
        "by, from the export, else today's; scaled by width and step tokens)",
    )
    a(
        "--eval-every",
        type=count_arg,
        help="tokens between evaluations (default: a tenth of the run)",
    )
    a(
        "--teacher",
        metavar="RUN_DIR",
        help="distil from this trained run (a search.train output folder) with the same task",
    )
    a(
        "--kd-weight",
        type=float,
        help=f"weight of the distillation term in [0, 1] (default {DEFAULT_KD_WEIGHT}; "
        "needs --teacher)",
    )
    a(
        "--temperature",
        type=float,
        help=f"softmax temperature of the distillation term (default {DEFAULT_TEMPERATURE}; "
        "needs --teacher)",
    )
    a("--out", help="checkpoint folder (default runs/<config file stem>)")
    a("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    a("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:N or mps")
    a(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the training step: auto (default) = on with CUDA (measured on an "
        "H200: 1.5-4.6x faster steps for 20-41 s of compiling), off on the CPU",
    )
    a(
        "--threads",
        type=whole_number_arg("--threads", 1),
        help="torch threads (default 1 on CPU: robust on a busy machine)",
    )
    a("--quiet", action="store_true", help="no progress bar")
    return p


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def build(args: argparse.Namespace) -> tuple[FinalTrainer, ArchConfig, str]:
    """(the trainer the flags describe, its config, where its peak learning rate comes from);
    ValueError (CheckpointMismatch for a --resume of a run with other flags) / OSError for bad
    input. Writes nothing."""
    path = Path(args.config)
    cfg, prov = read_export(path)
    recipe = recipe_of(prov, str(path))
    batch_size = batch_of(args, cfg, prov.get("schedule") or {}, recipe)
    options = dict(prov.get("task_options") or {}) if args.task is None else {}
    options.update(dict(args.option))
    data = args.data or (prov.get("data") if args.task is None else None)
    if data:  # --data, else the search's own files (an export from a --data search)
        options["data"] = list(data)
    task_name = args.task or prov.get("task") or DEFAULT_TASK
    seed = args.seed if args.seed is not None else int(prov.get("seed") or 0)
    task = get_task(task_name, seed=seed, seq_len=cfg.seq_len, **options)
    check_task(cfg, task, task_name)
    _, threads = default_parallelism(1, args.threads, args.device)
    out = Path(args.out) if args.out else Path("runs") / path.stem
    eval_steps = None
    if args.eval_every:
        eval_steps = max(1, round(args.eval_every / (batch_size * cfg.seq_len)))
    teacher = None
    if args.teacher:
        kd = DEFAULT_KD_WEIGHT if args.kd_weight is None else args.kd_weight
        t = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
        teacher = Teacher.load(args.teacher, task, args.device, kd_weight=kd, temperature=t)
    elif args.kd_weight is not None or args.temperature is not None:
        raise ValueError("--kd-weight and --temperature need --teacher RUN_DIR")
    trainer = FinalTrainer(
        cfg,
        task,
        args.tokens,
        batch_size=batch_size,
        recipe=recipe,
        seed=seed,
        device=args.device,
        threads=threads,
        out=out,
        eval_every=eval_steps,
        lr=args.lr,
        teacher=teacher,
        compile_model=args.compile == "on" or (args.compile == "auto" and "cuda" in args.device),
    )
    if trainer.has_checkpoint() and not args.resume:
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it, or --out NEW_FOLDER"
        )
    if args.resume:
        if not trainer.has_checkpoint():
            raise ValueError(
                f"--resume: no run in {str(out)!r} to continue; drop --resume to start a new run"
            )
        trainer.check_resume()  # CheckpointMismatch (a ValueError) before any banner
    return trainer, cfg, lr_origin(args.lr, prov, recipe, cfg, batch_size * cfg.seq_len)


def lr_origin(
    lr: float | None, prov: dict, recipe: Recipe, cfg: ArchConfig, batch_tokens: int
) -> str:
    """Where the peak learning rate comes from, for the banner: --lr, or the rule with its
    numbers and whose recipe it is (the study's, or today's default for an export without
    one)."""
    if lr is not None:
        return "--lr"
    whose = "the study's recipe" if prov.get("recipe") else "the default recipe"
    return f"{whose}: {recipe.lr_rule(cfg, batch_tokens)}"


def write_result(trainer: FinalTrainer, result: FinalResult) -> None:
    """`result.json` in the run folder: status, tokens, compute, final loss and metric."""
    if trainer.out is None or not trainer.out.is_dir():
        return
    row = {k: v for k, v in result.to_dict().items() if k != "history"}
    row["metric_name"] = trainer.task.metric
    if trainer.teacher is not None:
        row["teacher"] = {"source": trainer.teacher.source, **trainer.teacher.identity()}
    text = json.dumps(row, indent=1) + "\n"
    write_text(trainer.out / "result.json", text)


def describe(result: FinalResult, metric_name: str) -> str:
    if result.loss is None:
        return f"{result.status}: {result.reason or 'no evaluation yet'}"
    return (
        f"{result.status}: {result.tokens:,} tokens, val loss {result.loss:.4f}, "
        f"{metric_name} {result.metric:.4f}, {result.tokens_per_s:,.0f} tokens/s, "
        f"training compute {format_flops(result.train_flops)}"
        + (f" ({result.reason})" if result.reason else "")
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if problem := device_problem(args.device):
        return fail(problem)
    try:
        trainer, cfg, origin = build(args)
        assert trainer.out is not None  # build always gives the trainer a folder
        prepare_out(trainer.out)
    except CheckpointMismatch as exc:  # a --resume with other flags: name them
        return fail(mismatch_line(exc))
    except (ValueError, OSError) as exc:
        return fail(str(exc).splitlines()[0])
    announce(trainer, cfg, origin)
    try:
        result = run_with_progress(trainer, args.resume, args.quiet)
    except CheckpointMismatch as exc:
        return fail(mismatch_line(exc))
    except ValueError as exc:
        return fail(str(exc).splitlines()[0])
    print(describe(result, trainer.task.metric))
    write_result(trainer, result)
    if result.status == "interrupted":
        print(f"checkpoint kept in {trainer.out}; continue with the same command and --resume")
        return EXIT_INTERRUPTED
    if result.status != "ok":
        print(f"error: training {result.status}: {result.reason}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {trainer.out / 'config.json'} and {trainer.out / 'model.safetensors'}")
    return 0


def announce(trainer: FinalTrainer, cfg: ArchConfig, lr_origin: str) -> None:
    task = trainer.task
    print(
        f"training {describe_stack(cfg)} depth {cfg.depth} width {cfg.d_model} heads {cfg.n_heads} "
        f"({format_flops(count_flops(cfg))} per sequence, {FLOP_CONVENTION}) on {task.name} for "
        f"{trainer.tokens:,} tokens: {trainer.steps:,} steps of {trainer.batch_size} x "
        f"{task.seq_len}, peak learning rate {trainer.peak_lr:.3g} ({lr_origin}); checkpoints in "
        f"{trainer.out}",
        flush=True,
    )
    if trainer.teacher is not None:
        t = trainer.teacher
        print(
            f"distilling from {t.source}: {describe_stack(t.cfg)} depth {t.cfg.depth} width "
            f"{t.cfg.d_model} ({format_flops(t.flops_per_sequence)} per sequence, forward counted "
            f"in the training compute), kd-weight {t.kd_weight}, temperature {t.temperature}",
            flush=True,
        )


def run_with_progress(trainer: FinalTrainer, resume: bool, quiet: bool) -> FinalResult:
    """Train with a progress bar (tokens, loss, tokens/s) and evaluation lines; the first Ctrl-C
    or `kill` (SIGTERM) finishes the step, checkpoints and returns an "interrupted" result, a
    second one aborts."""
    stop = {"requested": False}

    def on_stop(signum, frame):
        stop["requested"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=trainer.tokens, unit="tok", unit_scale=True, dynamic_ncols=True)

    def on_progress(p) -> None:
        if bar is not None:
            bar.set_postfix(loss=f"{p.train_loss:.3f}", refresh=False)
            bar.update(p.tokens - bar.n)

    def on_eval(e) -> None:
        line = (
            f"step {e.step:,}: {e.tokens:,} tokens, val loss {e.loss:.4f}, "
            f"{trainer.task.metric} {e.metric:.4f}"
        )
        (bar.write if bar is not None else print)(line)

    try:
        return trainer.run(
            resume=resume,
            on_progress=on_progress,
            on_eval=on_eval,
            should_stop=lambda: stop["requested"],
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if bar is not None:
            bar.close()


if __name__ == "__main__":
    run_main(main)
