"""MLflow: where runs go, what they record (config as params, tags, a name), and resuming a run.

A resumed run keeps logging into the MLflow run it started: the run id travels in every
checkpoint (``checkpoint["mlflow"]``, written by ``MLflowRunInCheckpoint``) and the CLI hands
it back to ``ImpalaMLFlowLogger(run_id=...)``. Lightning keeps the global step, so the metric
history continues on the same x-axis.
"""

from __future__ import annotations

import os
import time
import warnings
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse.typing import PositiveFloat
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

PARAM_VALUE_MAX = 500  # MLflow 3 accepts 6000; longer values are unreadable in the UI anyway
# parts of the config that say where things go or how they are shown, not what is trained; they change on resume
CONFIG_NOT_PARAMS = (
    "config", "ckpt_path", "trainer.logger", "trainer.callbacks", "checkpoint.dirpath", "progress", "verbose",
)  # fmt: skip


def mlflow_dir() -> Path:
    """``./mlflow/`` of the folder the command runs in (MLflow's ``./mlruns`` and Lightning's ``./lightning_logs``
    convention): runs go where the user works, also when impala_lit is installed as a package."""
    return Path.cwd() / "mlflow"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store ``./mlflow/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"class_path": C, "init_args": {"lr": x}}}`` -> ``{"model.class": C, "model.lr": x}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name in CONFIG_NOT_PARAMS or key == "__path__":
            continue
        if isinstance(value, Mapping):
            if "class_path" in value:
                flat[f"{name}.class"] = value["class_path"]
                value = value.get("init_args") or {}
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class ImpalaMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` that resumes runs and records the configuration the CLI resolved.

    - Given ``run_id`` (a resume), the run is set back to ``RUNNING`` and keeps its history.
    - Params are logged once: MLflow refuses to change a param, so a value that differs on
      resume is recorded as the tag ``resumed.<param>`` instead of failing the run.
    - Once the CLI has logged the whole config (``log_config``), Lightning's own call with
      the module's hyperparameters is skipped (the config holds them, with readable names).
    - ``finalize`` uses ``stop_status`` when set (``KILLED`` after Ctrl-C / SIGTERM).
    - A tracking server that stops answering does not stop training: metrics are kept (up to
      ``PENDING_MAX`` rows), a warning says so, sending is tried again every ``retry_s`` seconds,
      and when the server answers the kept rows go first and ``faults/tracking_outage_s`` records
      the gap. The curves have no hole.
    """

    PENDING_MAX = 200_000  # metric rows: hours of logging every 10 steps

    def __init__(self, *args: Any, retry_s: PositiveFloat = 30.0, **kwargs: Any):
        """``retry_s``: seconds between tries to reach a tracking server that stopped answering."""
        super().__init__(*args, **kwargs)
        self.retry_s = float(retry_s)
        self._resuming = kwargs.get("run_id") is not None
        self.stop_status: str | None = None
        self._config_logged = False
        self._pending: list = []  # mlflow.entities.Metric rows not sent yet
        self._outage_since: float | None = None
        self._next_try = 0.0

    # MLFlowLogger keeps these private; this class is the one place that reads them
    @property
    def has_run(self) -> bool:
        """Whether a run exists yet (``run_id`` would start one)."""
        return self._run_id is not None

    @property
    def tracking_uri(self) -> str | None:
        return self._tracking_uri

    @property
    @rank_zero_experiment
    def experiment(self):
        initialized = self._initialized
        client = super().experiment
        if not initialized and self._resuming:
            client.update_run(self._run_id, status="RUNNING")
        return client

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if not self._config_logged:  # the module's and data module's hparams: only without the CLI
            self._log_params(flatten_config(dict(vars(params) if isinstance(params, Namespace) else params)))

    @rank_zero_only
    def log_config(self, flat_config: dict[str, Any]) -> None:
        """The CLI's whole resolved config, ``section.setting`` -> value."""
        self._log_params(flat_config)
        self._config_logged = True

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.experiment.get_run(self.run_id).data.params
        new = {key: str(value)[:PARAM_VALUE_MAX] for key, value in params.items()}
        fresh = [Param(key, value) for key, value in new.items() if key not in existing]
        for index in range(0, len(fresh), 100):  # MLflow's batch limit
            self.experiment.log_batch(self.run_id, params=fresh[index : index + 100])
        for key, value in new.items():
            if key in existing and existing[key] != value:
                self.experiment.set_tag(self.run_id, f"resumed.{key}", value)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Lightning's, keeping the rows while the tracking server does not answer (see the class)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(key=k, value=float(v), timestamp=now, step=step or 0)
                          for k, v in metrics.items() if not isinstance(v, str)]  # fmt: skip
        del self._pending[: max(0, len(self._pending) - self.PENDING_MAX)]  # the oldest go first
        if self._outage_since is None or time.monotonic() >= self._next_try:
            self._send_pending(step)

    def _send_pending(self, step: int | None) -> bool:
        """Send the kept rows, oldest first; ``False`` (and a warning the first time) if the server is away."""
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException

        try:
            while self._pending:
                self.experiment.log_batch(self.run_id, metrics=self._pending[:1000])  # MLflow's batch limit
                del self._pending[:1000]
        except (MlflowException, RequestException, OSError) as err:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                warnings.warn(f"the MLflow tracking server at {self.tracking_uri} does not answer ({reason}): "
                              f"training goes on and its metrics are kept until it answers", stacklevel=2)  # fmt: skip
            self._next_try = time.monotonic() + self.retry_s
            return False
        if self._outage_since is not None:
            gap = time.monotonic() - self._outage_since
            self._outage_since = None
            warnings.warn(f"the MLflow tracking server at {self.tracking_uri} answers again after {gap:.0f} s; "
                          "the metrics kept meanwhile are sent", stacklevel=2)  # fmt: skip
            self.log_metrics({"faults/tracking_outage_s": gap}, step)
        return True

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self._pending and not self._send_pending(None):
            warnings.warn(f"{len(self._pending)} metric rows could not be sent: the MLflow tracking server at "
                          f"{self.tracking_uri} does not answer", stacklevel=2)  # fmt: skip
        try:
            super().finalize(self.stop_status or status)
        except Exception as err:  # noqa: BLE001 - the run is over; its status is all that is lost
            warnings.warn(f"the MLflow run's status could not be set ({type(err).__name__}: {err})", stacklevel=2)


class MLflowRunInCheckpoint(Callback):
    """Writes the MLflow run id and tracking URI into every checkpoint, so a resume continues that run."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, ImpalaMLFlowLogger):
                checkpoint["mlflow"] = {"run_id": logger.run_id, "tracking_uri": logger.tracking_uri}
                return
