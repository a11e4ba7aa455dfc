"""Count the dead units of a checkpoint's network: outputs whose weights got no gradient for hundreds of updates.

python bench/dormant_units.py checkpoints/pong/RUN/last.ckpt [more.ckpt ...]

A ReLU unit that is off for every input of every batch gets exactly zero gradient, and so do the
weights of the next layer that read it. The optimizer's running mean of squared gradients
(RMSProp's ``square_avg``, Adam's ``exp_avg_sq``; decay 0.99, so ~100 updates of memory) keeps
that record for free: a unit is counted dead when the root of the sum of its weights' running
means is below ``--threshold``. Why: Pong runs that pass a mean of 0 stall for millions of frames
(issue 14), and a network that loses units as it trains (loss of plasticity, the "dormant neuron"
of Sokar et al. 2023) would learn ever slower; this measures how many it loses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def dead_units(checkpoint: dict, threshold: float = 1e-6) -> list[tuple[str, int, int]]:
    """(weight name, dead output units, all output units) for every conv and dense weight."""
    state = checkpoint["optimizer_states"][0]["state"]
    # the optimizer numbers the parameters in module order; the state dict has them in the same
    # order, with any buffers between them: skip the entries whose shape does not match
    entries = iter(checkpoint["state_dict"].items())
    rows = []
    for index in sorted(state):
        moment = state[index].get("square_avg", state[index].get("exp_avg_sq"))
        if moment is None:
            raise SystemExit("dormant_units: only RMSProp and Adam checkpoints keep the running squared gradients")
        name = next(name for name, tensor in entries if tensor.shape == moment.shape)
        if moment.dim() < 2:  # biases and scalars: no units of their own
            continue
        per_unit = moment.float().reshape(moment.shape[0], -1).sum(1).sqrt()
        rows.append((name.replace(".module", ""), int((per_unit < threshold).sum()), moment.shape[0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--threshold", type=float, default=1e-6)
    args = parser.parse_args()
    for path in args.checkpoints:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        frames = checkpoint.get("impala", {}).get("frames", 0)
        rows = dead_units(checkpoint, args.threshold)
        print(f"{path} ({frames / 1e6:.2f}M frames): " + ", ".join(f"{n} {d}/{a}" for n, d, a in rows))


if __name__ == "__main__":
    main()
