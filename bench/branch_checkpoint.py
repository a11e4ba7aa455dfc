"""Branch a run at one of its checkpoints: the same weights and optimizer state, a new MLflow run.

python bench/branch_checkpoint.py checkpoints/pong/RUN/step12258-frames15690240.ckpt runs/branches/lr3.ckpt \
    --set lr=0.0003 max_frames=19690240
python recipes/pong.py fit --ckpt_path runs/branches/lr3.ckpt --trainer.logger.init_args.run_name B-lr3

A screen of what a setting does late in training (issue 14: the phase after a mean of 0 on Pong),
without replaying the hour that leads there: several branches of one checkpoint, compared per frame.

Why a copy: ``fit --ckpt_path`` resumes into the checkpoint's own MLflow run, and the checkpoint's
model hyperparameters win over the command line (LightningCLI). The copy drops the run id (a new
run, named on the command line) and writes the asked model settings into it; ``lr`` also goes
into the saved optimizer and schedule states, which would otherwise restore the old rate, and so
do the optimizer's other settings (``rms_eps``, ``adam_eps``, ``rms_alpha``). Data
settings (unroll length, batch size, seeds) need no copy: set them on the ``fit`` command line.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import torch


def parse_value(text: str) -> object:
    """``0.0003`` -> float, ``true`` -> True, ``null`` -> None, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def branch(source: Path, target: Path, settings: dict[str, object]) -> dict:
    """Write ``source`` to ``target`` without its MLflow run id and with ``settings`` as model hyperparameters."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    checkpoint.pop("mlflow", None)
    hparams = checkpoint["hyper_parameters"]
    if "optimizer" in settings and settings["optimizer"] != hparams.get("optimizer"):
        raise SystemExit("--set optimizer: a branch keeps the saved optimizer state; train a new run to change it")
    for name, value in settings.items():
        if name not in hparams:
            known = ", ".join(sorted(k for k in hparams if not k.startswith("_")))
            raise SystemExit(f"--set {name}: not a model hyperparameter of {source} (one of: {known})")
        hparams[name] = value
    eps_name = "adam_eps" if hparams.get("optimizer") == "adam" else "rms_eps"
    optimizer_key = {"rms_alpha": "alpha", eps_name: "eps"}
    for name, key in optimizer_key.items():
        if name in settings:  # Lightning restores the optimizer's param groups, which would win over the hparams
            for state in checkpoint.get("optimizer_states", []):
                for group in state["param_groups"]:
                    group[key] = float(settings[name])
    if "lr" in settings:
        new_lr = float(settings["lr"])
        for state in checkpoint.get("optimizer_states", []):
            for group in state["param_groups"]:
                group["lr"] = group["initial_lr"] = new_lr
        # a decay restores its own base rate and goes on from where it was: the same fraction of the new rate
        schedulers = checkpoint.get("lr_schedulers", [])  # none for a constant rate
        for scheduler, optimizer in zip(schedulers, checkpoint["optimizer_states"], strict=False):
            last = [lr * new_lr / base for lr, base in zip(scheduler["_last_lr"], scheduler["base_lrs"], strict=True)]
            scheduler["base_lrs"], scheduler["_last_lr"] = [new_lr] * len(last), last
            for group, lr in zip(optimizer["param_groups"], last, strict=True):
                group["lr"] = lr
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a checkpoint written by fit")
    parser.add_argument("target", type=Path, help="where the branch's checkpoint goes")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="model hyperparameters to change")
    args = parser.parse_args()
    settings = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: expected NAME=VALUE, e.g. lr=0.0003")
        settings[name.removeprefix("model.")] = parse_value(value)
    checkpoint = branch(args.source, args.target, settings)
    frames = checkpoint.get("impala", {}).get("frames", 0)
    changed = ", ".join(f"{k}={v!r}" for k, v in settings.items()) or "no model setting changed"
    print(f"{args.target}: step {checkpoint['global_step']}, {frames:,} frames; {changed}; no MLflow run id")


if __name__ == "__main__":
    main()
