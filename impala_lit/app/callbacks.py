"""Lightning callbacks and plugins of impala_lit: checkpoints that survive crashes and signals, a stop at
a score, the learner's wait for data."""

from __future__ import annotations

import errno
import io
import os
import signal
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from impala_lit.actors import ActorsFailedError
from impala_lit.settings import PositiveInt

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # the shell's 128 + signal number


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a lost mount); the previous one is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, fsyncs it, then ``os.replace``s it.

    A crash mid-write leaves the previous file intact. Lightning's own save is atomic only when
    the system temp folder and the checkpoint folder share a filesystem (fsspec writes to
    ``/tmp`` and moves, which becomes copy-then-delete across filesystems).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        data = io.BytesIO()  # serialised first: a failed write is then the file system's OSError, not torch's
        torch.save(checkpoint, data)
        try:
            with open(partial, "wb") as file:
                file.write(data.getbuffer())
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except OSError as err:
            reason = "no space left on the device" if err.errno == errno.ENOSPC else f"{type(err).__name__}: {err}"
            raise CheckpointWriteError(
                f"checkpoint: could not write {path} ({reason}); the checkpoints written before are intact: "
                f"free space, then resume with --ckpt_path last"
            ) from err
        finally:
            partial.unlink(missing_ok=True)


class ImpalaCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes ``last.ckpt`` when training ends (also after Ctrl-C).

    The stock callback only saves on its interval, so the steps after the last
    interval would be lost (max_steps=12, every 5 -> last save at 10). Lightning writes
    every checkpoint through ``AtomicCheckpointIO`` (set by the CLI), so a crash mid-write leaves
    the previous ``last.ckpt`` intact.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_if_behind(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, ActorsFailedError):  # the learner is fine: keep what it learned
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: pl.Trainer) -> None:
        # ModelCheckpoint writes last.ckpt only from its own triggers: its private writer is the one way
        if self.save_last and trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class StopAtReturn(Callback):
    """Stops training once ``monitor`` (the mean raw score of the last 100 games) reaches ``threshold``.

    ``--trainer.callbacks+=impala_lit.StopAtReturn --trainer.callbacks.threshold=450``.
    Lightning's ``EarlyStopping`` checks at the end of an epoch or of validation; a stream of
    rollouts has neither, so this checks after every batch. Under DDP the figure is global, so
    every learner stops at the same step. For the 100-game mean (the default ``monitor``), only a
    mean over at least ``min_games`` games counts (``episode/games``): after a resume the window
    starts empty, and the first game or two said nothing (a Pong branch stopped at "20" on its
    first games). Any other ``monitor`` (e.g. ``eval/return_mean``) counts from its first value.
    """

    def __init__(self, threshold: float, monitor: str = "episode/return", min_games: PositiveInt = 100):
        self.threshold = threshold
        self.monitor = monitor
        self.min_games = min_games

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        if self.monitor == "episode/return":
            games = trainer.callback_metrics.get("episode/games")
            if games is None or float(games) < self.min_games:
                return
        if float(value) >= self.threshold:
            trainer.should_stop = True


class StopOnSignal(Callback):
    """Ctrl-C or SIGTERM ends ``fit`` cleanly after the current learner step.

    The step finishes, the weights go out, training stops as if ``max_steps`` were reached
    (so ``last.ckpt`` is written and the actors shut down), and the MLflow run is marked
    ``KILLED``. ``signal_received`` then tells the CLI which exit code to use (130 / 143).
    A second signal exits at once: it kills the actor processes and skips the checkpoint.
    """

    def __init__(self) -> None:
        self.signal_received: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning's own SIGTERM handler, which only stops at the end of an epoch (never, here)
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._trainer = trainer

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_received is not None:  # the second one: no more waiting
            _mark_killed(self._trainer)
            for logger in self._trainer.loggers:
                try:
                    logger.finalize("failed")  # KILLED, from stop_status
                except Exception:  # exiting anyway; the run stays RUNNING in the store
                    pass
            for child in psutil.Process().children(recursive=True):
                child.kill()
            os._exit(EXIT_CODES[signum])
        self.signal_received = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this learner step; again to exit at once", flush=True)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if self.signal_received is not None:
            _mark_killed(trainer)
            trainer.should_stop = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def _mark_killed(trainer: pl.Trainer) -> None:
    """Loggers that support it (``ImpalaMLFlowLogger``) will close their run as ``KILLED``."""
    for logger in trainer.loggers:
        if hasattr(logger, "stop_status"):
            logger.stop_status = "KILLED"


class DataWaitMonitor(Callback):
    """Logs whether the learner waits for the actors, over the last ``window`` steps.

    ``time/data_wait_frac``: share of the learner's wall time spent between steps (waiting for the
    next batch, and the hooks in between); 0 means the learner never waits. ``time/step_s``: mean
    duration of one step (forward, V-trace, backward, optimizer, weights sent).
    Lightning's profilers time the same fetch (``train_dataloader_next``) but report it only at
    the end of ``fit``; this makes it a metric of the run, visible while it trains.
    """

    def __init__(self, window: int = 20) -> None:
        self._intervals: deque[tuple[float, float]] = deque(maxlen=window)  # (wait, step) seconds
        self._last_end: float | None = None
        self._start: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        end = time.perf_counter()
        if self._last_end is not None and self._start is not None:
            self._intervals.append((self._start - self._last_end, end - self._start))
        self._last_end = end
        if self._intervals:
            wait = sum(w for w, _ in self._intervals)
            step = sum(s for _, s in self._intervals)
            pl_module.log("time/data_wait_frac", wait / max(wait + step, 1e-9))
            pl_module.log("time/step_s", step / len(self._intervals))
