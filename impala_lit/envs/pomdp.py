"""Partially observable tasks, where a policy needs memory: CartPole with its velocities hidden.

``impala_lit/CartPoleNoVelocity-v1`` is gymnasium's CartPole-v1 (500 steps, the same rewards)
observing only the cart's position and the pole's angle. A feed-forward policy cannot tell which
way the pole is falling; a recurrent core (``--model.core lstm``) can infer it from the last steps.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

CARTPOLE_NO_VELOCITY = "impala_lit/CartPoleNoVelocity-v1"
POSITIONS = [0, 2]  # x and theta; 1 and 3 are their velocities


class HideVelocities(gym.ObservationWrapper):
    """CartPole's observation without the velocities: ``(x, theta)``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[POSITIONS], space.high[POSITIONS], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[POSITIONS]


def make_cartpole_no_velocity(render_mode: str | None = None) -> gym.Env:
    return HideVelocities(CartPoleEnv(render_mode=render_mode))


def register() -> None:
    """Make the ids above known to ``gym.make`` (idempotent)."""
    if CARTPOLE_NO_VELOCITY not in gym.registry:
        gym.register(
            CARTPOLE_NO_VELOCITY,
            entry_point="impala_lit.envs.pomdp:make_cartpole_no_velocity",
            max_episode_steps=500,
            reward_threshold=475.0,
        )
