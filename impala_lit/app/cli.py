"""``ImpalaCLI``: the ``LightningCLI`` behind every recipe, with MLflow and checkpoints set up."""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import sys
import time
import typing
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import ActionYesNo, ArgumentParser, DefaultHelpFormatter
from jsonargparse import Namespace as ConfigNamespace
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from impala_lit.actors import ActorsFailedError
from impala_lit.app.callbacks import (
    EXIT_CODES,
    AtomicCheckpointIO,
    CheckpointWriteError,
    DataWaitMonitor,
    ImpalaCheckpoint,
    StopOnSignal,
)
from impala_lit.app.console import expect_warning, quiet_console
from impala_lit.app.evaluation import EvaluationCallback
from impala_lit.app.progress import TrainingProgress
from impala_lit.app.tracking import (
    ImpalaMLFlowLogger,
    MLflowRunInCheckpoint,
    default_tracking_uri,
    flatten_config,
    mlflow_dir,
)
from impala_lit.datamodule import ImpalaDataModule
from impala_lit.envs import env_name
from impala_lit.learning.learner import ImpalaModule, NonFiniteError
from impala_lit.settings import SettingError, allowed_values

# model settings that define the weights' shapes: adopted from a checkpoint unless given
SHAPE_SETTINGS = ("network", "core", "core_size")


def checkpoint_dir() -> Path:
    """``$IMPALA_LIT_CHECKPOINT_DIR`` if set, else ``./checkpoints/`` of the folder the command runs in."""
    return Path(os.environ.get("IMPALA_LIT_CHECKPOINT_DIR") or Path.cwd() / "checkpoints")


class MLflowSaveConfig(SaveConfigCallback):
    """Logs the resolved config to the MLflow run: as ``config.yaml`` and as flat params.

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
        if isinstance(logger, ImpalaMLFlowLogger):
            params = flatten_config(self.config.as_dict())
            # the module's own values win: linked settings (observation_shape...) are set on instantiation
            params.update({f"model.{k}": v for k, v in pl_module.hparams.items() if not k.startswith("_")})
            logger.log_config(params)


def check_tracking_server(uri: str) -> None:
    """Fail fast, naming the URI, when no MLflow server answers there (before any process starts)."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except (OSError, ValueError) as err:
        reason = str(getattr(err, "reason", err))
    _fail(f"trainer.logger.init_args.tracking_uri: no MLflow server answers at {uri} ({reason})")


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint as ``fit`` will: ``weights_only=True``, so that a checkpoint from someone else
    cannot run code as it loads (tensors, numbers, strings and containers only); ``SettingError`` if unusable."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[-1][:160] if str(err).strip() else type(err).__name__
        raise SettingError(
            f"ckpt_path: {path} holds Python objects that a weights-only load refuses ({reason}); impala_lit "
            f"loads checkpoints with weights_only=True, so that one from someone else cannot run code"
        ) from None
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SettingError(
            f"ckpt_path: {path} is not a readable checkpoint (truncated or not a torch file: {reason[:160]})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "impala" not in checkpoint:
        raise SettingError(f"ckpt_path: {path} was not written by impala_lit (no 'state_dict'/'impala' entries)")
    return checkpoint


def read_checkpoint(path: Path, fallbacks: list[Path] = ()) -> dict:
    """``load_checkpoint``, ending the command in one line if the checkpoint cannot be used; for
    ``--ckpt_path last``, the line names the newest of ``fallbacks`` that can (nothing is picked in silence)."""
    try:
        return load_checkpoint(path)
    except SettingError as err:
        usable = None
        for candidate in fallbacks:
            try:
                load_checkpoint(candidate)
            except SettingError:
                continue
            usable = candidate
            break
        hint = f"; the newest usable one is {usable} (pass it as --ckpt_path)" if usable else ""
        _fail(f"{err}{hint}")


def _fail(message: str) -> NoReturn:
    """One line on stderr naming the setting, exit code 2: what a bad command line gets."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def one_line_parse_error(message: str, classes: dict[str, type]) -> str:
    """jsonargparse's report of a rejected value, over several lines, as one: the setting, what its
    type allows (read from the type in ``classes[group]``'s signature) and the value given."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    head = lines[0] if lines else ""
    if not (head.startswith('Parser key "') and head.endswith('":')):
        return " ".join(lines[:2])[:300]
    key = head.removeprefix('Parser key "').removesuffix('":').replace(".init_args.", ".")
    if "." not in key:  # the learner's and the logger's settings are parsed by parsers of their own
        key = "trainer.logger." + key if setting_type(classes.get("trainer.logger"), key) else f"model.{key}"
    group, _, name = key.rpartition(".")
    allowed = allowed_values(setting_type(classes.get(group), name))
    given = _given_value(lines[1:])
    if allowed is None:
        return f"{key}: {given!r} is not valid ({lines[1]})" if len(lines) > 1 else key
    if allowed.startswith("one of"):
        return f"{key}: {given!r} is not {allowed}"
    return f"{key}: must be {allowed}, got {given}"


def setting_type(cls: type | None, name: str) -> Any:
    """The annotation of ``name`` in the ``__init__`` of ``cls``, a base class or else a subclass
    (``--model`` may name a subclass of the recipe's learner); ``None`` where none declares it."""
    if cls is None:
        return None
    subclasses, queue = [], list(cls.__subclasses__())
    while queue:
        subclasses.append(queue.pop(0))
        queue += subclasses[-1].__subclasses__()
    for klass in [*cls.__mro__, *subclasses]:
        if "__init__" in vars(klass):
            try:
                hints = typing.get_type_hints(klass.__init__)
            except Exception:  # an annotation that names what its module does not import
                continue
            if name in hints:
                return hints[name]
    return None


def _given_value(reason: list[str]) -> str:
    """The rejected value in jsonargparse's reason lines: ``Given value: x``, ``Got value: x``,
    ``Not of type T: x does not conform ...`` or ``...: could not convert string to float: 'x'``."""
    for line in reason:
        for marker in ("Given value: ", "Got value: "):
            if marker in line:
                return line.partition(marker)[2]
    first = reason[0] if reason else ""
    if " does not conform" in first:
        return first.partition(": ")[2].partition(" does not conform")[0]
    return first.rpartition(": ")[2]


class OneLineErrorParser(LightningArgumentParser):
    """Command-line mistakes end in one line naming the setting and what is allowed, exit code 2.

    ``classes`` maps each group of settings (``data``, ``model``...) to the class whose signature types it.
    """

    classes: dict[str, type] = {}

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        _fail(one_line_parse_error(message, self.classes))


class _RawTextFormatter(DefaultHelpFormatter):
    """Keeps the line breaks of the model-settings section appended to ``--help``."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def import_class(path: str) -> type:
    """The class at an import path such as ``impala_lit.APPOModule``."""
    module_name, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


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

    ``{game}`` in ``experiment`` is filled from ``data.env_id`` (``atari-{game}`` -> ``atari-breakout``),
    so that each game of a multi-game recipe has its own runs, and ``--ckpt_path last`` its own newest one.

    Lightning offers no public hook for three steps, so these are the CLI's only private overrides:
    ``_parse_ckpt_path`` (resolve ``last`` and check the checkpoint before Lightning reads its
    hyperparameters), ``_set_seed`` (choose the run folder before seeding logs its first line) and
    ``_prepare_subcommand_parser`` (``--verbose`` for ``fit`` only: ``test`` has Lightning's own).

    ``defaults`` overrides settings for the task (``{"data.env_id": "CartPole-v1", ...}``);
    ``learner`` is the task's default ``--model`` class (an ``ImpalaModule`` subclass, by import path),
    whose own settings ``defaults`` may then set.
    """

    def __init__(
        self,
        experiment: str,
        defaults: dict[str, Any] | None = None,
        learner: str = "impala_lit.ImpalaModule",
        **kwargs: Any,
    ):
        self.experiment = experiment
        self.task_defaults = defaults or {}
        self.learner = learner
        kwargs.setdefault("model_class", ImpalaModule)
        kwargs.setdefault("datamodule_class", ImpalaDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("save_config_callback", MLflowSaveConfig)
        kwargs.setdefault("parser_kwargs", {"formatter_class": _RawTextFormatter})
        classes = {
            "data": kwargs["datamodule_class"],
            "model": import_class(learner),
            "trainer": Trainer,
            "eval": EvaluationCallback,
            "checkpoint": ImpalaCheckpoint,
            "progress": TrainingProgress,
            "trainer.logger": ImpalaMLFlowLogger,
        }
        kwargs.setdefault("parser_class", type("ImpalaArgumentParser", (OneLineErrorParser,), {"classes": classes}))
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", self.trainer_defaults())
        self.stop_on_signal = StopOnSignal()
        try:
            super().__init__(**kwargs)  # parses, instantiates and runs the subcommand
        except (NonFiniteError, ActorsFailedError, CheckpointWriteError) as err:  # a clear stop, not a crash
            print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
            codes = {NonFiniteError: 3, ActorsFailedError: 4, CheckpointWriteError: 5}
            raise SystemExit(codes[type(err)]) from None
        stopped_by = self.stop_on_signal.signal_received
        if stopped_by:  # a clean stop, but not the one asked for: say so in the exit code
            raise SystemExit(EXIT_CODES[stopped_by])

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
    def experiment_name(self) -> str:
        """``experiment`` with ``{game}`` filled from the parsed ``data.env_id``."""
        if "{game}" not in self.experiment:
            return self.experiment
        env_id = self.config[self.config.subcommand].get("data.env_id")
        return self.experiment.format(game=env_name(str(env_id)))

    @property
    def checkpoint_root(self) -> Path:
        """``checkpoints/<experiment>/``: one folder per run below it."""
        return checkpoint_dir() / self.experiment_name

    def _parse_ckpt_path(self) -> None:
        """Resolve and check ``--ckpt_path`` before Lightning reads its hyperparameters into the config.

        ``last`` becomes the newest run's ``last.ckpt``; an unreadable, foreign or mismatched
        checkpoint ends the command in one line here, before any process starts.
        """
        self.resumed_from: Path | None = None
        self.saved_checkpoint: dict | None = None
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            ckpt_path = config.get("ckpt_path")
            if ckpt_path == "last":
                dirpath = config.get("checkpoint.dirpath")
                if dirpath:  # an explicit folder (relative ones too): its own last.ckpt
                    where = Path(dirpath)
                    candidates = [where / "last.ckpt"] if (where / "last.ckpt").is_file() else []
                else:
                    where = self.checkpoint_root / "*"
                    candidates = sorted(self.checkpoint_root.glob("*/last.ckpt"), key=lambda p: p.stat().st_mtime)
                if not candidates:
                    _fail(f"ckpt_path: 'last' needs {where}/last.ckpt, found none (run fit first)")
                self.resumed_from = candidates[-1]
                config["ckpt_path"] = str(self.resumed_from)
            elif ckpt_path is not None:
                if not Path(ckpt_path).is_file():
                    _fail(f"ckpt_path: no checkpoint file at {ckpt_path!r}")
                self.resumed_from = Path(ckpt_path)
            if self.resumed_from is not None:
                fallbacks = []
                if ckpt_path == "last":  # every other checkpoint of the folder or the recipe, newest first
                    others = self.resumed_from.parent.parent.glob("*/*.ckpt")
                    fallbacks = sorted((p for p in others if p != self.resumed_from), key=lambda p: -p.stat().st_mtime)
                self.saved_checkpoint = read_checkpoint(self.resumed_from, fallbacks)
                self._check_compatible(self.saved_checkpoint, self.resumed_from, config)
        super()._parse_ckpt_path()  # the checkpoint's model hyperparameters win, as in any LightningCLI
        if subcommand:
            self._drop_retired_settings(self.config[subcommand])

    @staticmethod
    def _drop_retired_settings(config: ConfigNamespace) -> None:
        """Settings a checkpoint has but this version no longer takes (e.g. ``eval_greedy``) are dropped."""
        model = config.get("model")
        extra = model.get("dict_kwargs") if isinstance(model, ConfigNamespace) else None
        if not extra:
            return
        cls = import_class(str(model.class_path))
        accepted = {p for klass in cls.__mro__ if "__init__" in vars(klass)
                    for p in inspect.signature(klass.__init__).parameters}  # fmt: skip
        retired = sorted(k for k in extra if k not in accepted)
        for key in retired:
            del extra[key]
        if retired:
            print(f"warning: the checkpoint's settings {', '.join(retired)} no longer exist; ignored", file=sys.stderr)

    def before_instantiate_classes(self) -> None:
        """Give each run its own checkpoint folder, and name, tag or resume its MLflow run.

        Runs of one recipe never overwrite or prune each other's checkpoints; a resumed
        run keeps writing into the folder it resumes from.
        """
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        checkpoint = config.get("checkpoint")
        if checkpoint is not None and checkpoint.get("every_n_train_steps"):
            checkpoint["train_time_interval"] = None  # a step interval replaces the time interval
        self._configure_mlflow(config, self.saved_checkpoint if self.subcommand == "fit" else None)

    def _set_seed(self) -> None:
        """The run's folder is chosen and the console quieted first: seeding is the first thing that logs."""
        self._assign_run_folder()
        super()._set_seed()

    def _assign_run_folder(self) -> None:
        """``checkpoints/<experiment>/<run>/`` (or the one resumed from) holds the checkpoints and ``console.log``."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        checkpoint = config.get("checkpoint")
        resumed_from = self.resumed_from
        if checkpoint is not None and checkpoint.get("dirpath") is None:
            if resumed_from is not None and resumed_from.resolve().parent.parent == self.checkpoint_root.resolve():
                checkpoint["dirpath"] = str(resumed_from.parent)
            else:
                checkpoint["dirpath"] = str(self.checkpoint_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        folder = Path(checkpoint["dirpath"]) if checkpoint is not None and checkpoint.get("dirpath") else None
        # DDP: the other learners (started by Lightning with LOCAL_RANK / NODE_RANK set) write no log of
        # their own, as they write no checkpoints: their folder name (time, pid) would be a stray one
        other_rank = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
        self.log_file = folder / "console.log" if folder is not None and not other_rank else None
        # test/validate: their --verbose is Lightning's (print the results); IMPALA_LIT_VERBOSE=1 still works
        quiet_console(self.log_file, verbose=(self.subcommand == "fit" and bool(config.get("verbose"))) or None)
        if folder is not None:  # the log file is ours: not a sign of someone else's checkpoints
            for name in {str(folder), os.path.realpath(folder)}:  # Lightning names it resolved
                expect_warning(f"Checkpoint directory {name} exists and is not empty.")

    def default(self, key: str) -> Any:
        """The recipe's default of ``model.<name>`` or ``data.<name>``: its own, else the class signature's."""
        if key in self.task_defaults:
            return self.task_defaults[key]
        group, _, name = key.partition(".")
        cls = import_class(self.learner) if group == "model" else self.datamodule_class
        for klass in cls.__mro__:
            parameter = inspect.signature(klass.__init__).parameters.get(name) if "__init__" in vars(klass) else None
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                return parameter.default
        return None

    def _check_compatible(self, saved: dict, path: Path, config: ConfigNamespace) -> None:
        """A checkpoint of another environment, or of a network other than the one asked for, fails here.

        The network, its core and the frames stacked into an observation are only checked when
        set on the command line (or a config file): otherwise the checkpoint's are adopted, as
        LightningCLI adopts its model settings, so that ``test --ckpt_path last`` needs no flags.
        """
        saved_model = saved.get("hyper_parameters", {})
        saved_data = saved.get("datamodule_hyper_parameters", {})
        theirs = {"data.env_id": saved_data.get("env_id")}
        pairs = [("data.env_id", config.get("data.env_id"))]
        for name in SHAPE_SETTINGS:
            ours = config.get(f"model.init_args.{name}")
            theirs[f"model.{name}"] = saved_model.get(name)
            if ours != self.default(f"model.{name}"):
                pairs.append((f"model.{name}", ours))
        stack = saved_data.get("frame_stack")
        if stack is not None and config.get("data.frame_stack") == self.default("data.frame_stack"):
            config["data.frame_stack"] = stack  # the network was built for this many frames
        theirs["data.frame_stack"] = stack
        pairs.append(("data.frame_stack", config.get("data.frame_stack")))
        for name, value in pairs:
            if theirs[name] is not None and value is not None and theirs[name] != value:
                hint = f"set --{name} {theirs[name]}"
                _fail(f"{name}: is {value!r} but {path} was trained with {theirs[name]!r} ({hint})")
        # other data settings may change on resume (more actors, another batch): say which did,
        # e.g. a recipe default that changed since the checkpoint was written
        changed = [f"data.{key} {config.get(f'data.{key}')!r} (checkpoint: {saved_data[key]!r})"
                   for key in sorted(saved_data)
                   if key != "env_id" and config.get(f"data.{key}", saved_data[key]) != saved_data[key]]  # fmt: skip
        if changed and self.config.get("subcommand") == "fit":
            print(f"warning: resuming with other data settings than {path} was trained with: {', '.join(changed)}",
                  file=sys.stderr)  # fmt: skip

    def _configure_mlflow(self, config: ConfigNamespace, saved: dict | None) -> None:
        """Run name and tags for a new run; the checkpoint's run id for a resumed one."""
        logger = config.get("trainer.logger")
        if not isinstance(logger, ConfigNamespace) or not str(logger.get("class_path", "")).endswith("MLFlowLogger"):
            return
        args = logger.init_args
        if args.get("experiment_name") == self.experiment:  # the recipe's, not one set on the command line
            args.experiment_name = self.experiment_name
            if args.get("artifact_location") == str(mlflow_dir() / "artifacts" / self.experiment):
                args.artifact_location = str(mlflow_dir() / "artifacts" / self.experiment_name)
        uri = str(args.get("tracking_uri") or "")
        if uri.startswith(("http://", "https://")):
            check_tracking_server(uri)
            # a request to a server that went away fails within seconds, not MLflow's ~4 minutes of retries:
            # the logger keeps the metrics and tries again later (impala_lit.app.tracking); the user's values win
            for name, value in [("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
                                ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")]:  # fmt: skip
                os.environ.setdefault(name, value)
            if args.get("artifact_location") == str(mlflow_dir() / "artifacts" / self.experiment_name):
                args.artifact_location = None  # the server decides where artifacts go (and serves them)
        previous = (saved or {}).get("mlflow")
        if previous and args.get("run_id") is None:
            if previous.get("tracking_uri") == args.get("tracking_uri"):
                args.run_id = previous["run_id"]
                return
            print(
                f"warning: the checkpoint's MLflow run is in {previous.get('tracking_uri')}, "
                f"not {args.get('tracking_uri')}: logging to a new run",
                file=sys.stderr,
            )
        model = str(config.get("model.class_path", "ImpalaModule")).rsplit(".", 1)[-1]
        env_id = str(config.get("data.env_id"))
        network = config.get("model.init_args.network")
        if args.get("run_name") is None:
            args.run_name = f"{model}-{network}-{env_id.rsplit('/', 1)[-1]}-{time.strftime('%m%d-%H%M%S')}"
        tags = {
            "learner": str(config.get("model.class_path")),
            "env_id": env_id,
            "network": str(network),
            "precision": str(config.get("trainer.precision") or "32-true"),
            "subcommand": str(self.subcommand),
        }
        # the git commit (mlflow.source.git.commit) is added by MLflow's own run-context tags
        if config.get("ckpt_path"):
            tags["checkpoint"] = str(config.get("ckpt_path"))
        args.tags = {**tags, **(args.get("tags") or {})}

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with atomic checkpoint writes and the run's own callbacks.

        ``--trainer.enable_progress_bar false`` silences the status lines but keeps the end-of-run summary
        (Lightning refuses a progress-bar callback beside ``enable_progress_bar=False``).
        """
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        quiet = config.get("trainer.enable_progress_bar") is False
        if quiet:
            config["trainer.enable_progress_bar"] = True
        trainer = super().instantiate_trainer(**kwargs)
        for callback in trainer.callbacks:
            if quiet and isinstance(callback, TrainingProgress):
                callback.disable()
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # the default: make it atomic
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        trainer.callbacks.extend([MLflowRunInCheckpoint(), self.stop_on_signal, DataWaitMonitor()])
        return trainer

    def instantiate_classes(self) -> None:
        """Settings rejected by a constructor end the run with one line, before any process starts."""
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause: BaseException | None = err  # jsonargparse wraps the learner's errors in its own (subclass mode)
            while cause is not None and not isinstance(cause, SettingError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            _fail(str(cause))

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        self._preparing = subcommand  # add_arguments_to_parser adds --verbose to fit's parser only
        return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "impala_lit.app.tracking.ImpalaMLFlowLogger",
                    "init_args": {
                        "experiment_name": self.experiment,
                        "tracking_uri": default_tracking_uri(),
                        "artifact_location": str(mlflow_dir() / "artifacts" / self.experiment),
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
                # a resumed run keeps its folder and must overwrite last.ckpt (not write last-v1.ckpt,
                # which happens whenever the resumed run's checkpoint settings differ)
                "checkpoint.enable_version_counter": False,
                "checkpoint.every_n_train_steps": None,
                "checkpoint.train_time_interval": timedelta(minutes=10),
            }
        )
        parser.add_lightning_class_args(EvaluationCallback, "eval")
        parser.add_lightning_class_args(TrainingProgress, "progress")
        if getattr(self, "_preparing", "fit") == "fit":  # test/validate have Lightning's own --verbose (results)
            parser.add_argument(
                "--verbose",
                action=ActionYesNo,
                default=False,
                help="library INFO lines and dependency warnings on the terminal too (else only in the run's "
                "console.log); also IMPALA_LIT_VERBOSE=1",
            )
        parser.link_arguments("data.observation_shape", "model.init_args.observation_shape", apply_on="instantiate")
        parser.link_arguments("data.num_actions", "model.init_args.num_actions", apply_on="instantiate")
        model_args = {k[len("model.") :]: v for k, v in self.task_defaults.items() if k.startswith("model.")}
        parser.set_defaults({"model": {"class_path": self.learner, "init_args": model_args}})
        parser.set_defaults({k: v for k, v in self.task_defaults.items() if not k.startswith("model.")})
        parser.epilog = model_settings_help(import_class(self.learner), model_args)
