"""Actors: TorchRL ``MultiAsyncCollector`` workers streaming ``[batch_size, T]`` rollouts.

Each worker process steps ``envs_per_worker`` environments with its own copy of the
policy and yields ``[envs_per_worker, T]`` rollouts as soon as they are done; the stream
groups ``batch_size // envs_per_worker`` of them into one learner batch. Every frame
carries the ``policy_version`` that produced it; weights reach the workers through the
collector's weight-sync API after each learner step.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import MultiAsyncCollector

from impala_lit.envs import EnvSpec

ROLLOUT_KEYS_DROPPED = ("collector", "game_return", "game_length", "game_over")


class RolloutStream:
    """An iterable of learner batches; the collector starts lazily on first ``__iter__``.

    Lightning calls ``iter()`` once as a check and drops it, so ``__iter__`` is a
    generator: nothing starts until the first batch is asked for.
    """

    def __init__(
        self,
        env: EnvSpec,
        policy: TensorDictModuleBase,
        *,
        num_workers: int,
        envs_per_worker: int,
        unroll_length: int,
        batch_size: int,
        policy_version: int = 0,
        seed: int = 0,
    ):
        self.env = env
        # The workers get their own copy: learner updates reach them only through
        # ``update_weights`` (a shared module would change mid-rollout, untracked).
        self.policy = copy.deepcopy(policy).cpu().float().select_out_keys("action", "action_log_prob")
        self.num_workers = num_workers
        self.envs_per_worker = envs_per_worker
        self.unroll_length = unroll_length
        self.batch_size = batch_size
        self.rollouts_per_batch = batch_size // envs_per_worker
        # workers count weight updates from 0; the learner was at ``policy_version`` when they started
        self.version_offset = policy_version
        self.seed = seed
        self.collector: MultiAsyncCollector | None = None

    def _start(self) -> MultiAsyncCollector:
        make_env = functools.partial(self.env.make_batched, self.envs_per_worker)
        collector = MultiAsyncCollector(
            [make_env] * self.num_workers,
            self.policy,
            frames_per_batch=self.envs_per_worker * self.unroll_length,
            total_frames=-1,
            track_policy_version=True,
            # workers run 1 torch thread each (num_sub_threads default); the learner
            # process gets cores minus workers (num_threads default), so nothing oversubscribes
        )
        collector.set_seed(self.seed)
        return collector

    def __iter__(self) -> Iterator[TensorDictBase]:
        self.collector = self._start()
        try:
            pending: list[TensorDictBase] = []
            for rollout in self.collector:
                pending.append(rollout.exclude(*ROLLOUT_KEYS_DROPPED))
                if len(pending) < self.rollouts_per_batch:
                    continue
                batch = pending[0] if len(pending) == 1 else torch.cat(pending, 0)
                pending = []
                batch["policy_version"] += self.version_offset
                yield batch
        finally:
            self.close()

    def update_weights(self, weights: TensorDict) -> None:
        """Send the learner's policy weights to every worker (each bumps its version by one)."""
        if self.collector is not None:
            self.collector.update_policy_weights_(weights)

    def close(self) -> None:
        """Shut the workers down (idempotent)."""
        if self.collector is not None:
            self.collector.shutdown(raise_on_error=False)
            self.collector = None
