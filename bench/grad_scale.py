"""Gradient scale of the IMPALA loss on a Pong batch, against RMSProp's eps.

python bench/grad_scale.py [--rms-eps 0.01]
python bench/grad_scale.py --ckpt checkpoints/pong/RUN/STEP.ckpt --unroll-length 10 --precision

Collects a few batches with the initial policy (or a checkpoint's, ale_vector actors), then
prints the gradient norm of each loss term, the clip factor at ``gradient_clip_val`` 40, and per
parameter tensor the median |gradient| after the clip and the share of entries above eps: where
most entries are below eps, RMSProp's step is lr x g / eps instead of about lr.

``--precision`` also runs the learner pass under bf16 autocast, as ``--trainer.precision
bf16-mixed`` does, and prints how far it moves values, logits, advantages and each term's
gradient direction from fp32 (is a late plateau the learner's bf16 noise?).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impala_lit import ImpalaModule  # noqa: E402
from impala_lit.actors import ActorSettings, RolloutStream  # noqa: E402
from impala_lit.envs import AtariSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rms-eps", dest="eps", type=float, default=0.01)
    parser.add_argument("--clip", type=float, default=40.0)
    parser.add_argument("--batches", type=int, default=30, help="batches to skip first (rewards appear)")
    parser.add_argument("--ckpt", help="the weights of this checkpoint (default: a freshly initialised network)")
    parser.add_argument("--unroll-length", dest="unroll_length", type=int, default=20)
    parser.add_argument("--precision", action="store_true", help="compare the learner pass in bf16 autocast with fp32")
    args = parser.parse_args()
    torch.manual_seed(0)
    module = ImpalaModule.load_from_checkpoint(args.ckpt, map_location="cpu") if args.ckpt else ImpalaModule()
    settings = ActorSettings(num_workers=1, envs_per_worker=16, unroll_length=args.unroll_length, batch_size=32)
    stream = RolloutStream(AtariSpec("ALE/Pong-v5", backend="ale_vector"), module.actor, settings)
    batches = iter(stream)
    for _ in range(args.batches):
        batch = next(batches)
    batches.close()
    fp32, terms, grads = learner_pass(module, batch, bf16=False)
    for name in ("policy", "baseline", "entropy"):
        print(f"{name:<10} value {terms[name].item():10.3f}   gradient norm {grads[name].norm().item():8.2f}")
    norm = grads["loss"].norm().item()
    scale = min(1.0, args.clip / norm)
    print(f"total gradient norm {norm:.1f}; clip at {args.clip} scales it by {scale:.3f}")
    print(f"{'parameter':<52}{'entries':>9}{'median |g|':>12}{'> eps':>8}")
    per_param = grads["loss"].split([p.numel() for p in module.parameters()])
    for (name, param), grad in zip(module.named_parameters(), per_param, strict=True):
        grad = (grad * scale).abs()
        above = (grad > args.eps).float().mean().item()
        print(f"{name:<52}{param.numel():>9}{grad.median().item():>12.2e}{above:>8.2f}")
    print(f"rewards in the batch: {int((batch['next', 'reward'] != 0).sum())}")
    if args.precision:
        precision_gap(module, batch, fp32, grads)


def learner_pass(module: ImpalaModule, batch, bf16: bool) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """One learner pass (fp32, or under bf16 autocast as ``bf16-mixed``): the batch with its V-trace
    outputs, the loss terms, and each term's gradient flattened over all parameters (zeros where none)."""
    batch = batch.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        batch = module.compute_advantages(batch)
        terms = module.loss(batch)
    grads = {}
    for name in ("policy", "baseline", "entropy", "loss"):
        module.zero_grad()
        terms[name].backward(retain_graph=True)
        flat = [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in module.parameters()]
        grads[name] = torch.cat(flat)
    return batch, terms, grads


def precision_gap(module: ImpalaModule, batch, fp32, grads32: dict[str, torch.Tensor]) -> None:
    """bf16 autocast against the fp32 pass (``learner_pass`` outputs) on the same batch and weights."""
    bf16, _, grads16 = learner_pass(module, batch, bf16=True)
    print(f"\n{'bf16 vs fp32':<18}{'fp32 std':>10}{'mean |diff|':>13}{'max |diff|':>12}")
    for key in ("state_value", "logits", "learner_log_prob", "advantage", "value_target"):
        diff = (fp32[key] - bf16[key]).abs()
        print(f"{key:<18}{fp32[key].std().item():>10.4f}{diff.mean().item():>13.5f}{diff.max().item():>12.5f}")
    for name in ("policy", "baseline", "loss"):
        a, b = grads32[name], grads16[name]
        cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        print(f"{name:<10} gradient norm fp32 {a.norm().item():8.2f}  bf16 {b.norm().item():8.2f}  cosine {cosine:.4f}")


if __name__ == "__main__":
    main()
