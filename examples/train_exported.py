"""Train an exported config with plain PyTorch: what any training pipeline does with it.

    python -m search.export --study recall-2.00GFLOPs --out best.json
    python examples/train_exported.py best.json --steps 100

Only `spaces` is used (ArchConfig.from_file + build_model); the data here is random tokens, to
be replaced by your own loader. LM configs (num_classes = 0) learn next-token prediction,
classifier configs a label per sequence.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from spaces import ArchConfig, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="exported .json or .yaml file")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps, e.g. 100")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args()

    cfg = ArchConfig.from_file(args.config)
    model = build_model(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.attention} attention, depth {cfg.depth}, width {cfg.d_model}: {n_params:,} params")
    g = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        tokens = torch.randint(0, cfg.vocab_size, (args.batch_size, cfg.seq_len), generator=g)
        tokens = tokens.to(args.device)
        logits = model(tokens)
        if cfg.num_classes:
            labels = tokens[:, 0] % cfg.num_classes  # a toy label
            loss = F.cross_entropy(logits, labels)
        elif cfg.causal:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        else:
            loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())  # reconstruct input
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step} loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
