"""Learning curves read back from MLflow: frames and minutes to a score, for tables and plots."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow


@dataclass(frozen=True)
class Curve:
    """One run's 100-game mean return against frames and minutes of training, one point per logged step."""

    run_name: str
    run_id: str
    frames: list[float]
    minutes: list[float]  # of training (``time/train_min``); wall minutes since the start for older runs
    returns: list[float]
    games: list[float] | None = None  # games in each point's window; None: not logged

    def settled(self) -> list[bool]:
        """False where the window had shrunk: a run resumed before the window was in the checkpoint logged
        means over its first few games, which could cross any threshold."""
        if self.games is None:
            return [True] * len(self.returns)
        most, keep = 0.0, []
        for games in self.games:
            most = max(most, games)
            keep.append(games >= most)
        return keep

    @property
    def best(self) -> float | None:
        full = [r for r, ok in zip(self.returns, self.settled(), strict=True) if ok]
        return max(full) if full else None

    @property
    def last(self) -> float | None:
        return self.returns[-1] if self.returns else None

    def first_reached(self, threshold: float) -> tuple[float, float] | None:
        """``(frames, minutes)`` at the first settled point whose mean return is >= ``threshold``."""
        for frames, minutes, value, ok in zip(self.frames, self.minutes, self.returns, self.settled(), strict=True):
            if ok and value >= threshold:
                return frames, minutes
        return None

    def at_frames(self, frames: float) -> float | None:
        """The mean return at the first point at or past ``frames``, else ``None``."""
        return next((r for f, r in zip(self.frames, self.returns, strict=True) if f >= frames), None)


WINDOW = 100  # games in the learner's ``episode/return`` window
PAUSE_S = 300  # a run logs every few seconds: a longer silence is a stop and a resume


def _wall_minutes(stamps_ms: list[int], start_ms: int) -> list[float]:
    minutes, total, last = [], 0.0, start_ms
    for stamp in stamps_ms:
        gap = max(stamp - last, 0) / 1000
        total += gap if gap <= PAUSE_S else 0.0
        last = max(last, stamp)
        minutes.append(total / 60)
    return minutes


def load_curve(client: mlflow.MlflowClient, run_id: str) -> Curve:
    """``episode/return``, ``frames`` and training minutes of one run, joined on the learner step.

    Runs logged before ``time/train_min`` existed get wall minutes since the run's start, less any
    gap of over ``PAUSE_S`` between two logged points (a resumed run's pause).
    """
    run = client.get_run(run_id)
    frames = {m.step: m.value for m in client.get_metric_history(run_id, "frames")}
    train_min = {m.step: m.value for m in client.get_metric_history(run_id, "time/train_min")}
    games = {m.step: m.value for m in client.get_metric_history(run_id, "episode/games")}
    history = sorted(client.get_metric_history(run_id, "episode/return"), key=lambda m: m.step)
    points = [m for m in history if m.step in frames and (not train_min or m.step in train_min)]
    wall = _wall_minutes([m.timestamp for m in points], run.info.start_time)
    return Curve(
        run_name=run.info.run_name,
        run_id=run_id,
        frames=[frames[m.step] for m in points],
        minutes=[train_min[m.step] for m in points] if train_min else wall,
        returns=[m.value for m in points],
        games=[games.get(m.step, WINDOW) for m in points] if games else None,
    )


def find_runs(client: mlflow.MlflowClient, experiment: str, names: list[str] | None = None) -> list[str]:
    """Run ids of ``experiment`` (oldest first), only those named in ``names`` if given (in that order)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"experiment: no experiment named {experiment!r} in {client.tracking_uri}")
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)
    if not names:
        return [r.info.run_id for r in runs]
    by_name = {r.info.run_name: r.info.run_id for r in runs}  # the newest of equal names wins
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"runs: no run named {', '.join(missing)} in experiment {experiment!r}")
    return [by_name[n] for n in names]
