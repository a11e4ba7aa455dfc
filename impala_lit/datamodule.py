"""``ImpalaDataModule``: environments -> actors (-> replay) -> batches, and the learner's ``RolloutSource``."""

from __future__ import annotations

import dataclasses
import importlib.util
import re

import lightning.pytorch as pl
import torch
from tensordict import TensorDict, TensorDictBase

from impala_lit.actors.stream import ActorBackend, ActorSettings, RolloutStream
from impala_lit.agent.networks import InferencePrecision
from impala_lit.envs import EnvSpec, check_env_id, make_env_spec
from impala_lit.envs.atari import Backend, is_atari
from impala_lit.envs.procgen import DistributionMode, check_levels, is_procgen
from impala_lit.learning.replay import ReplayMixedStream, RolloutReplay
from impala_lit.settings import (
    ClosedUnitInterval,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    SettingError,
    plain,
)


def check_actor_device(actor_device: str, actors: str) -> None:
    """Reject an actor device this machine or actor backend cannot run, in one line."""
    try:
        device = torch.device(actor_device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SettingError(f"data.actor_device: {actor_device!r} is not one of cpu, cuda, cuda:N")
    if device.type == "cuda":
        if actors != "local":
            raise SettingError(f"data.actor_device: {actor_device!r} needs data.actors=local (Ray actors infer on CPU)")
        if not torch.cuda.is_available():
            raise SettingError(f"data.actor_device: {actor_device!r} needs a CUDA GPU and none is visible (use cpu)")
        if (device.index or 0) >= torch.cuda.device_count():
            raise SettingError(
                f"data.actor_device: {actor_device!r} is not one of the {torch.cuda.device_count()} visible GPUs"
            )


class ImpalaDataModule(pl.LightningDataModule):
    """The environment settings, and the actors that stream training batches: the learner's ``RolloutSource``.

    Args:
        env_id: gymnasium id; ALE games get the paper's Atari protocol; ``procgen/<game>`` is a
            Procgen game (``impala_lit.envs.procgen``; 64x64 RGB, no skip or stack).
        num_workers: actor processes, in all: with N learners (DDP) each feeds from its share.
        envs_per_worker: environments each actor steps as one batch.
        unroll_length: steps per rollout (T).
        batch_size: rollouts per learner batch (per learner under DDP); a multiple of ``envs_per_worker``.
        frame_skip: Atari only: emulator frames per agent step (max-pooled).
        noop_max: Atari only: up to this many no-ops at the start of a game.
        frame_stack: Atari only: frames stacked into one observation.
        clip_rewards: clip rewards by sign for learning (the logged score stays raw).
        episodic_life: Atari only: losing a life ends the episode for learning.
        fire_reset: Atari only: press FIRE at the start of each game where the game has it.
        sticky_actions: Atari only: repeat-action probability (the paper: 0).
        backend: ``gymnasium`` (gymnasium's ``AtariPreprocessing`` in TorchRL's ``SerialEnv``;
            any env id) or ``ale_vector`` (ale-py's C++ ``AtariVectorEnv``, same protocol, faster;
            Atari only). Procgen games always run in Procgen's own batched env.
        distribution_mode: Procgen only: ``easy`` or ``hard`` levels.
        num_levels: Procgen only: train on this many levels (0: the whole distribution); the
            evaluation games play unseen levels.
        start_level: Procgen only: the first training level's seed.
        seed: seed of the actors' environments.
        max_actor_restarts: a dead actor restarts the actors; this many failures in a row
            without a batch stop the run (``ActorsFailedError``).
        actors: ``local`` (subprocesses of the learner, TorchRL's ``MultiAsyncCollector``) or
            ``ray`` (Ray actors, TorchRL's ``RayCollector``; ``pip install 'impala_lit[ray]'``).
        ray_address: with ``actors=ray``: ``local`` (a Ray instance started for this run),
            ``auto`` (the cluster this machine joined with ``ray start``), ``host:port`` or
            ``ray://host:port``.
        actor_device: where each local actor runs its policy: ``cpu`` (one core per actor) or
            ``cuda``/``cuda:N`` (the collector's ``policy_device``; environments stay on the CPU
            and rollouts come back on the CPU, weights are shared over CUDA IPC).
        actor_precision: ``32-true`` or ``bf16-mixed`` (the actors' pixel torso under bf16
            autocast; logits and log-probabilities stay fp32).
        learner_threads: torch threads of the learner process; ``None``: TorchRL's default, the
            cores minus the local actor processes (at least 1). More pays where the actors leave
            cores idle (Procgen on 2 cores: two actors use a third of one).
        replay_ratio: share of each learner batch replayed from a buffer of recent rollouts, in
            [0, 1): 0.5 appends ``batch_size`` older rollouts to the ``batch_size`` fresh ones
            (``impala_lit.learning.replay``; the buffer is not checkpointed, a resumed run starts it empty).
        replay_capacity: rollouts the replay buffer holds (the oldest go first).
        replay_prioritized: draw replayed rollouts by their V-trace error instead of uniformly.
        replay_alpha: priority exponent (prioritized replay).
        replay_beta: importance-weight exponent (prioritized replay; 0: no loss weights).
    """

    def __init__(
        self,
        env_id: str = "ALE/Pong-v5",
        num_workers: PositiveInt = 2,
        envs_per_worker: PositiveInt = 16,
        unroll_length: PositiveInt = 20,
        batch_size: PositiveInt = 32,
        frame_skip: PositiveInt = 4,
        noop_max: NonNegativeInt = 30,
        frame_stack: PositiveInt = 4,
        clip_rewards: bool = True,
        episodic_life: bool = False,
        fire_reset: bool = False,
        sticky_actions: Fraction = 0.0,
        backend: Backend = "gymnasium",
        distribution_mode: DistributionMode = "easy",
        num_levels: NonNegativeInt = 0,
        start_level: NonNegativeInt = 0,
        seed: int = 0,
        max_actor_restarts: NonNegativeInt = 3,
        actors: ActorBackend = "local",
        ray_address: str = "local",
        actor_device: str = "cpu",
        actor_precision: InferencePrecision = "32-true",
        learner_threads: PositiveInt | None = None,
        replay_ratio: Fraction = 0.0,
        replay_capacity: PositiveInt = 1024,
        replay_prioritized: bool = False,
        replay_alpha: NonNegativeFloat = 0.6,
        replay_beta: ClosedUnitInterval = 0.4,
    ):
        super().__init__()
        check_env_id(env_id)
        if batch_size % envs_per_worker:
            raise SettingError(
                f"data.batch_size: {batch_size} must be a multiple of data.envs_per_worker ({envs_per_worker})"
            )
        if backend == "ale_vector" and not is_atari(env_id):
            raise SettingError(f"data.backend: 'ale_vector' runs Atari games only, not {env_id!r} (use gymnasium)")
        if is_procgen(env_id):
            check_levels(num_levels, start_level)
        if actors == "ray" and importlib.util.find_spec("ray") is None:
            raise SettingError("data.actors: 'ray' needs Ray, which is not installed: pip install 'impala_lit[ray]'")
        if not (ray_address in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.-]+:\d+", ray_address)):
            raise SettingError(f"data.ray_address: {ray_address!r} is not local, auto, host:port or ray://host:port")
        check_actor_device(actor_device, actors)
        if replay_ratio > 0 and replay_capacity < batch_size:
            raise SettingError(
                f"data.replay_capacity: must be >= data.batch_size ({batch_size}), got {replay_capacity}"
            )
        self.save_hyperparameters()
        self.env = make_env_spec(
            env_id,
            frame_skip=frame_skip,
            noop_max=noop_max,
            frame_stack=frame_stack,
            clip_rewards=clip_rewards,
            episodic_life=episodic_life,
            fire_reset=fire_reset,
            sticky_actions=sticky_actions,
            backend=backend,
            distribution_mode=distribution_mode,
            num_levels=num_levels,
            start_level=start_level,
        )
        self.actor_settings = ActorSettings(
            **plain(
                dict(
                    num_workers=num_workers,
                    envs_per_worker=envs_per_worker,
                    unroll_length=unroll_length,
                    batch_size=batch_size,
                    seed=seed,
                    max_restarts=max_actor_restarts,
                    actors=actors,
                    ray_address=ray_address,
                    actor_device=actor_device,
                    actor_precision=actor_precision,
                    learner_threads=learner_threads,
                )
            )
        )
        probe = self.env.make_batched(1)
        self.observation_shape: tuple[int, ...] = tuple(probe.observation_spec["observation"].shape[1:])
        self.num_actions: int = int(probe.action_spec.space.n)
        probe.close(raise_if_closed=False)  # a SerialEnv that never stepped counts as closed
        self.stream: RolloutStream | None = None
        # the buffer lives in the learner process and is not checkpointed: a resumed run starts it empty
        self.replay = (
            RolloutReplay(replay_ratio, replay_capacity, replay_prioritized, replay_alpha, replay_beta)
            if replay_ratio
            else None
        )

    # -- RolloutSource -------------------------------------------------------------------------
    @property
    def env_spec(self) -> EnvSpec:
        return self.env

    @property
    def frames_per_step(self) -> int:
        return self.env.frames_per_step

    @property
    def frames_per_batch(self) -> int:
        """Emulator frames in one learner batch (agent steps x frame skip)."""
        return self.actor_settings.batch_size * self.actor_settings.unroll_length * self.env.frames_per_step

    @property
    def actor_restarts(self) -> int:
        return self.stream.restarts if self.stream is not None else 0

    def update_weights(self, weights: TensorDict) -> None:
        """Send the learner's policy weights to the actors."""
        if self.stream is not None:
            self.stream.update_weights(weights)

    def fresh(self, batch: TensorDictBase) -> torch.Tensor:
        return RolloutReplay.fresh(batch)

    def feedback(self, batch: TensorDictBase, policy_version: int) -> dict[str, float | torch.Tensor]:
        return self.replay.feedback(batch, policy_version) if self.replay is not None else {}

    # -- Lightning -----------------------------------------------------------------------------
    def train_dataloader(self) -> RolloutStream | ReplayMixedStream:
        # Called after checkpoint restore: the actors start from the restored weights.
        module = self.trainer.lightning_module
        actors = self.actor_settings
        # DDP: learner ``rank`` of ``world`` runs its share of the actors, with its own seeds
        world, rank = self.trainer.world_size, self.trainer.global_rank
        if actors.num_workers < world:
            raise SettingError(f"data.num_workers: {actors.num_workers} actors cannot feed {world} learners")
        share = dataclasses.replace(
            actors,
            num_workers=actors.num_workers // world + (rank < actors.num_workers % world),
            seed=actors.seed + module.policy_version + 1_000_003 * rank,
        )
        self.stream = RolloutStream(self.env, module.actor, share, policy_version=module.policy_version)
        return self.stream if self.replay is None else ReplayMixedStream(self.stream, self.replay)

    # ``validate``/``test`` run one empty step; ``EvaluationCallback`` plays the games at epoch end.
    def val_dataloader(self) -> list[int]:
        return [0]

    def test_dataloader(self) -> list[int]:
        return [0]

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def teardown(self, stage: str) -> None:
        self.close()

    def on_exception(self, exception: BaseException) -> None:
        self.close()
