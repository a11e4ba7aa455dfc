"""impala_lit: IMPALA (Espeholt et al. 2018) from TorchRL collectors and a Lightning learner.

The rooms: ``envs`` (environment families) -> ``actors`` (collector workers) -> ``datamodule``
(batches, and the learner's ``RolloutSource``) -> ``learning`` (V-trace learner, objectives,
replay) with ``agent`` (networks, recurrent cores); ``app`` holds the command line, tracking,
console and callbacks. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Each name is imported on first use: an actor process unpickling a network or an environment imports only
# those modules, not Lightning and MLflow (3-4 s less CPU for each actor started).
_EXPORTS = {
    "APPOModule": "impala_lit.learning.appo",
    "EnvSpec": "impala_lit.envs",
    "EvaluationCallback": "impala_lit.app.evaluation",
    "ImpalaDataModule": "impala_lit.datamodule",
    "ImpalaModule": "impala_lit.learning.learner",
    "RolloutSource": "impala_lit.learning.source",
    "StopAtReturn": "impala_lit.app.callbacks",
    "TakenActionVTrace": "impala_lit.learning.vtrace",
    "make_env_spec": "impala_lit.envs",
}
__all__ = [
    "APPOModule",
    "EnvSpec",
    "EvaluationCallback",
    "ImpalaDataModule",
    "ImpalaModule",
    "RolloutSource",
    "StopAtReturn",
    "TakenActionVTrace",
    "make_env_spec",
]

if TYPE_CHECKING:
    from impala_lit.app.callbacks import StopAtReturn
    from impala_lit.app.evaluation import EvaluationCallback
    from impala_lit.datamodule import ImpalaDataModule
    from impala_lit.envs import EnvSpec, make_env_spec
    from impala_lit.learning.appo import APPOModule
    from impala_lit.learning.learner import ImpalaModule
    from impala_lit.learning.source import RolloutSource
    from impala_lit.learning.vtrace import TakenActionVTrace


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'impala_lit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
