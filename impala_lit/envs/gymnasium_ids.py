"""Any environment registered with gymnasium (CartPole-v1, this package's ``impala_lit/...`` tasks, a user's
``my_envs:MyEnv-v0``), stepped as it is, with discrete actions."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
from torchrl.envs import EnvBase, GymWrapper, SerialEnv, TransformedEnv

from impala_lit.envs import pomdp
from impala_lit.envs.base import EnvSpec, add_game_score
from impala_lit.settings import SettingError


def register_envs() -> None:
    """Make ALE's games and this package's own tasks known to ``gym.make`` (idempotent)."""
    import ale_py

    gym.register_envs(ale_py)
    pomdp.register()


def check_registered(env_id: str) -> None:
    """One-line ``SettingError`` naming close matches when ``env_id`` is not a gymnasium id.

    ``module:Name-v0`` (gymnasium's own form) imports ``module`` first, where a user's env registers itself.
    """
    register_envs()
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise SettingError(f"data.env_id: cannot import {module!r} for {env_id!r}: {err}") from None
    if (name if module else env_id) in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise SettingError(f"data.env_id: unknown environment {env_id!r}{hint}")


def serial_env(make_one: Callable[[], EnvBase], num_envs: int) -> TransformedEnv:
    """``num_envs`` TorchRL envs from ``make_one`` stepped in this process, batch size ``[num_envs]``."""
    return TransformedEnv(SerialEnv(num_envs, make_one))


def torchrl_env(make_gym: Callable[[], gym.Env]) -> EnvBase:
    """The gymnasium env from ``make_gym`` as a TorchRL env, discrete actions as indices."""
    return GymWrapper(make_gym(), categorical_action_encoding=True)


@dataclass(frozen=True)
class GymSpec(EnvSpec):
    """A gymnasium id made with ``gym.make``."""

    def make_gym(self, render_mode: str | None = None) -> gym.Env:
        check_registered(self.env_id)
        return gym.make(self.env_id, render_mode=render_mode)

    def make_batched(self, num_envs: int) -> TransformedEnv:
        # gymnasium's own vector env under one TorchRL wrapper: 2.4x the steps/s of a SerialEnv of wrappers
        # on CartPole (docs/benchmarks/cartpole.md)
        same_step = gym.vector.AutoresetMode.SAME_STEP  # what TorchRL's vector-env wrapper supports
        vector = gym.vector.SyncVectorEnv([self.make_gym] * num_envs, autoreset_mode=same_step)
        env = GymWrapper(vector, categorical_action_encoding=True)
        return add_game_score(env if isinstance(env, TransformedEnv) else TransformedEnv(env), self.clip_rewards)
