"""MLflow: where runs go, what they record (config as params, tags, a name), and resuming a run.

A resumed run keeps logging into the MLflow run it started: the run id travels in every
checkpoint (``checkpoint["mlflow"]``, written by ``MLflowRunInCheckpoint``) and the CLI hands
it back to ``ImpalaMLFlowLogger(run_id=...)``. Lightning keeps the global step, so the metric
history continues on the same x-axis.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
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
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._resuming = kwargs.get("run_id") is not None
        self.stop_status: str | None = None
        self._config_logged = False

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
    def finalize(self, status: str = "success") -> None:
        super().finalize(self.stop_status or status)


class MLflowRunInCheckpoint(Callback):
    """Writes the MLflow run id and tracking URI into every checkpoint, so a resume continues that run."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, ImpalaMLFlowLogger):
                checkpoint["mlflow"] = {"run_id": logger.run_id, "tracking_uri": logger.tracking_uri}
                return
