"""What reaches the terminal: the run's progress and what the user must act on, not the libraries' chatter.

Library INFO lines (TorchRL's spec-reader notices, Lightning's tips and device lines) and warnings that
say nothing to the user (deprecations inside our dependencies, the model summary's note on bf16) go to
the run's log file only (``console.log`` in its checkpoint folder); warnings and errors of any library
still reach the terminal, and so does every warning raised by impala_lit. ``--verbose`` or
``IMPALA_LIT_VERBOSE=1`` puts everything back on the terminal. The actor processes read the same choice
from the environment (``quiet_actor_console``), so their TorchRL lines follow it too.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

VERBOSE_ENV = "IMPALA_LIT_VERBOSE"
LOG_FILE_ENV = "IMPALA_LIT_LOG_FILE"
# MLflow: "Creating initial MLflow database tables..." on a new store's first run
LIBRARY_LOGGERS = ("torchrl", "lightning.pytorch", "lightning.fabric", "mlflow")
# Lightning's UserWarnings that only describe a choice we made on purpose
KNOWN_NOISE = (
    re.compile(r"is not supported by the model summary"),
    re.compile(r"RayCollector iteration started before weight synchronization"),
)
# library log records at WARNING that describe what we asked for (the experiment of a new store)
KNOWN_LOG_NOISE = (re.compile(r"Experiment with name .* not found\. Creating it\."),)
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_OWN_CODE = str(Path(__file__).resolve().parent)
_FORMAT = logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s")
_state: dict = {}


def expect_warning(message: str) -> None:
    """A warning with exactly this text is noise in this process (e.g. about a folder we made)."""
    _state.setdefault("expected", set()).add(message)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "0").lower() not in ("", "0", "false", "no")


def is_noise(message: Warning | str, category: type[Warning], filename: str) -> bool:
    """A warning the user cannot act on: a dependency's deprecation, or one of ``KNOWN_NOISE``."""
    if filename.startswith(_OWN_CODE):
        return False
    if issubclass(category, _DEPRECATIONS):
        return True
    if str(message) in _state.get("expected", ()):
        return True
    return any(pattern.search(str(message)) for pattern in KNOWN_NOISE)


def quiet_console(log_file: Path | None, verbose: bool | None = None) -> None:
    """Route this process's library INFO lines and noise warnings to ``log_file`` only.

    Sets ``IMPALA_LIT_VERBOSE`` and ``IMPALA_LIT_LOG_FILE`` for the processes started after it
    (the actors). Idempotent: a second call only moves the log file.
    """
    verbose = is_verbose() if verbose is None else verbose
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        os.environ[LOG_FILE_ENV] = str(log_file)
    # MLflow adds its console handler when it is imported (Lightning's logger imports it later):
    # import it now, so that its handler is routed like the others (the actors never import it)
    import mlflow  # noqa: F401

    _configure(log_file, verbose)


def quiet_actor_console() -> None:
    """In an actor process: the choice the learner made (``quiet_console``), read from the environment."""
    if LOG_FILE_ENV in os.environ or VERBOSE_ENV in os.environ:
        log_file = os.environ.get(LOG_FILE_ENV)
        _configure(Path(log_file) if log_file else None, is_verbose())


def _configure(log_file: Path | None, verbose: bool) -> None:
    file_handler = _state.get("file_handler")
    if file_handler is not None and (log_file is None or Path(file_handler.baseFilename) != log_file.resolve()):
        for name in (*LIBRARY_LOGGERS, "impala_lit.warnings"):
            logging.getLogger(name).removeHandler(file_handler)
        file_handler.close()
        file_handler = _state["file_handler"] = None
    if log_file is not None and file_handler is None:
        file_handler = logging.FileHandler(log_file, mode="a", encoding="utf-8", delay=True)
        file_handler.setFormatter(_FORMAT)
        _state["file_handler"] = file_handler
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:  # the libraries' own console handlers
                handler.setLevel(logging.NOTSET if verbose else logging.WARNING)
                handler.removeFilter(_drop_log_noise)
                if not verbose:
                    handler.addFilter(_drop_log_noise)
        if file_handler is not None and file_handler not in logger.handlers:
            logger.addHandler(file_handler)
    warned = logging.getLogger("impala_lit.warnings")
    warned.propagate = False
    if file_handler is not None and file_handler not in warned.handlers:
        warned.addHandler(file_handler)
    if not warned.handlers:  # else logging's last-resort handler would print them
        warned.addHandler(logging.NullHandler())
    _quiet_ale(verbose)
    _state["verbose"] = verbose
    if "showwarning" not in _state:
        _state["showwarning"] = warnings.showwarning
        warnings.showwarning = _showwarning


def _drop_log_noise(record: logging.LogRecord) -> bool:
    """A console filter: ``False`` for the records of ``KNOWN_LOG_NOISE`` (the log file keeps them)."""
    return not any(pattern.search(record.getMessage()) for pattern in KNOWN_LOG_NOISE)


def _quiet_ale(verbose: bool) -> None:
    """ale-py's C++ banner ("A.L.E: Arcade Learning Environment ... [Powered by Stella]") and notices."""
    try:
        import ale_py
    except ImportError:
        return
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Info if verbose else ale_py.LoggerMode.Error)


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning to the log file; to the terminal unless it is noise (or always, when verbose)."""
    logging.getLogger("impala_lit.warnings").warning(
        warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    )
    if _state.get("verbose") or not is_noise(message, category, filename):
        _state["showwarning"](message, category, filename, lineno, file, line)
