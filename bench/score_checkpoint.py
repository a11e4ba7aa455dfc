"""Score checkpoints over many games, outside any run: the evaluations logged during ``fit`` play 10
games, too few to tell two Procgen runs apart (a CoinRun level is worth 10 or 0).

python bench/score_checkpoint.py --games 100 checkpoints/procgen/<run>/last.ckpt [more.ckpt ...]
python bench/score_checkpoint.py --games 100 checkpoints/procgen/<run>   # every checkpoint of a run: a curve

For each checkpoint, its environment settings (the checkpoint's datamodule hyperparameters) and
policy, sampled actions as in training: the mean raw score, its standard error and the mean game
length over ``--games`` games on unseen levels (Procgen: the full level distribution) and, for
Procgen, as many on the training levels. Nothing is logged to MLflow.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch

from impala_lit.app.cli import import_class
from impala_lit.app.evaluation import play_games
from impala_lit.datamodule import ImpalaDataModule
from impala_lit.envs import EnvSpec
from impala_lit.learning.learner import ImpalaModule


def load(path: Path) -> tuple[EnvSpec, ImpalaModule, int]:
    """The checkpoint's environment, learner (its own class) and frames trained on."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    data = checkpoint["datamodule_hyper_parameters"]
    spec = ImpalaDataModule(**{k: v for k, v in data.items() if not k.startswith("_")}).env  # builds no actors
    cls = import_class(checkpoint["hyper_parameters"].get("_class_path", "impala_lit.ImpalaModule"))
    learner = cls.load_from_checkpoint(path, map_location="cpu")
    return spec, learner, learner.frames


def checkpoint_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for its checkpoints in training order (``last.ckpt`` last)."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime))
            if not found:
                raise SystemExit(f"checkpoints: no *.ckpt in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"checkpoints: no file or folder {path}")
    return files


def summary(returns: list[float], lengths: list[int]) -> str:
    sem = statistics.stdev(returns) / math.sqrt(len(returns))
    return f"{statistics.fmean(returns):6.2f} +- {sem:4.2f} (length {statistics.fmean(lengths):5.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--games", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12345, help="first game seed (evaluations during fit use 0)")
    args = parser.parse_args()
    if args.games < 2:
        raise SystemExit(f"--games: must be >= 2 (a standard error needs two), got {args.games}")
    files = checkpoint_files(args.checkpoints)
    print("| checkpoint | frames | unseen levels: mean +- s.e. | training levels: mean +- s.e. |")
    print("|---|---|---|---|")
    for path in files:
        spec, learner, frames = load(path)
        sets = spec.evaluation_sets()  # Procgen: unseen levels ("eval") and the training levels ("eval_train")
        unseen = play_games(sets["eval"], learner.actor, args.games, seed=args.seed)
        row = [str(path), f"{frames:,}", summary(unseen.returns, unseen.lengths), "-"]
        if "eval_train" in sets:
            seen = play_games(sets["eval_train"], learner.actor, args.games, seed=args.seed)
            row[3] = summary(seen.returns, seen.lengths)
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
