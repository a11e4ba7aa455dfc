"""The training display: frames out of the budget, ETA, frames/s, the 100-game mean; a summary at the end.

Lightning's own bars count epochs and batches, which a never-ending stream of rollouts does not have
(``Epoch 0/-2 ... 4708/--``). ``TrainingProgress`` is a Lightning ``ProgressBar``, so the Trainer uses it
instead of its default one: on a terminal it redraws one line (through tqdm); when stdout is not a
terminal (CI, ``nohup``, a log file) it prints one plain line every ``every_s`` seconds. When training
ends (budget, target, Ctrl-C, SIGTERM or an error) it prints where things are and how to go on.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, Timer
from lightning.pytorch.utilities import rank_zero_only
from tqdm import tqdm

from impala_lit.app.callbacks import StopAtReturn, StopOnSignal
from impala_lit.app.console import LOG_FILE_ENV
from impala_lit.app.tracking import ImpalaMLFlowLogger


def _count(value: float) -> str:
    """1234 -> 1,234; 1.23e6 -> 1.23M."""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value:,.0f}"


def _max_frames(pl_module: pl.LightningModule) -> int | None:
    hparams = getattr(pl_module, "hparams", None)
    return hparams.get("max_frames") if hparams is not None else None


def resume_command(argv: list[str], checkpoint: Path) -> str:
    """This run's own command line with ``--ckpt_path`` pointing at ``checkpoint``."""
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            args.append(arg)
    program = argv[0] if argv and argv[0].endswith(".py") else "recipes/<recipe>.py"
    return shlex.join(["python", program, *args, "--ckpt_path", str(checkpoint)])


def _clock(seconds: float) -> str:
    """3725 -> 1:02:05; 125 -> 2:05."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class TrainingProgress(ProgressBar):
    """Frames done of the budget, elapsed and ETA, frames/s, the last 100 games' mean return, policy lag.

    Args:
        every_s: seconds between plain lines when stdout is not a terminal.
        refresh_s: seconds between redraws on a terminal.
    """

    def __init__(self, every_s: float = 30.0, refresh_s: float = 0.5) -> None:
        super().__init__()
        self.every_s = every_s
        self.refresh_s = refresh_s
        self._enabled = True
        self._bar: tqdm | None = None
        self._start: float | None = None
        self._frames_at_start = 0.0
        self._last_shown = 0.0
        self._best: float | None = None
        self._ended_by: str | None = None
        self._summary_printed = False

    # Lightning's ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            tqdm.write(" ".join(map(str, args)), file=sys.stdout)
        else:
            print(*args, **kwargs)

    # what is shown
    def budget(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float | None:
        """The frame budget: ``model.max_frames``, or ``trainer.max_steps`` at the frames per step so far."""
        max_frames = _max_frames(pl_module)
        budgets = [float(max_frames)] if max_frames else []
        if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step > 0:
            budgets.append(trainer.max_steps * self._frames(pl_module) / trainer.global_step)
        return min(budgets) if budgets else None

    def describe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """The status line: what the terminal redraws and what a log file gets every ``every_s``."""
        now = time.monotonic()
        frames = self._frames(pl_module)
        elapsed = now - (self._start or now)
        fps = float(trainer.callback_metrics.get("fps", 0.0))  # the learner's rate over its last 20 steps
        budget = self.budget(trainer, pl_module)
        parts = [f"frames {_count(frames)}" + (f"/{_count(budget)} ({100 * frames / budget:.0f}%)" if budget else "")]
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = []
        if budget and fps > 0:
            remaining.append(max(budget - frames, 0) / fps)
        time_left = timer.time_remaining() if timer is not None else None
        if time_left is not None:
            remaining.append(time_left)
            parts.append(f"time {_clock(timer.time_elapsed())}/{_clock(timer.time_elapsed() + time_left)}")
        else:
            parts.append(f"{_clock(elapsed)} elapsed")
        parts.append(f"ETA {_clock(min(remaining))}" if remaining else "ETA -")
        parts.append(f"{fps:,.0f} frames/s")
        metrics = trainer.callback_metrics
        if "episode/return" in metrics:
            best = f" (best {self._best:.2f})" if self._best is not None else ""
            parts.append(f"return {float(metrics['episode/return']):.2f}{best}")
        else:
            parts.append("return - (no game over yet)")
        if "policy_lag" in metrics:
            parts.append(f"policy lag {float(metrics['policy_lag']):.1f}")
        restarts = float(metrics.get("faults/actor_restarts", 0.0))
        if restarts:
            parts.append(f"actor restarts {restarts:.0f}")
        return " · ".join(parts)

    # hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last_shown = time.monotonic()
        self._frames_at_start = self._frames(pl_module)
        if self.is_enabled and trainer.is_global_zero and sys.stdout.isatty():
            # a terminal that reports no width (a bare pty) would get every line cut to nothing; asked of the
            # terminal itself, as tqdm's redraws do, not of $COLUMNS (set by some parents, pytest-xdist's workers)
            sized = _terminal_columns() > 0
            self._bar = tqdm(total=None, file=sys.stdout, bar_format="{desc}", dynamic_ncols=sized,
                             ncols=None if sized else 200, nrows=None if sized else 40, leave=True)  # fmt: skip

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        now = time.monotonic()
        value = trainer.callback_metrics.get("episode/return")
        if value is not None:
            self._best = float(value) if self._best is None else max(self._best, float(value))
        if self.is_disabled or not trainer.is_global_zero:
            return
        if self._bar is not None:
            if now - self._last_shown >= self.refresh_s:
                self._bar.set_description_str(self.describe(trainer, pl_module), refresh=True)
                self._last_shown = now
        elif now - self._last_shown >= self.every_s:
            print(self.describe(trainer, pl_module), flush=True)
            self._last_shown = now

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.set_description_str(self.describe(trainer, pl_module), refresh=True)
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._ended_by = f"an error: {type(exception).__name__}: {str(exception)[:200]}"
        self.on_train_end(trainer, pl_module)
        self._summary(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._start is not None:
            self._summary(trainer, pl_module)

    # the end
    def ended_by(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """Why training stopped, in words."""
        if self._ended_by:
            return self._ended_by
        for callback in trainer.callbacks:
            if isinstance(callback, StopOnSignal) and callback.signal_received:
                return f"{signal.Signals(callback.signal_received).name} (the run can be resumed)"
            score = float(trainer.callback_metrics.get("episode/return", float("-inf")))
            if isinstance(callback, StopAtReturn) and score >= callback.threshold:
                return f"the target: a 100-game mean of {callback.threshold:g} or more"
        max_frames = _max_frames(pl_module)
        if max_frames and self._frames(pl_module) >= max_frames:
            return f"the frame budget (model.max_frames={max_frames:,})"
        if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return f"the step budget (trainer.max_steps={trainer.max_steps:,})"
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and (timer.time_remaining() or 1.0) <= 0:
            return "the time budget (trainer.max_time)"
        return "the Trainer"

    @rank_zero_only
    def _summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._summary_printed or self._start is None:
            return
        self._summary_printed = True
        wall = time.monotonic() - self._start
        frames = self._frames(pl_module)
        new = frames - self._frames_at_start
        lines = [f"training ended by {self.ended_by(trainer, pl_module)}"]
        lines.append(f"  frames      {frames:,.0f} ({new:,.0f} in this session of {_clock(wall)}, "
                     f"{new / max(wall, 1e-9):,.0f} frames/s)")  # fmt: skip
        value = trainer.callback_metrics.get("episode/return")
        if value is not None:
            lines.append(f"  return      last {float(value):.2f}, best {self._best:.2f} (mean of the last 100 games)")
        checkpoint = trainer.checkpoint_callback
        last = Path(checkpoint.dirpath) / "last.ckpt" if checkpoint is not None and checkpoint.dirpath else None
        if last is not None and last.is_file():
            lines.append(f"  checkpoint  {last}")
        logger = next((lg for lg in trainer.loggers if isinstance(lg, ImpalaMLFlowLogger)), None)
        if logger is not None and logger.has_run:
            uri = logger.tracking_uri
            lines.append(f"  MLflow run  {logger.run_id} (experiment {logger.experiment_id}) in {uri}")
            page = f"#/experiments/{logger.experiment_id}/runs/{logger.run_id}"
            if uri and not uri.startswith(("http://", "https://")):
                lines.append(f"  see it      mlflow ui --backend-store-uri {shlex.quote(uri)}, then open "
                             f"http://127.0.0.1:5000/{page}")  # fmt: skip
            else:
                lines.append(f"  see it      {uri.rstrip('/')}/{page}")
        log_file = os.environ.get(LOG_FILE_ENV)
        if log_file and Path(log_file).is_file():
            lines.append(f"  log         {log_file} (library messages; also in the MLflow run's artifacts)")
            if logger is not None and logger.has_run:
                try:
                    logger.experiment.log_artifact(logger.run_id, log_file)
                except Exception as err:  # the summary must not fail the run
                    lines[-1] = f"  log         {log_file} (not copied to MLflow: {err})"
        if last is not None and last.is_file():
            lines.append(f"  resume      {resume_command(sys.argv, last)}")
        print("\n".join(lines), flush=True)

    @staticmethod
    def _frames(pl_module: pl.LightningModule) -> float:
        return float(getattr(pl_module, "frames", 0.0))


def _terminal_columns() -> int:
    """Columns that stdout's terminal reports (0 for a bare pty that reports no size)."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError):
        return 0
