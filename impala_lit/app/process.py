"""How a recipe's process ends: its exit handlers run, then it leaves without the interpreter's teardown."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    """Run ``main`` and exit with its code, skipping the teardown of the loaded modules.

    Tearing down torch, Lightning and MLflow took 3 s after every command on a 2-core machine
    (docs/testing.md); everything a run keeps is written by then: non-daemon threads are joined
    and the exit handlers (MLflow's, Ray's, logging's) run first. An uncaught exception is left
    to Python (traceback, exit code 1, the usual teardown).
    """
    try:
        main()
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:  # sys.exit("message"): printed, exit code 1, as Python does
            print(stop.code, file=sys.stderr)
            code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # no public API runs the registered handlers: the one private call here
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(code)
