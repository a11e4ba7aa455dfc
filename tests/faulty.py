"""Learners and environments that fail on purpose (``--model tests.faulty.<Name>`` in subprocess tests)."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv

from impala_lit import ImpalaModule
from impala_lit.envs import GymSpec


class RaisesAtStep3(ImpalaModule):
    """Raises inside ``training_step`` once the actors are running."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("injected failure at step 3")
        return super().training_step(batch, batch_idx)


class SlowSteps(ImpalaModule):
    """Each learner step takes 5 s longer: a signal lands inside a step."""

    def training_step(self, batch, batch_idx):
        import time

        time.sleep(5)
        return super().training_step(batch, batch_idx)


class NaNLoss(ImpalaModule):
    """The loss is NaN at the steps listed in ``$IMPALA_LIT_NAN_STEPS`` (``3,4``; ``10-``: from 10 on)."""

    def loss(self, batch):
        import os

        terms = super().loss(batch)
        items = [s for s in os.environ.get("IMPALA_LIT_NAN_STEPS", "").split(",") if s]
        step = self.global_step
        if any(step >= int(s[:-1]) if s.endswith("-") else step == int(s) for s in items):
            terms["loss"] = terms["loss"] * float("nan")
        return terms


class DiesWhileSavingStep4(ImpalaModule):
    """With ``$IMPALA_LIT_DIE_SAVING`` set: dies (exit 9) halfway through writing the checkpoint of step 4."""

    def on_save_checkpoint(self, checkpoint):
        import os

        super().on_save_checkpoint(checkpoint)
        if self.global_step >= 4 and os.environ.get("IMPALA_LIT_DIE_SAVING"):
            import io

            import torch

            real_save = torch.save

            def half_then_die(obj, file, *args, **kwargs):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                file.write(buffer.getvalue()[: buffer.tell() // 2])
                file.flush()
                os._exit(9)

            torch.save = half_then_die


@dataclass(frozen=True)
class EnvFailsInActors(GymSpec):
    """Builds in the learner (which reads the specs from it) and raises in every actor process."""

    def make_batched(self, num_envs: int):
        if multiprocessing.parent_process() is not None:
            raise RuntimeError("this environment cannot start in an actor")
        return super().make_batched(num_envs)


@dataclass(frozen=True)
class EnvFailsOnSeed(GymSpec):
    """Starts in the actors, then raises when the collector seeds it (the actor process dies)."""

    def make_batched(self, num_envs: int):
        env = super().make_batched(num_envs)
        if multiprocessing.parent_process() is not None:

            def refuse(seed, static_seed=False):
                raise RuntimeError("this environment refuses its seed")

            env.set_seed = refuse
        return env


class RaisingCartPole(CartPoleEnv):
    """CartPole whose ``step`` raises after ``$IMPALA_LIT_FAIL_AFTER`` steps of its process (all its games):
    a user's environment that breaks mid-run (``--data.env_id tests.faulty:RaisingCartPole-v0``)."""

    steps = 0

    def step(self, action):
        import os

        RaisingCartPole.steps += 1
        if RaisingCartPole.steps > int(os.environ.get("IMPALA_LIT_FAIL_AFTER", "1000")):
            raise RuntimeError("the simulator lost its licence server")
        return super().step(action)


gym.register("RaisingCartPole-v0", entry_point=RaisingCartPole, max_episode_steps=500)


class Payload:
    """A Python object in a checkpoint: unpickling it means running code from the file."""
