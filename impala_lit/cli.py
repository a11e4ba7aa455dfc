"""``ImpalaCLI``: the ``LightningCLI`` behind every recipe, with MLflow and checkpoints set up."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import ArgumentParser, DefaultHelpFormatter
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from impala_lit.callbacks import ImpalaCheckpoint
from impala_lit.data import ImpalaDataModule
from impala_lit.learner import ImpalaModule

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MLFLOW_DIR = PROJECT_ROOT / "mlflow"
CHECKPOINT_DIR = Path(os.environ.get("IMPALA_LIT_CHECKPOINT_DIR", PROJECT_ROOT / "checkpoints"))


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store under ``mlflow/``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{MLFLOW_DIR / 'mlflow.db'}"


class MLflowSaveConfig(SaveConfigCallback):
    """Logs the resolved config to the MLflow run as ``config.yaml``.

    Lightning's default writes it to the logger's ``save_dir``, which is ``None`` for
    ``sqlite:``/``http:`` stores, and fails.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = trainer.logger
        if isinstance(logger, MLFlowLogger):
            text = self.parser.dump(self.config, skip_none=False)
            logger.experiment.log_text(logger.run_id, text, "config.yaml")


def _fail(message: str) -> NoReturn:
    """One line on stderr naming the setting, exit code 2: what a bad command line gets."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class _RawTextFormatter(DefaultHelpFormatter):
    """Keeps the line breaks of the model-settings section appended to ``--help``."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def model_settings_help(model_class: type, defaults: dict[str, Any]) -> str:
    """``--model.*`` options with their defaults, which subclass mode hides behind ``--model.help``."""
    helper = ArgumentParser(prog="model", add_help=False)
    helper.add_class_arguments(model_class, "model", skip={"observation_shape", "num_actions"})
    helper.set_defaults({f"model.{k}": v for k, v in defaults.items()})
    options = helper.format_help().split(":\n", 1)[-1]
    name = f"{model_class.__module__.split('.')[0]}.{model_class.__name__}"
    return (
        f"model settings (default --model {name}; another LightningModule subclass: --model CLASS,\n"
        f"its own settings: --model.help CLASS):\n{options}"
    )


class ImpalaCLI(LightningCLI):
    """LightningCLI for one task: ``experiment`` names the MLflow experiment and checkpoint folder.

    ``defaults`` overrides settings for the task (``{"data.env_id": "CartPole-v1", ...}``).
    """

    def __init__(self, experiment: str, defaults: dict[str, Any] | None = None, **kwargs: Any):
        self.experiment = experiment
        self.task_defaults = defaults or {}
        kwargs.setdefault("model_class", ImpalaModule)
        kwargs.setdefault("datamodule_class", ImpalaDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("save_config_callback", MLflowSaveConfig)
        kwargs.setdefault("parser_kwargs", {"formatter_class": _RawTextFormatter})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", self.trainer_defaults())
        super().__init__(**kwargs)

    @staticmethod
    def trainer_defaults() -> dict[str, Any]:
        return {
            "max_epochs": -1,  # the actor stream never ends: max_steps or model.max_frames stops training
            "gradient_clip_val": 40.0,  # the paper's global-norm clip
            "gradient_clip_algorithm": "norm",
            "log_every_n_steps": 10,
            "num_sanity_val_steps": 0,
        }

    @property
    def checkpoint_root(self) -> Path:
        """``checkpoints/<experiment>/``: one folder per run below it."""
        return CHECKPOINT_DIR / self.experiment

    def before_instantiate_classes(self) -> None:
        """Resolve ``--ckpt_path last`` to the newest run's ``last.ckpt`` and give each run its own folder.

        Runs of one recipe never overwrite or prune each other's checkpoints; a resumed
        run keeps writing into the folder it resumes from.
        """
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        checkpoint = config.get("checkpoint")
        dirpath = checkpoint.get("dirpath") if checkpoint is not None else None
        ckpt_path = config.get("ckpt_path")
        resumed_from = None
        if ckpt_path == "last":
            if dirpath:  # an explicit folder (relative ones too): its own last.ckpt
                where = Path(dirpath)
                candidates = [where / "last.ckpt"] if (where / "last.ckpt").is_file() else []
            else:
                where = self.checkpoint_root / "*"
                candidates = sorted(self.checkpoint_root.glob("*/last.ckpt"), key=lambda p: p.stat().st_mtime)
            if not candidates:
                _fail(f"ckpt_path: 'last' needs {where}/last.ckpt, found none (run fit first)")
            resumed_from = candidates[-1]
            config["ckpt_path"] = str(resumed_from)
        elif ckpt_path is not None:
            if not Path(ckpt_path).is_file():
                _fail(f"ckpt_path: no checkpoint file at {ckpt_path!r}")
            resumed_from = Path(ckpt_path)
        if checkpoint is not None and dirpath is None:
            if resumed_from is not None and resumed_from.resolve().parent.parent == self.checkpoint_root.resolve():
                checkpoint["dirpath"] = str(resumed_from.parent)
            else:
                checkpoint["dirpath"] = str(self.checkpoint_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")

    def instantiate_classes(self) -> None:
        """Settings rejected by a constructor end the run with one line, before any process starts."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            # jsonargparse may wrap our message (subclass mode lists every Union member it tried)
            found = re.search(r"\b(?:data|model|trainer)\.\w+: [^\n]+", str(err))
            if found is None:
                raise
            _fail(found.group(0))

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.MLFlowLogger",
                    "init_args": {
                        "experiment_name": self.experiment,
                        "tracking_uri": default_tracking_uri(),
                        "artifact_location": str(MLFLOW_DIR / "artifacts" / self.experiment),
                    },
                }
            }
        )
        parser.add_lightning_class_args(ImpalaCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                # None: checkpoints/<experiment>/<run>/, chosen in before_instantiate_classes
                "checkpoint.dirpath": None,
                "checkpoint.filename": "step{step}-frames{frames:.0f}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.monitor": "frames",  # keep the newest save_top_k periodic checkpoints
                "checkpoint.mode": "max",
                "checkpoint.save_top_k": 3,
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
            }
        )
        parser.link_arguments("data.observation_shape", "model.init_args.observation_shape", apply_on="instantiate")
        parser.link_arguments("data.num_actions", "model.init_args.num_actions", apply_on="instantiate")
        model_args = {k[len("model.") :]: v for k, v in self.task_defaults.items() if k.startswith("model.")}
        parser.set_defaults({"model": {"class_path": "impala_lit.ImpalaModule", "init_args": model_args}})
        parser.set_defaults({k: v for k, v in self.task_defaults.items() if not k.startswith("model.")})
        parser.epilog = model_settings_help(ImpalaModule, model_args)
