"""Actors: TorchRL ``MultiAsyncCollector`` workers streaming ``[batch_size, T]`` rollouts.

Each worker process steps ``envs_per_worker`` environments with its own copy of the
policy and yields ``[envs_per_worker, T]`` rollouts as soon as they are done; the stream
groups ``batch_size // envs_per_worker`` of them into one learner batch. Every frame
carries the ``policy_version`` that produced it; weights reach the workers through the
collector's weight-sync API after each learner step.

``actors="ray"`` runs the same workers as Ray actors (TorchRL's ``RayCollector``, one
``Collector`` per actor), on a local Ray instance or a cluster (``ray_address``); rollouts,
keys, policy versions and the weight-sync call are the same.

A dead actor (killed, or its environment raising) is noticed by TorchRL within a second;
the stream then restarts all actors from the latest weights and counts it (``restarts``),
and gives up with ``ActorsFailedError`` after ``max_restarts`` failures in a row.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import multiprocessing
import os
import queue
import signal
import sys
import warnings
from collections.abc import Iterator

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import BaseCollector, Collector, MultiAsyncCollector
from torchrl.envs import Transform
from torchrl.weight_update import SharedMemWeightSyncScheme

from impala_lit.console import quiet_actor_console
from impala_lit.envs import EnvSpec
from impala_lit.networks import set_inference_precision
from impala_lit.recurrent import env_transforms, next_state_keys

ROLLOUT_KEYS_DROPPED = ("collector", "game_return", "game_length", "game_over")
ACTOR_BACKENDS = ("local", "ray")
# The Ray actors get the policy's weights when they are built; the first update comes after a step.
warnings.filterwarnings("ignore", message="RayCollector iteration started before weight synchronization")


def _worker_env(env: EnvSpec, num_envs: int, transforms: tuple[Transform, ...] = ()):
    """The batched environments of one actor (plus ``transforms``: a recurrent policy's state
    tracking); runs in the actor process when it starts.

    Actors ignore Ctrl-C (the terminal sends it to every process of the job): the learner
    stops them after its own clean stop. On Linux they die with the learner, also when
    it is killed with SIGKILL, instead of running on as orphans.
    """
    if multiprocessing.parent_process() is not None:  # an actor process (the learner calls this for specs)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        quiet_actor_console()
        if sys.platform == "linux":
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    batched = env.make_batched(num_envs)
    for transform in transforms:
        batched.append_transform(transform.clone())
    return batched


class LivenessAwareWeightSync(SharedMemWeightSyncScheme):
    """TorchRL's default shared-memory weight sync, except that a dead actor cannot block the learner.

    The stock scheme waits without a timeout for every worker to acknowledge new weights; a
    killed worker never does, and the learner hung in ``update_policy_weights_`` (found by
    ``bench/soak.py``). Here the wait gives up once a worker is dead: the stream's next read
    then sees the dead worker (TorchRL checks on every queue timeout) and restarts the actors.
    """

    def __init__(self) -> None:
        super().__init__(sync=True)
        self.processes: list = []  # the collector's workers, set once they exist (never pickled)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["processes"] = []
        return state

    def _wait_for_ack(self, worker_ids=None, timeout=None) -> None:
        if isinstance(worker_ids, int):
            worker_ids = [worker_ids]
        for worker in list(self._ack_queues) if worker_ids is None else worker_ids:
            while True:
                try:
                    self._ack_queues[worker].get(timeout=1.0)
                    break
                except queue.Empty:
                    if any(not process.is_alive() for process in self.processes):
                        return


def _ray_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a dead actor or node, if Ray is in use."""
    ray = sys.modules.get("ray")
    return (ray.exceptions.RayError,) if ray is not None else ()


class ActorsFailedError(RuntimeError):
    """The actors kept dying: restarting them did not produce a batch."""


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
        max_restarts: int = 3,
        actors: str = "local",
        ray_address: str = "local",
        actor_device: str = "cpu",
        actor_precision: str = "32-true",
        learner_threads: int | None = None,
    ):
        self.env = env
        # The workers get their own copy: learner updates reach them only through
        # ``update_weights`` (a shared module would change mid-rollout, untracked).
        # a recurrent policy also keeps the state it hands to the next step (``impala_lit.recurrent``)
        self.next_state_keys = next_state_keys(policy)
        self.env_transforms = tuple(env_transforms(policy))
        policy = copy.deepcopy(policy).cpu().float()
        policy = policy.select_out_keys("action", "action_log_prob", *self.next_state_keys)
        self.policy = set_inference_precision(policy, actor_precision)
        self.num_workers = num_workers
        self.envs_per_worker = envs_per_worker
        self.unroll_length = unroll_length
        self.batch_size = batch_size
        self.rollouts_per_batch = batch_size // envs_per_worker
        self.policy_version = policy_version  # the learner's version of ``self.policy``
        self.version_offset = policy_version
        self.seed = seed
        self.max_restarts = max_restarts
        self.actors = actors
        self.ray_address = ray_address
        self.actor_device = actor_device
        self.learner_threads = learner_threads
        self.restarts = 0  # times the actors were restarted after one of them died
        self._latest_weights: TensorDict | None = None
        self.collector: BaseCollector | None = None
        self._weight_sync: LivenessAwareWeightSync | None = None

    def _start(self) -> BaseCollector:
        if self._latest_weights is not None:
            self._latest_weights.to_module(self.policy, inplace=True)
        make_env = functools.partial(_worker_env, self.env, self.envs_per_worker, self.env_transforms)
        # kept on self before anything can fail, so that ``close`` shuts the workers down
        if self.actors == "ray":
            self.collector = collector = self._ray_collector(make_env)
        else:
            self._weight_sync = weight_sync = LivenessAwareWeightSync()
            # each worker moves its policy copy to policy_device; frames go there for the policy's
            # call and the rollout is stored on the CPU, where the learner batch is assembled
            devices = {} if self.actor_device == "cpu" else {
                "policy_device": self.actor_device, "env_device": "cpu", "storing_device": "cpu"
            }  # fmt: skip
            self.collector = collector = MultiAsyncCollector(
                [make_env] * self.num_workers,
                self.policy,
                frames_per_batch=self.envs_per_worker * self.unroll_length,
                total_frames=-1,
                track_policy_version=True,
                weight_sync_schemes={"policy": weight_sync},
                **devices,
                # workers run 1 torch thread each (num_sub_threads default); the learner
                # process gets cores minus workers (num_threads=None), so nothing oversubscribes
                num_threads=self.learner_threads,
            )
            weight_sync.processes = list(collector.procs)
        # workers count weight updates from 0: offset their stamps by the learner's version now
        self.version_offset = self.policy_version
        collector.set_seed(self.seed + 10_007 * self.restarts)  # a restart does not replay the same games
        return collector

    def _ray_collector(self, make_env) -> BaseCollector:
        """``num_workers`` Ray actors, each a TorchRL ``Collector`` over ``envs_per_worker`` envs."""
        from torchrl.collectors.distributed import RayCollector

        if self.ray_address == "local":  # a Ray instance of this process, shut down with the actors
            init = {"address": "local", "include_dashboard": False, "num_cpus": os.cpu_count()}
        else:  # an existing cluster: "auto", "host:port" or "ray://host:port"
            init = {"address": self.ray_address}
        if self.learner_threads is not None:
            torch.set_num_threads(self.learner_threads)
        return RayCollector(
            [make_env] * self.num_workers,
            self.policy,
            frames_per_batch=self.envs_per_worker * self.unroll_length,
            total_frames=2**62,  # TorchRL 0.14.1's RayCollector yields nothing with -1 ("no limit")
            collector_class=Collector,
            collector_kwargs={"track_policy_version": True},
            num_collectors=self.num_workers,
            sync=False,  # first ready, first served, as MultiAsyncCollector
            ray_init_config={**init, "log_to_driver": False},
            remote_configs={"num_cpus": 1, "num_gpus": 0},
        )

    def __iter__(self) -> Iterator[TensorDictBase]:
        failures_in_row = 0
        try:
            while True:
                try:
                    # inside the try: a worker that dies while starting (e.g. its environment
                    # raising on seed) counts as a failure like one that dies later
                    collector = self._start()
                    for batch in self._batches(collector):
                        failures_in_row = 0
                        yield batch
                except (RuntimeError, ConnectionError, EOFError, *_ray_errors()) as err:
                    # TorchRL notices a dead worker within ~1 s, stops the others and raises the
                    # RuntimeError; a worker killed while sending a rollout leaves a message whose
                    # shared-memory handle can no longer be fetched (ConnectionRefusedError).
                    if (
                        type(err) is RuntimeError  # Ray's errors subclass it
                        and not str(err).startswith("At least one process failed")
                    ):
                        raise
                    failures_in_row += 1
                    self.restarts += 1
                    self.close()
                    if failures_in_row > self.max_restarts:
                        raise ActorsFailedError(
                            f"the actors failed {failures_in_row} times in a row without producing a batch "
                            f"(data.max_actor_restarts={self.max_restarts}); last: {err!r}"
                        ) from err
                    warnings.warn(f"restarting the actors ({self.restarts} restarts so far): {err}", stacklevel=2)
        finally:
            self.close()

    def _batches(self, collector: BaseCollector) -> Iterator[TensorDictBase]:
        pending: list[TensorDictBase] = []
        for rollout in collector:
            # the state after each step stays with the actors: the learner replays from the first one
            pending.append(rollout.exclude(*ROLLOUT_KEYS_DROPPED, *self.next_state_keys))
            if len(pending) < self.rollouts_per_batch:
                continue
            batch = pending[0] if len(pending) == 1 else torch.cat(pending, 0)
            pending = []
            batch["policy_version"] += self.version_offset
            yield batch

    def update_weights(self, weights: TensorDict) -> None:
        """Send the learner's policy weights to every worker (each bumps its version by one).

        Restarted workers start from the latest weights received here.
        """
        self._latest_weights = weights
        self.policy_version += 1
        if self.collector is not None:
            self.collector.update_policy_weights_(weights)

    def close(self) -> None:
        """Shut the workers down (idempotent)."""
        if self.collector is not None:
            if self.actors == "ray":
                self.collector.shutdown()  # stops our actors; a Ray started here goes with them
            else:
                self.collector.shutdown(raise_on_error=False)
            self.collector = None
        if self._weight_sync is not None:
            # Not left to the scheme's ``__del__``: when garbage collection runs it after a
            # failed start, its queue ``put`` starts a feeder thread there and hangs for good.
            self._weight_sync.shutdown()
            self._weight_sync = None
