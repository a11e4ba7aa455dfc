"""What every environment family provides, and the one path by which the raw game score is counted.

A family is a frozen dataclass (picklable: actor processes rebuild their environments from it)
with its own settings. Its batched environment reports, on every step, the raw score and length
of the game being played in ``("next", "game_return")`` / ``("next", "game_length")``, and
``("next", "game_over")`` on the step that ends a game, counted by TorchRL's ``RewardSum`` and
``StepCounter`` before rewards are clipped for learning (``add_game_score``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gymnasium as gym
import torch
from tensordict import TensorDictBase
from torchrl.data import Unbounded
from torchrl.envs import RewardSum, SignTransform, StepCounter, Transform, TransformedEnv

GAME_KEYS = ("game_return", "game_length", "game_over")


@dataclass(frozen=True)
class EnvSpec:
    """An environment family's settings, and how it builds its environments.

    Subclasses implement ``make_batched`` and ``make_gym``; the rest has defaults that fit a
    family with one frame per agent step.
    """

    env_id: str
    clip_rewards: bool = True

    @property
    def frames_per_step(self) -> int:
        """Emulator frames per agent step (the unit of ``model.max_frames``)."""
        return 1

    @property
    def video_fps(self) -> float | None:
        """Frame rate of the recorded evaluation game (``None``: the game's own ``render_fps``)."""
        return None

    def make_batched(self, num_envs: int) -> TransformedEnv:
        """``num_envs`` environments stepped in this process (batch size ``[num_envs]``), with the game keys."""
        raise NotImplementedError

    def make_gym(self, render_mode: str | None = None) -> gym.Env:
        """One game with the gymnasium API, for the recorded evaluation game (``render_mode="rgb_array"``)."""
        raise NotImplementedError

    def evaluation_sets(self) -> dict[str, EnvSpec]:
        """Metric prefix -> the environments evaluation games are played in (whole games, raw scores)."""
        return {"eval": self}

    def replace(self, **changes) -> EnvSpec:
        return dataclasses.replace(self, **changes)


def add_game_score(env: TransformedEnv, clip_rewards: bool) -> TransformedEnv:
    """A batched env's raw score and length per game (TorchRL's ``RewardSum``/``StepCounter``) and
    ``game_over``, counted before rewards are clipped by sign (if ``clip_rewards``)."""
    env.append_transform(RewardSum(in_keys=["reward"], out_keys=["game_return"]))
    env.append_transform(StepCounter(step_count_key="game_length"))
    env.append_transform(GameOver())
    if clip_rewards:
        env.append_transform(SignTransform(in_keys=["reward"], out_keys=["reward"]))
    return env


class GameOver(Transform):
    """Writes ``game_over`` (the step that ends a game) from ``done``: a reset is a new game.

    End-of-life episodes (``impala_lit.envs.atari``) do not reset, so they leave it unset."""

    def __init__(self) -> None:
        super().__init__(in_keys=["done"], out_keys=["game_over"])

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        next_tensordict.set("game_over", next_tensordict.get("done").squeeze(-1).clone())
        return next_tensordict

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        tensordict_reset.set("game_over", torch.zeros(tensordict_reset.batch_size, dtype=torch.bool))
        return tensordict_reset

    def transform_observation_spec(self, observation_spec):
        observation_spec["game_over"] = Unbounded(observation_spec.shape, dtype=torch.bool)
        return observation_spec
