"""Atari games (ale-py) under the IMPALA paper's protocol (Espeholt et al. 2018, after Mnih et al. 2015).

``gym.make(id, frameskip=1, repeat_action_probability=0)`` -> ``AtariPreprocessing`` (repeat each
action 4 times, max-pool the last two frames, 84x84 grey, up to 30 no-op starts) -> 4 stacked
frames -> rewards clipped by sign for learning; games capped at 108k frames. ``ale_vector`` runs
the same steps in ale-py's C++ ``AtariVectorEnv``. Observations stay ``uint8`` until the network.

End-of-life episodes (``episodic_life``) on both backends: a lost life writes TorchRL's
``end-of-life`` key without resetting the game; the actors' stream turns it into a termination
for learning (``fold_end_of_life``), and the game score still spans the whole game.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

import gymnasium as gym
import torch
from tensordict import TensorDictBase
from torchrl.envs import EndOfLifeTransform, EnvBase, ExcludeTransform, GymWrapper, TransformedEnv

from impala_lit.envs.base import EnvSpec, add_game_score
from impala_lit.envs.gymnasium_ids import check_registered, register_envs, serial_env, torchrl_env

ATARI_MAX_FRAMES = 108_000  # 30 minutes of play at 60 Hz, the usual Atari cap
Backend = Literal["gymnasium", "ale_vector"]
BACKENDS = get_args(Backend)
END_OF_LIFE = "end-of-life"


def is_atari(env_id: str) -> bool:
    """True for ids served by ale-py (``ALE/Pong-v5``, ``PongNoFrameskip-v4``...)."""
    register_envs()
    spec = gym.registry.get(env_id)
    return spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py")


@dataclass(frozen=True)
class AtariSpec(EnvSpec):
    """One ALE game and its protocol settings.

    Args:
        frame_skip: emulator frames per agent step (the last two max-pooled).
        noop_max: up to this many no-ops at the start of a game.
        frame_stack: frames stacked into one observation.
        episodic_life: losing a life ends the episode for learning (not the game).
        fire_reset: press FIRE once at the start of each game where the game has it (the published
            baselines' protocol: some games, Breakout among them, wait for it).
        sticky_actions: repeat-action probability (the paper: 0).
        backend: ``gymnasium`` (``AtariPreprocessing`` in TorchRL's ``SerialEnv``) or ``ale_vector``
            (ale-py's C++ ``AtariVectorEnv``, the same protocol, faster).
    """

    frame_skip: int = 4
    noop_max: int = 30
    frame_stack: int = 4
    episodic_life: bool = False
    fire_reset: bool = False
    sticky_actions: float = 0.0
    backend: Backend = "gymnasium"

    @property
    def frames_per_step(self) -> int:
        return self.frame_skip

    @property
    def video_fps(self) -> float:
        return 60.0 / self.frame_skip

    def evaluation_sets(self) -> dict[str, EnvSpec]:
        return {"eval": self.replace(episodic_life=False)}  # the unit of evaluation is a game

    def make_gym(self, render_mode: str | None = None) -> gym.Env:
        check_registered(self.env_id)
        env = gym.make(
            self.env_id,
            render_mode=render_mode,
            frameskip=1,  # AtariPreprocessing does the skipping (and max-pooling)
            repeat_action_probability=self.sticky_actions,
            max_num_frames_per_episode=ATARI_MAX_FRAMES,
            full_action_space=False,
        )
        env = gym.wrappers.AtariPreprocessing(env, noop_max=self.noop_max, frame_skip=self.frame_skip, screen_size=84)
        if self.fire_reset and has_fire(env):
            env = FireReset(env)
        return gym.wrappers.FrameStackObservation(env, self.frame_stack)

    def make_batched(self, num_envs: int) -> TransformedEnv:
        if self.backend == "ale_vector":
            return self._make_ale_vector(num_envs)
        return add_game_score(serial_env(self._make_one, num_envs), self.clip_rewards)

    def _make_one(self) -> EnvBase:
        env = torchrl_env(self.make_gym)
        # on each game, where it reads ale.lives() (on the batch it warned at every step)
        return TransformedEnv(env, EndOfLifeTransform()) if self.episodic_life else env

    def _make_ale_vector(self, num_envs: int) -> TransformedEnv:
        """ale-py's C++ ``AtariVectorEnv``: the same protocol, preprocessing done in C++.

        One emulator thread per actor process (actors are the parallelism).
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
            reward_clipping=False,  # clipped after the raw score is counted
            episodic_life=False,  # its resets at a lost life would end the game score too: see LivesFromInfo
            use_fire_reset=self.fire_reset,  # FIRE at a game's start, where the game has it
            autoreset_mode="SameStep",  # what TorchRL's vector-env wrapper supports
        )
        # TorchRL wraps a vector env in a TransformedEnv of its own: extend it, not nest it
        env = _AleVectorWrapper(vector, categorical_action_encoding=True)
        if not isinstance(env, TransformedEnv):
            env = TransformedEnv(env)
        dropped = ["env_id", "frame_number", "episode_frame_number"]
        if self.episodic_life:
            env.append_transform(LivesFromInfo())
        else:
            dropped.append("lives")
        env.append_transform(ExcludeTransform(*dropped))
        return add_game_score(env, self.clip_rewards)


def has_fire(env: gym.Env) -> bool:
    """True where the game's minimal action set has FIRE as its second action (baselines' test)."""
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) > 2 and meanings[1] == "FIRE"


class FireReset(gym.Wrapper):
    """Press FIRE after the no-op starts of each game (gymnasium has no such wrapper; ale-py's vector env does)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:  # a game over within one step: start again, without FIRE
            obs, info = self.env.reset(**kwargs)
        return obs, info


class LivesFromInfo(EndOfLifeTransform):
    """TorchRL's ``EndOfLifeTransform`` reading the lives from the step's ``lives`` entry.

    ``AtariVectorEnv`` has no ``ale.lives()`` to read: its games run in C++ and report their
    lives in the step's info, which TorchRL's wrapper writes under ``lives``.
    """

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        self._lives = next_tensordict.get(self.lives_key)
        return super()._step(tensordict, next_tensordict)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        self._lives = tensordict_reset.get(self.lives_key)
        tensordict_reset = super()._reset(tensordict, tensordict_reset)
        # TorchRL writes an expanded scalar here, which a collector's in-place update on its next reset rejects
        return tensordict_reset.set(self.eol_key, tensordict_reset.get(self.eol_key).clone())

    def _get_lives(self) -> torch.Tensor:
        return self._lives


def fold_end_of_life(batch: TensorDictBase) -> TensorDictBase:
    """A lost life as the end of an episode for learning: ``terminated`` and ``done`` where a life was lost.

    The environment did not reset there (the game goes on, ``is_init`` stays unset), so a
    recurrent core carries its state into the next life, in the actors and in the learner alike.
    """
    end_of_life = batch.get(("next", END_OF_LIFE), None)
    if end_of_life is None:
        return batch
    lost = end_of_life & ~batch.get(("next", "done"))
    batch.set(("next", "terminated"), batch.get(("next", "terminated")) | lost)
    batch.set(("next", "done"), batch.get(("next", "done")) | lost)
    return batch.exclude(("next", END_OF_LIFE), ("next", "lives"), END_OF_LIFE, "lives")


class _AleVectorWrapper(GymWrapper):
    """TorchRL's wrapper around ``AtariVectorEnv``, with seeds that ale-py accepts.

    TorchRL gives collector worker ``k`` a seed hashed up to 2**32; ale-py seeds its
    environments ``seed, seed + 1, ...`` as C++ ``int`` and rejects anything above 2**31 - 1.
    """

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None:
            seed %= 2**31 - self.batch_size.numel()
        super()._set_seed(seed)


def ale_game_name(env_id: str) -> str:
    """``ALE/MontezumaRevenge-v5`` -> ``montezuma_revenge`` (ale-py's ROM name)."""
    name = env_id.split("/")[-1].split("-")[0].removesuffix("NoFrameskip")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
