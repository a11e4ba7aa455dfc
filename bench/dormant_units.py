"""Count the dead units of a checkpoint's network: outputs whose weights got no gradient for hundreds of updates.

python bench/dormant_units.py checkpoints/pong/RUN/last.ckpt [more.ckpt ...]
python bench/dormant_units.py --eps 0.03 checkpoints/atari-battle_zone/RUN/last.ckpt   # gradient scale vs eps

A ReLU unit that is off for every input of every batch gets exactly zero gradient, and so do the
weights of the next layer that read it. The optimizer's running mean of squared gradients
(RMSProp's ``square_avg``, Adam's ``exp_avg_sq``; decay 0.99, so ~100 updates of memory) keeps
that record for free: a unit is counted dead when the root of the sum of its weights' running
means is below ``--threshold``. Why: Pong runs that pass a mean of 0 stall for millions of frames
(issue 14), and a network that loses units as it trains (loss of plasticity, the "dormant neuron"
of Sokar et al. 2023) would learn ever slower; this measures how many it loses.

``--eps`` also prints, from the same running means, each tensor's gradient RMS and the share of its
entries below RMSProp's eps, where the step shrinks from about ``lr`` to ``lr x g / eps``: a game
whose gradients sit far below eps barely moves the layers under the heads (docs: benchmarks/atari.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def squared_gradients(checkpoint: dict) -> list[tuple[str, torch.Tensor]]:
    """(parameter name, the optimizer's running mean of its squared gradient) for every parameter."""
    state = checkpoint["optimizer_states"][0]["state"]
    # the optimizer numbers the parameters in module order; the state dict has them in the same
    # order, with any buffers between them: skip the entries whose shape does not match
    entries = iter(checkpoint["state_dict"].items())
    moments = []
    for index in sorted(state):
        moment = state[index].get("square_avg", state[index].get("exp_avg_sq"))
        if moment is None:
            raise SystemExit("dormant_units: only RMSProp and Adam checkpoints keep the running squared gradients")
        name = next(name for name, tensor in entries if tensor.shape == moment.shape)
        moments.append((name.replace(".module", ""), moment.float()))
    return moments


def gradient_scale(checkpoint: dict, eps: float) -> list[tuple[str, float, float]]:
    """(parameter name, gradient RMS, share of entries whose RMS is below ``eps``) for every parameter."""
    return [
        (name, moment.mean().sqrt().item(), (moment.sqrt() < eps).float().mean().item())
        for name, moment in squared_gradients(checkpoint)
    ]


def dead_units(checkpoint: dict, threshold: float = 1e-6) -> list[tuple[str, int, int]]:
    """(weight name, dead output units, all output units) for every conv and dense weight."""
    rows = []
    for name, moment in squared_gradients(checkpoint):
        if moment.dim() < 2:  # biases and scalars: no units of their own
            continue
        per_unit = moment.reshape(moment.shape[0], -1).sum(1).sqrt()
        rows.append((name, int((per_unit < threshold).sum()), moment.shape[0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float, default=1e-6)
    parser.add_argument("--eps", type=float, help="also print each tensor's gradient RMS against this eps")
    args = parser.parse_args()
    for path in args.checkpoints:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        frames = checkpoint.get("impala", {}).get("frames", 0)
        rows = dead_units(checkpoint, args.threshold)
        print(f"{path} ({frames / 1e6:.2f}M frames): " + ", ".join(f"{n} {d}/{a}" for n, d, a in rows))
        if args.eps is not None:
            for name, rms, below in gradient_scale(checkpoint, args.eps):
                print(f"  {name:<42} gradient RMS {rms:9.2e}   {below:4.0%} of entries below eps {args.eps:g}")


if __name__ == "__main__":
    main()
