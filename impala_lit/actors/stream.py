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
import signal
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import BaseCollector, Collector, MultiAsyncCollector
from torchrl.envs import EnvBase, Transform, TransformedEnv

from impala_lit.actors.weight_sync import LivenessAwareWeightSync
from impala_lit.agent.networks import InferencePrecision, set_inference_precision
from impala_lit.agent.recurrent import env_transforms, next_state_keys
from impala_lit.app.console import quiet_actor_console
from impala_lit.envs import GAME_KEYS, EnvSpec
from impala_lit.envs.atari import fold_end_of_life

ROLLOUT_KEYS_DROPPED = ("collector", *GAME_KEYS)
ActorBackend = Literal["local", "ray"]
ACTOR_BACKENDS = get_args(ActorBackend)
# The Ray actors get the policy's weights when they are built; the first update comes after a step.
warnings.filterwarnings("ignore", message="RayCollector iteration started before weight synchronization")


class ErrorReportingEnv(TransformedEnv):
    """An actor's environments that write what they raise to ``report_to`` before the actor dies.

    A dead actor process tells the learner only that its pipe closed (``EOFError``); this line is
    how the learner can name the environment and its exception.
    """

    def __init__(self, env: EnvBase, report_to: str, env_id: str):
        super().__init__(env)
        self.report_to = report_to
        self.env_id = env_id

    def _report(self, err: Exception) -> None:
        line = f"{self.env_id} raised {type(err).__name__}: {err}".replace("\n", " ")[:300]
        try:
            with open(self.report_to, "a") as out:
                out.write(line + "\n")
        except OSError:  # a Ray actor on another machine: its error reaches the learner through Ray
            pass

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        try:
            return super()._step(tensordict)
        except Exception as err:
            self._report(err)
            raise

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        try:
            return super()._reset(tensordict, **kwargs)
        except Exception as err:
            self._report(err)
            raise


def _worker_env(env: EnvSpec, num_envs: int, transforms: tuple[Transform, ...] = (), report_to: str | None = None):
    """The batched environments of one actor (plus ``transforms``: a recurrent policy's state
    tracking); runs in the actor process when it starts. ``report_to``: see ``ErrorReportingEnv``.

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
    return ErrorReportingEnv(batched, report_to, env.env_id) if report_to else batched


def _is_actor_failure(err: BaseException) -> bool:
    """Whether ``err`` is how TorchRL (or Ray) reports an actor process that died.

    TorchRL notices a dead worker within ~1 s, stops the others and raises ``RuntimeError``; if one
    of them takes longer than the 0.1 s it is given to stop, closing it raises ``ValueError``
    instead. A worker killed while sending a rollout leaves a message whose shared-memory handle
    can no longer be fetched (``ConnectionRefusedError``), or a closed pipe (``EOFError``).
    """
    if isinstance(err, (ConnectionError, EOFError, *_ray_errors())):
        return True
    message = str(err)
    if isinstance(err, ValueError):
        return message.startswith("Cannot close a process while it is still running")
    return type(err) is RuntimeError and message.startswith("At least one process failed")


def _ray_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a dead actor or node, if Ray is in use."""
    ray = sys.modules.get("ray")
    return (ray.exceptions.RayError,) if ray is not None else ()


@dataclass(frozen=True)
class ActorSettings:
    """How many actors run where, and the shape of what they send (``ImpalaDataModule`` documents each)."""

    num_workers: int = 2
    envs_per_worker: int = 16
    unroll_length: int = 20
    batch_size: int = 32
    seed: int = 0
    max_restarts: int = 3
    actors: ActorBackend = "local"
    ray_address: str = "local"
    actor_device: str = "cpu"
    actor_precision: InferencePrecision = "32-true"
    learner_threads: int | None = None

    @property
    def rollouts_per_batch(self) -> int:
        return self.batch_size // self.envs_per_worker


class ActorsFailedError(RuntimeError):
    """The actors kept dying: restarting them did not produce a batch."""


class RolloutStream:
    """An iterable of learner batches; the collector starts lazily on first ``__iter__``.

    Lightning calls ``iter()`` once as a check and drops it, so ``__iter__`` is a
    generator: nothing starts until the first batch is asked for.
    """

    def __init__(
        self, env: EnvSpec, policy: TensorDictModuleBase, settings: ActorSettings, policy_version: int = 0
    ) -> None:
        self.env = env
        self.settings = settings
        # The workers get their own copy: learner updates reach them only through
        # ``update_weights`` (a shared module would change mid-rollout, untracked).
        # a recurrent policy also keeps the state it hands to the next step (``impala_lit.agent.recurrent``)
        self.next_state_keys = next_state_keys(policy)
        self.env_transforms = tuple(env_transforms(policy))
        policy = copy.deepcopy(policy).cpu().float()
        policy = policy.select_out_keys("action", "action_log_prob", *self.next_state_keys)
        self.policy = set_inference_precision(policy, settings.actor_precision)
        self.policy_version = policy_version  # the learner's version of ``self.policy``
        self.version_offset = policy_version
        self.restarts = 0  # times the actors were restarted after one of them died
        self._latest_weights: TensorDict | None = None
        self.collector: BaseCollector | None = None
        self._weight_sync: LivenessAwareWeightSync | None = None
        self._send_error: BaseException | None = None  # an actor found dead while weights were sent
        # what the actors' environments raised (ErrorReportingEnv), read when an actor dies
        handle, name = tempfile.mkstemp(prefix="impala_lit_actor_errors_", suffix=".log")
        os.close(handle)
        self._error_report = Path(name)
        weakref.finalize(self, self._error_report.unlink, missing_ok=True)

    def last_actor_error(self) -> str | None:
        """The last line an actor's environment reported before it raised, if any."""
        try:
            lines = self._error_report.read_text().splitlines()
        except OSError:
            return None
        return lines[-1] if lines else None

    def _start(self) -> BaseCollector:
        self._send_error = None  # about the actors being replaced
        if self._latest_weights is not None:
            # copied into the policy's own tensors: tensordict 0.14's to_module(inplace=True) fails on
            # the recurrent policy (an LSTMModule inside), so restarts of the LSTM default crashed
            TensorDict.from_module(self.policy).data.update_(self._latest_weights)
        cfg = self.settings
        make_env = functools.partial(
            _worker_env, self.env, cfg.envs_per_worker, self.env_transforms, str(self._error_report)
        )
        # kept on self before anything can fail, so that ``close`` shuts the workers down
        if cfg.actors == "ray":
            self.collector = collector = self._ray_collector(make_env)
        else:
            self._weight_sync = weight_sync = LivenessAwareWeightSync()
            # each worker moves its policy copy to policy_device; frames go there for the policy's
            # call and the rollout is stored on the CPU, where the learner batch is assembled
            devices = {} if cfg.actor_device == "cpu" else {
                "policy_device": cfg.actor_device, "env_device": "cpu", "storing_device": "cpu"
            }  # fmt: skip
            self.collector = collector = MultiAsyncCollector(
                [make_env] * cfg.num_workers,
                self.policy,
                frames_per_batch=cfg.envs_per_worker * cfg.unroll_length,
                total_frames=-1,
                track_policy_version=True,
                weight_sync_schemes={"policy": weight_sync},
                **devices,
                # workers run 1 torch thread each (num_sub_threads default); the learner
                # process gets cores minus workers (num_threads=None), so nothing oversubscribes
                num_threads=cfg.learner_threads,
            )
            weight_sync.processes = list(collector.procs)
        # workers count weight updates from 0: offset their stamps by the learner's version now
        self.version_offset = self.policy_version
        collector.set_seed(cfg.seed + 10_007 * self.restarts)  # a restart does not replay the same games
        return collector

    def _ray_collector(self, make_env) -> BaseCollector:
        """``num_workers`` Ray actors, each a TorchRL ``Collector`` over ``envs_per_worker`` envs."""
        cfg = self.settings
        if cfg.ray_address == "local":  # a Ray instance of this process, shut down with the actors
            init = {"address": "local", "include_dashboard": False, "num_cpus": os.cpu_count()}
        else:  # an existing cluster: "auto", "host:port" or "ray://host:port"
            init = {"address": cfg.ray_address}
        if cfg.learner_threads is not None:
            torch.set_num_threads(cfg.learner_threads)
        # ray.init replaces the SIGINT/SIGTERM handlers with its own exit: the learner's stay (a clean stop)
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._new_ray_collector(make_env, init)
        finally:
            if threading.current_thread() is threading.main_thread():
                for signum, handler in handlers.items():
                    if handler is not None:
                        signal.signal(signum, handler)

    def _new_ray_collector(self, make_env, init: dict) -> BaseCollector:
        from torchrl.collectors.distributed import RayCollector

        cfg = self.settings
        return RayCollector(
            [make_env] * cfg.num_workers,
            self.policy,
            frames_per_batch=cfg.envs_per_worker * cfg.unroll_length,
            total_frames=2**62,  # TorchRL 0.14.1's RayCollector yields nothing with -1 ("no limit")
            collector_class=Collector,
            collector_kwargs={"track_policy_version": True},
            num_collectors=cfg.num_workers,
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
                except (RuntimeError, ValueError, ConnectionError, EOFError, *_ray_errors()) as err:
                    if not _is_actor_failure(err):
                        raise
                    failures_in_row += 1
                    self.restarts += 1
                    self.close()
                    reason = self.last_actor_error() or repr(err)
                    if failures_in_row > self.settings.max_restarts:
                        raise ActorsFailedError(
                            f"the actors failed {failures_in_row} times in a row without producing a batch "
                            f"(data.max_actor_restarts={self.settings.max_restarts}); last: {reason}"
                        ) from err
                    warnings.warn(f"restarting the actors ({self.restarts} restarts so far): {reason}", stacklevel=2)
        finally:
            self.close()

    def _batches(self, collector: BaseCollector) -> Iterator[TensorDictBase]:
        pending: list[TensorDictBase] = []
        for rollout in collector:
            if self._send_error is not None:
                err, self._send_error = self._send_error, None
                raise err  # an actor failure (ConnectionError): restart
            # the state after each step stays with the actors: the learner replays from the first one
            # a lost life ends the episode for learning (``impala_lit.envs.atari``)
            pending.append(fold_end_of_life(rollout.exclude(*ROLLOUT_KEYS_DROPPED, *self.next_state_keys)))
            if len(pending) < self.settings.rollouts_per_batch:
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
            try:
                self.collector.update_policy_weights_(weights)
            except (RuntimeError, *_ray_errors()) as err:
                if self.settings.actors != "ray":
                    raise
                # a Ray actor died (Ray's error, or gloo's "Connection closed by peer" while sending it
                # the weights): the stream restarts the actors before the next batch
                self._send_error = ConnectionError(f"a Ray actor died while weights were sent: {err!r}")

    def close(self) -> None:
        """Shut the workers down (idempotent)."""
        if self.collector is not None:
            if self.settings.actors == "ray":
                self.collector.shutdown()  # stops our actors; a Ray started here goes with them
            else:
                self.collector.shutdown(raise_on_error=False)
            self.collector = None
        if self._weight_sync is not None:
            # Not left to the scheme's ``__del__``: when garbage collection runs it after a
            # failed start, its queue ``put`` starts a feeder thread there and hangs for good.
            self._weight_sync.shutdown()
            self._weight_sync = None
