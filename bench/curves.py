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

    @property
    def best(self) -> float | None:
        return max(self.returns) if self.returns else None

    @property
    def last(self) -> float | None:
        return self.returns[-1] if self.returns else None

    def first_reached(self, threshold: float) -> tuple[float, float] | None:
        """``(frames, minutes)`` at the first point whose mean return is >= ``threshold``, else ``None``."""
        for frames, minutes, value in zip(self.frames, self.minutes, self.returns, strict=True):
            if value >= threshold:
                return frames, minutes
        return None

    def at_frames(self, frames: float) -> float | None:
        """The mean return at the first point at or past ``frames``, else ``None``."""
        return next((r for f, r in zip(self.frames, self.returns, strict=True) if f >= frames), None)


def load_curve(client: mlflow.MlflowClient, run_id: str) -> Curve:
    """``episode/return``, ``frames`` and training minutes of one run, joined on the learner step.

    Runs logged before ``time/train_min`` existed get wall minutes since the run's start, in which a
    resumed run's pause counts.
    """
    run = client.get_run(run_id)
    frames = {m.step: m.value for m in client.get_metric_history(run_id, "frames")}
    train_min = {m.step: m.value for m in client.get_metric_history(run_id, "time/train_min")}
    history = sorted(client.get_metric_history(run_id, "episode/return"), key=lambda m: m.step)
    points = [m for m in history if m.step in frames and (not train_min or m.step in train_min)]
    start = run.info.start_time
    return Curve(
        run_name=run.info.run_name,
        run_id=run_id,
        frames=[frames[m.step] for m in points],
        minutes=[train_min[m.step] if train_min else (m.timestamp - start) / 60_000 for m in points],
        returns=[m.value for m in points],
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
