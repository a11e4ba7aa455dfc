"""End-to-end frames/s of a recipe's settings side by side: alternating, in one sitting.

python bench/side_by_side.py --setting default= --setting "replay=--data.replay_ratio 0.5" --rounds 2
python bench/side_by_side.py --recipe procgen_games --setting 1= --setting "2=--data.learner_threads 2"

Each round runs every setting once (``recipes/<recipe>.py fit`` on its defaults plus the setting's
arguments, for a 20 s warm-up and ``--seconds`` measured, as ``bench/throughput.py`` does end to
end), so a machine that drifts affects all settings alike. Prints one line per run, then the
mean per setting and a JSON line with the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from throughput import PONG, end_to_end_fps, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", required=True, help="NAME=ARGS (ARGS after `fit`; may be empty)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per run (after 20 s warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--recipe", default="pong", help="a module of recipes/ (Procgen: procgen_games)")
    cli = parser.parse_args()
    settings = dict(s.split("=", 1) for s in cli.setting)
    # the Pong recipe's own defaults, as throughput.py passes them explicitly
    args = argparse.Namespace(precision=PONG["trainer.precision"], device="cpu", actor_device="cpu",
                              num_workers=PONG.get("data.num_workers", 2), batch_size=PONG.get("data.batch_size", 32),
                              envs_per_worker=PONG["data.envs_per_worker"], unroll_length=PONG["data.unroll_length"],
                              network=PONG["model.network"], backend=PONG["data.backend"],
                              actor_precision=PONG["data.actor_precision"])  # fmt: skip
    if cli.recipe != "pong":
        args = None  # that recipe's own defaults
    results: dict[str, list[float]] = {name: [] for name in settings}
    for round_ in range(cli.rounds):
        for name, extra in settings.items():
            fps, details = end_to_end_fps(args, cli.seconds, extra=shlex.split(extra), recipe=cli.recipe)
            results[name].append(fps)
            print(f"round {round_ + 1} {name:<20}{fps:>10,.0f} frames/s  policy lag {details['policy_lag_mean']:.2f}",
                  flush=True)  # fmt: skip
    for name, values in results.items():
        print(f"mean {name:<21}{sum(values) / len(values):>10,.0f} frames/s  ({settings[name] or 'recipe defaults'})")
    summary = {"fps": results, "settings": settings, "seconds": cli.seconds, "recipe": cli.recipe}
    print(json.dumps({**summary, "machine": machine()}))


if __name__ == "__main__":
    main()
