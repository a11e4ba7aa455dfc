"""Environment factory: any ALE game under the IMPALA paper's protocol, any Procgen game
(``procgen/<game>``, ``impala_lit.procgen``), or any gymnasium id.

Atari (Espeholt et al. 2018, after Mnih et al. 2015):
``gym.make(id, frameskip=1, repeat_action_probability=0)`` -> ``AtariPreprocessing``
(repeat each action 4 times, max-pool the last two frames, 84x84 grey, up to 30
no-op starts) -> 4 stacked frames -> rewards clipped by sign for learning.
Observations stay ``uint8`` until the network.

Every environment reports the raw game score in ``("next", "game_return")`` /
``("next", "game_length")`` with ``("next", "game_over")`` set on the step that ends a
game, so logs show real scores even with clipped rewards and end-of-life episodes.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.data import Unbounded
from torchrl.envs import (
    EnvBase,
    ExcludeTransform,
    GymWrapper,
    RewardSum,
    SerialEnv,
    SignTransform,
    StepCounter,
    Transform,
    TransformedEnv,
)
from torchrl.envs.gym_like import default_info_dict_reader

from impala_lit import procgen

GAME_KEYS = ("game_return", "game_length", "game_over")
ATARI_MAX_FRAMES = 108_000  # 30 minutes of play at 60 Hz, the usual Atari cap


def _register_envs() -> None:
    """ALE's games and this package's own tasks (``impala_lit.pomdp``)."""
    import ale_py

    from impala_lit import pomdp

    gym.register_envs(ale_py)
    pomdp.register()


def is_atari(env_id: str) -> bool:
    """True for ids served by ale-py (``ALE/Pong-v5``, ``PongNoFrameskip-v4``...)."""
    if procgen.is_procgen(env_id):
        return False
    _register_envs()
    spec = gym.spec(env_id)
    return isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py")


def check_env_id(env_id: str) -> None:
    """Raise a one-line ``ValueError`` naming close matches when ``env_id`` is unknown."""
    if procgen.is_procgen(env_id):
        return procgen.check_game(env_id)
    _register_envs()
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"data.env_id: unknown environment {env_id!r}{hint}")


class GameStats(gym.Wrapper):
    """Adds the running raw score and length of the current *game* to ``info``.

    Sits under the end-of-life wrapper, so a game spans all its lives, and under
    reward clipping, so the score is the real one.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._return = 0.0
        self._length = 0

    def _info(self, info: dict, game_over: bool) -> dict:
        info = dict(info)
        info["game_return"] = np.float32(self._return)
        info["game_length"] = np.int64(self._length)
        info["game_over"] = np.bool_(game_over)
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._return, self._length = 0.0, 0
        return obs, self._info(info, False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        return obs, reward, terminated, truncated, self._info(info, terminated or truncated)


class EpisodicLife(gym.Wrapper):
    """End-of-life episodes: losing a life terminates the episode for learning,
    but the game only resets when it is really over (Mnih et al. 2015)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # continue the same game with a no-op step
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to build one environment; picklable, so workers can rebuild it."""

    env_id: str = "ALE/Pong-v5"
    frame_skip: int = 4
    noop_max: int = 30
    frame_stack: int = 4
    clip_rewards: bool = True
    episodic_life: bool = False
    sticky_actions: float = 0.0
    backend: str = "gymnasium"
    # Procgen only: the level set (num_levels 0: every level) and its difficulty
    distribution_mode: str = "easy"
    num_levels: int = 0
    start_level: int = 0

    @property
    def frames_per_step(self) -> int:
        """Emulator frames per agent step (1 for non-Atari envs)."""
        return self.frame_skip if is_atari(self.env_id) else 1

    def make_gym(self, render_mode: str | None = None) -> gym.Env:
        """The gymnasium environment, with the protocol's wrappers (``render_mode="rgb_array"`` for videos)."""
        check_env_id(self.env_id)
        if procgen.is_procgen(self.env_id):
            return procgen.make_gym(self, render_mode)
        if not is_atari(self.env_id):
            return GameStats(gym.make(self.env_id, render_mode=render_mode))
        env = gym.make(
            self.env_id,
            render_mode=render_mode,
            frameskip=1,  # AtariPreprocessing does the skipping (and max-pooling)
            repeat_action_probability=self.sticky_actions,
            max_num_frames_per_episode=ATARI_MAX_FRAMES,
            full_action_space=False,
        )
        env = gym.wrappers.AtariPreprocessing(env, noop_max=self.noop_max, frame_skip=self.frame_skip, screen_size=84)
        env = GameStats(env)
        if self.episodic_life:
            env = EpisodicLife(env)
        return gym.wrappers.FrameStackObservation(env, self.frame_stack)

    def make(self) -> EnvBase:
        """One TorchRL environment (batch size ``[]``), rewards unclipped."""
        env = GymWrapper(self.make_gym(), categorical_action_encoding=True)
        reader = default_info_dict_reader(
            list(GAME_KEYS),
            spec=[
                Unbounded((), dtype=torch.float32),
                Unbounded((), dtype=torch.int64),
                Unbounded((), dtype=torch.bool),
            ],
        )
        return env.set_info_dict_reader(reader)

    def make_batched(self, num_envs: int) -> TransformedEnv:
        """``num_envs`` environments stepped in this process, batch size ``[num_envs]``.

        Transforms sit on the batch (one call per step, not one per env).
        """
        if procgen.is_procgen(self.env_id):
            return procgen.make_batched(self, num_envs)
        if self.backend == "ale_vector":
            return self._make_ale_vector(num_envs)
        env = TransformedEnv(SerialEnv(num_envs, self.make))
        if self.clip_rewards:
            env.append_transform(SignTransform(in_keys=["reward"], out_keys=["reward"]))
        return env

    def _make_ale_vector(self, num_envs: int) -> TransformedEnv:
        """ale-py's C++ ``AtariVectorEnv``: the same protocol, preprocessing done in C++.

        One emulator thread per actor process (actors are the parallelism). The raw score
        is summed by TorchRL's ``RewardSum``/``StepCounter`` before rewards are clipped.
        """
        from ale_py.vector_env import AtariVectorEnv

        vector = AtariVectorEnv(
            ale_game_name(self.env_id),
            num_envs,
            num_threads=1,
            frameskip=self.frame_skip,
            maxpool=True,
            img_height=84,
            img_width=84,
            grayscale=True,
            stack_num=self.frame_stack,
            noop_max=self.noop_max,
            repeat_action_probability=self.sticky_actions,
            max_num_frames_per_episode=ATARI_MAX_FRAMES,
            reward_clipping=False,  # clipped below, after the raw score is counted
            episodic_life=False,
            use_fire_reset=False,  # not part of the paper's protocol
            autoreset_mode="SameStep",  # what TorchRL's vector-env wrapper supports
        )
        # TorchRL wraps a vector env in a TransformedEnv of its own: extend it, not nest it
        env = _AleVectorWrapper(vector, categorical_action_encoding=True)
        if not isinstance(env, TransformedEnv):
            env = TransformedEnv(env)
        env.append_transform(ExcludeTransform("env_id", "lives", "frame_number", "episode_frame_number"))
        return add_game_score(env, self.clip_rewards)


def add_game_score(env: TransformedEnv, clip_rewards: bool) -> TransformedEnv:
    """A batched env's raw score and length per game (TorchRL's ``RewardSum``/``StepCounter``) and
    ``game_over``, counted before rewards are clipped by sign (if ``clip_rewards``)."""
    env.append_transform(RewardSum(in_keys=["reward"], out_keys=["game_return"]))
    env.append_transform(StepCounter(step_count_key="game_length"))
    env.append_transform(GameOver())
    if clip_rewards:
        env.append_transform(SignTransform(in_keys=["reward"], out_keys=["reward"]))
    return env


class _AleVectorWrapper(GymWrapper):
    """TorchRL's wrapper around ``AtariVectorEnv``, with seeds that ale-py accepts.

    TorchRL gives collector worker ``k`` a seed hashed up to 2**32; ale-py seeds its
    environments ``seed, seed + 1, ...`` as C++ ``int`` and rejects anything above 2**31 - 1
    ("incompatible function arguments"), so every worker past the second failed to start.
    """

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None:
            seed %= 2**31 - self.batch_size.numel()
        super()._set_seed(seed)


def ale_game_name(env_id: str) -> str:
    """``ALE/MontezumaRevenge-v5`` -> ``montezuma_revenge`` (ale-py's ROM name)."""
    name = env_id.split("/")[-1].split("-")[0].removesuffix("NoFrameskip")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class GameOver(Transform):
    """Writes ``game_over`` (the step that ends a game) from ``done``: without end-of-life episodes they coincide."""

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
