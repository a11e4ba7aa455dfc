"""impala_lit: IMPALA (Espeholt et al. 2018) from TorchRL collectors and a Lightning learner.

The rooms: ``envs`` (environment families) -> ``actors`` (collector workers) -> ``datamodule``
(batches, and the learner's ``RolloutSource``) -> ``learning`` (V-trace learner, objectives,
replay) with ``agent`` (networks, recurrent cores); ``app`` holds the command line, tracking,
console and callbacks. See docs/architecture.md.
"""

from impala_lit.app.callbacks import StopAtReturn
from impala_lit.app.evaluation import EvaluationCallback
from impala_lit.datamodule import ImpalaDataModule
from impala_lit.envs import EnvSpec, make_env_spec
from impala_lit.learning.appo import APPOModule
from impala_lit.learning.learner import ImpalaModule
from impala_lit.learning.source import RolloutSource
from impala_lit.learning.vtrace import TakenActionVTrace

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
