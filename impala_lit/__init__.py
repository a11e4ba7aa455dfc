"""impala_lit: IMPALA (Espeholt et al. 2018) from TorchRL collectors and a Lightning learner."""

from impala_lit.data import ImpalaDataModule
from impala_lit.envs import EnvSpec
from impala_lit.evaluation import EvaluationCallback
from impala_lit.learner import ImpalaModule
from impala_lit.losses import APPOModule
from impala_lit.vtrace import TakenActionVTrace

__all__ = ["APPOModule", "EnvSpec", "EvaluationCallback", "ImpalaDataModule", "ImpalaModule", "TakenActionVTrace"]
