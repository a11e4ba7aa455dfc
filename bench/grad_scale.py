"""Gradient scale of the IMPALA loss on a Pong batch, against RMSProp's eps.

python bench/grad_scale.py [--rms-eps 0.01]

Collects a few batches with the initial policy (ale_vector actors), then prints the gradient
norm of each loss term, the clip factor at ``gradient_clip_val`` 40, and per parameter tensor
the median |gradient| after the clip and the share of entries above eps: where most entries
are below eps, RMSProp's step is lr x g / eps instead of about lr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impala_lit import EnvSpec, ImpalaModule  # noqa: E402
from impala_lit.actors import RolloutStream  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rms-eps", dest="eps", type=float, default=0.01)
    parser.add_argument("--clip", type=float, default=40.0)
    parser.add_argument("--batches", type=int, default=30, help="batches to skip first (rewards appear)")
    args = parser.parse_args()
    torch.manual_seed(0)
    module = ImpalaModule()
    stream = RolloutStream(EnvSpec("ALE/Pong-v5", backend="ale_vector"), module.actor, num_workers=1,
                           envs_per_worker=16, unroll_length=20, batch_size=32)  # fmt: skip
    batches = iter(stream)
    for _ in range(args.batches):
        batch = next(batches)
    batches.close()
    terms = module.loss(module.compute_advantages(batch.clone()))
    for name in ("policy", "baseline", "entropy"):
        module.zero_grad()
        terms[name].backward(retain_graph=True)
        norm = torch.sqrt(sum((p.grad**2).sum() for p in module.parameters() if p.grad is not None))
        print(f"{name:<10} value {terms[name].item():10.3f}   gradient norm {norm.item():8.2f}")
    module.zero_grad()
    terms["loss"].backward()
    norm = torch.sqrt(sum((p.grad**2).sum() for p in module.parameters())).item()
    scale = min(1.0, args.clip / norm)
    print(f"total gradient norm {norm:.1f}; clip at {args.clip} scales it by {scale:.3f}")
    print(f"{'parameter':<52}{'entries':>9}{'median |g|':>12}{'> eps':>8}")
    for name, param in module.named_parameters():
        grad = (param.grad * scale).abs()
        above = (grad > args.eps).float().mean().item()
        print(f"{name:<52}{param.numel():>9}{grad.median().item():>12.2e}{above:>8.2f}")
    print(f"rewards in the batch: {int((batch['next', 'reward'] != 0).sum())}")


if __name__ == "__main__":
    main()
