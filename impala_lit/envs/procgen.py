"""Procgen (Cobbe et al. 2020): 16 procedurally generated games, trained on a fixed set of levels
and scored on levels never seen in training.

Ids read like ALE's: ``procgen/coinrun``, ``procgen/starpilot``... Observations are the game's
64x64 RGB frames (no frame skip, no stack); the 15 actions are the same in every game. The
actors use TorchRL's ``ProcgenEnv`` (one batched C++ env per actor); the recorded evaluation
game uses a one-game gymnasium adapter so that it renders the 512x512 view.

Installation: the ``procgen2`` rebuild (CPython 3.11 wheels with Qt bundled) and its Python
parts ``gym3`` and ``gym`` are installed with ``--no-deps`` (``requirements-procgen.txt``):
their metadata pins ``numpy<2``, ``cffi<2`` and old ``imageio-ffmpeg``/``glfw``/``moderngl``,
none of which the simulation needs (those are for gym3's interactive viewer); the prebuilt
``libenv.so`` and the ``gym3.libenv`` cffi bridge run under numpy 2 and cffi 2
(``tests/test_procgen.py``).
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from typing import Literal, get_args

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict
from torchrl.envs import ProcgenEnv, TransformedEnv

from impala_lit.envs.base import EnvSpec, add_game_score
from impala_lit.settings import SettingError

PREFIX = "procgen/"
GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)  # fmt: skip
DistributionMode = Literal["easy", "hard"]  # the benchmark's two; memory/exploration exist for a few games only
DISTRIBUTION_MODES = get_args(DistributionMode)
INSTALL = "pip install --no-deps -r requirements-procgen.txt (./setup.sh does it)"
FPS = 15  # Procgen's own viewer rate


def is_procgen(env_id: str) -> bool:
    """True for ``procgen/<game>`` ids."""
    return env_id.startswith(PREFIX)


def game_name(env_id: str) -> str:
    """``procgen/coinrun`` -> ``coinrun``."""
    return env_id.removeprefix(PREFIX)


def check_game(env_id: str) -> None:
    """One-line ``SettingError`` for an unknown game (with close matches) or a missing installation."""
    game = game_name(env_id)
    if game not in GAMES:
        close = difflib.get_close_matches(game, GAMES, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else f"games: {', '.join(GAMES)}"
        raise SettingError(f"data.env_id: unknown Procgen game {env_id!r}; {hint}")
    if importlib.util.find_spec("procgen") is None:
        raise SettingError(f"data.env_id: {env_id!r} needs the procgen package, which is not installed: {INSTALL}")


def check_levels(num_levels: int, start_level: int) -> None:
    """One-line ``SettingError`` for levels beyond Procgen's seeds (each setting alone is checked by its type)."""
    if not 0 <= start_level < 2**31 - num_levels:
        raise SettingError(f"data.start_level: must be in [0, 2**31 - data.num_levels), got {start_level}")


@dataclass(frozen=True)
class ProcgenSpec(EnvSpec):
    """One Procgen game and its level set.

    Args:
        distribution_mode: ``easy`` or ``hard`` levels.
        num_levels: train on this many levels (0: the whole distribution).
        start_level: the first training level's seed.
    """

    distribution_mode: DistributionMode = "easy"
    num_levels: int = 0
    start_level: int = 0

    @property
    def video_fps(self) -> float:
        return FPS

    def procgen_kwargs(self) -> dict:
        return {
            "distribution_mode": self.distribution_mode,
            "num_levels": self.num_levels,
            "start_level": self.start_level,
        }

    def unseen_levels(self) -> ProcgenSpec:
        """The benchmark's test levels: the full distribution (``num_levels=0``), seeds drawn from
        2**31 levels, so the training set's few hundred are hit with probability ~1e-7 per game."""
        return self.replace(num_levels=0, start_level=0)

    def evaluation_sets(self) -> dict[str, EnvSpec]:
        """Unseen levels (``eval/*``, the benchmark's test score) and the training levels (``eval_train/*``)."""
        return {"eval": self.unseen_levels(), "eval_train": self}

    def make_batched(self, num_envs: int) -> TransformedEnv:
        """``num_envs`` games in one Procgen C++ env (TorchRL's ``ProcgenEnv``), batch size ``[num_envs]``."""
        env = TransformedEnv(ProcgenGames(game_name(self.env_id), num_envs=num_envs, **self.procgen_kwargs()))
        return add_game_score(env, self.clip_rewards)

    def make_gym(self, render_mode: str | None = None) -> gym.Env:
        """One game as a gymnasium env (CHW observations) that renders the 512x512 view."""
        return ProcgenGame(self, render_mode)


class ProcgenGames(ProcgenEnv):
    """TorchRL's ``ProcgenEnv`` with two fixes for how actors use it.

    - Reset: Procgen starts the next game by itself on the step that ends one, and gym3 cannot
      reset; TorchRL's wrapper calls gym3's ``reset``, which prints "Warning: manual reset
      ignored" on every partial reset (every finished game). Here a reset only reads the
      current observation.
    - Seed: Procgen takes its seed when the C++ env is built, and the wrapper's ``set_seed`` did
      nothing (the collector's per-worker seeds were lost); here it rebuilds the env.
    """

    def __init__(self, game: str, num_envs: int, **kwargs):
        self._game, self._procgen_kwargs = game, dict(kwargs)
        super().__init__(game, num_envs=num_envs, **kwargs)

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        _, obs, _ = self._env.env.observe()
        rgb = torch.from_numpy(obs["rgb"]).permute(0, 3, 1, 2)
        zeros = torch.zeros((*self.batch_size, 1), dtype=torch.bool)
        return TensorDict(
            {"observation": rgb, "done": zeros, "terminated": zeros.clone(), "truncated": zeros.clone()},
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            return
        import procgen

        self._env.env.close()
        num = self.batch_size.numel()
        self._env = procgen.ProcgenEnv(num, self._game, rand_seed=seed % (2**31), **self._procgen_kwargs)


class ProcgenGame(gym.Env):
    """One Procgen game with the gymnasium API, for the recorded evaluation game.

    ``render()`` returns the 512x512 view Procgen draws for people; ``reset(seed=...)``
    rebuilds the game with that seed (Procgen seeds when it is built).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(self, spec: ProcgenSpec, render_mode: str | None = None):
        from gym3 import types as gym3_types  # noqa: F401 - fail here, not mid-game, when gym3 is missing

        self._spec = spec
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)  # CHW, as the actors see it
        self.action_space = gym.spaces.Discrete(15)
        self._env = None

    def _build(self, seed: int | None) -> None:
        from procgen import ProcgenGym3Env

        if self._env is not None:
            self._env.close()
        kwargs = self._spec.procgen_kwargs()
        if seed is not None:
            kwargs["rand_seed"] = seed % (2**31)
        self._env = ProcgenGym3Env(num=1, env_name=game_name(self._spec.env_id), render_mode=self.render_mode, **kwargs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._build(seed)
        _, obs, _ = self._env.observe()
        return _chw(obs), {}

    def step(self, action):
        self._env.act(np.asarray([action]))
        reward, obs, first = self._env.observe()
        # the step that ends a game already shows the next game's first frame (Procgen resets itself)
        return _chw(obs), float(reward[0]), bool(first[0]), False, {}

    def render(self):
        """The 512x512 view, every second pixel (256x256: a 1,000-step GIF stays ~200 MB in memory)."""
        info = self._env.get_info()[0]
        frame = info["rgb"] if "rgb" in info else self._env.observe()[1]["rgb"][0]
        return np.ascontiguousarray(frame[::2, ::2])

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _chw(obs: dict) -> np.ndarray:
    return np.ascontiguousarray(obs["rgb"][0].transpose(2, 0, 1))
