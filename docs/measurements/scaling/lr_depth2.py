"""Quick check: do deep-narrow text models suffer from the recipe (LR / init) at 1M tokens?"""

import multiprocessing as mp
import warnings

warnings.filterwarnings("ignore")


def run(job):
    depth, width, heads, lr_mult, init = job
    from torch import nn

    import trainers.final as F
    from spaces import ArchConfig, build_model
    from trainers.proxy import Recipe
    from trainers.tasks import get_task

    task = get_task("text", seq_len=128, seed=0)
    cfg = ArchConfig(**task.interface(), depth=depth, d_model=width, n_heads=heads)
    if init in ("flat", "mild"):
        import math

        std = 0.02 if init == "flat" else 0.02 * math.sqrt(2 / max(2, depth))

        def build(c):
            m = build_model(c)
            for b in m.blocks:
                for o in (b.attn.o_proj, b.ffn.down):
                    nn.init.normal_(o.weight, std=std)
            return m

        F.build_model = build
    lr = Recipe().lr_for(cfg) * lr_mult
    res = F.FinalTrainer(cfg, task, 1_000_000, batch_size=8, threads=1, lr=lr).run()
    return (depth, width, lr_mult, init, res.status, res.loss)


if __name__ == "__main__":
    jobs = [(18, 64, 1, "flat"), (9, 64, 1, "mild"), (18, 64, 1, "mild"), (4, 64, 1, "flat")]
    jobs = [(d, w, 1, m, i) for d, w, m, i in jobs]
    with mp.get_context("spawn").Pool(2) as p:
        for r in p.imap(run, jobs):
            print(r, flush=True)
