"""Experience replay: whole rollouts from a TorchRL replay buffer mixed into each learner batch.

As in the IMPALA paper's replay experiments (Sec. 5.2.2) and RLlib's ``replay_proportion``:
each fresh batch from the actors goes into a FIFO buffer of recent rollouts, and
``ratio / (1 - ratio)`` times as many older rollouts are drawn from it and appended, so that
``ratio`` of the learner batch is replayed. V-trace corrects for the older behaviour policy
(each frame keeps the ``action_log_prob`` and ``policy_version`` it was acted with).

Prioritized (Schaul et al. 2016, proportional): a rollout's priority is the mean absolute V-trace
error ``|v_s - V(x_s)|`` over its steps, set by the learner after every pass (new rollouts get the
highest priority so far); the importance weights of the sampled rollouts (``beta``) scale their
loss terms through ``sample_weight``. TorchRL's ``PrioritizedSampler`` (behind
``TensorDictPrioritizedReplayBuffer``) cannot be used here: its segment trees live in TorchRL's
C++ extension, which torchrl 0.14.1's wheel fails to load against torch 2.13 (undefined symbol),
so ``ProportionalSampler`` is a TorchRL ``Sampler`` that draws with ``torch.multinomial``: O(N) per
draw, nothing for the few thousand rollouts a buffer holds.

The buffer lives in the learner process and is not saved in checkpoints: a resumed run starts
with an empty one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers import Sampler, Storage


class ProportionalSampler(Sampler):
    """Prioritized sampling with probability ``p_i^alpha / sum_j p_j^alpha`` and importance
    weights ``(N P(i))^-beta`` normalised by their maximum (returned as ``priority_weight``)."""

    def __init__(self, capacity: int, alpha: float = 0.6, beta: float = 0.4, eps: float = 1e-6) -> None:
        self.alpha, self.beta, self.eps = alpha, beta, eps
        self.priority = torch.zeros(capacity, dtype=torch.float64)
        self.max_priority = 1.0

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict]:
        scaled = self.priority[: len(storage)].pow(self.alpha)
        probability = scaled / scaled.sum()
        index = torch.multinomial(probability, batch_size, replacement=True, generator=self._rng)
        weight = (len(storage) * probability[index]).pow(-self.beta)
        return index, {"priority_weight": (weight / weight.max()).float()}

    def extend(self, index: torch.Tensor) -> None:
        self.priority[torch.as_tensor(index).reshape(-1)] = self.max_priority

    def add(self, index: int) -> None:
        self.extend(torch.as_tensor([index]))

    def update_priority(self, index, priority, *, storage: Storage | None = None) -> None:
        priority = torch.as_tensor(priority, dtype=torch.float64).reshape(-1) + self.eps
        self.priority[torch.as_tensor(index).reshape(-1)] = priority
        self.max_priority = max(self.max_priority, float(priority.max()))

    def _empty(self) -> None:
        self.priority.zero_()
        self.max_priority = 1.0

    def state_dict(self) -> dict:
        return {"priority": self.priority.clone(), "max_priority": self.max_priority}

    def load_state_dict(self, state_dict: dict) -> None:
        self.priority.copy_(state_dict["priority"])
        self.max_priority = state_dict["max_priority"]

    def dumps(self, path) -> None:
        torch.save(self.state_dict(), path)

    def loads(self, path) -> None:
        self.load_state_dict(torch.load(path, weights_only=True))


class RolloutReplay:
    """Appends rollouts replayed from a buffer of recent ones to each fresh ``[B, T]`` batch.

    Args:
        ratio: share of each learner batch that is replayed, in [0, 1).
        capacity: rollouts the buffer holds (the oldest go first).
        prioritized: sample by V-trace error instead of uniformly.
        alpha: priority exponent (prioritized only).
        beta: importance-weight exponent (prioritized only; 0 leaves the loss unweighted).
    """

    def __init__(
        self, ratio: float, capacity: int, prioritized: bool = False, alpha: float = 0.6, beta: float = 0.4
    ) -> None:
        self.ratio = ratio
        self.prioritized = prioritized
        sampler = ProportionalSampler(capacity, alpha, beta) if prioritized else None
        self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(capacity), sampler=sampler)

    def replayed_per_batch(self, fresh: int) -> int:
        """Rollouts drawn from the buffer for ``fresh`` new ones."""
        return round(fresh * self.ratio / (1.0 - self.ratio))

    def __len__(self) -> int:
        return len(self.buffer)

    def mix(self, batch: TensorDictBase) -> TensorDictBase:
        """``batch`` (fresh, into the buffer) followed by rollouts replayed from before it.

        Adds a ``replayed`` (bool) entry ``[B, T]``, and with priorities each rollout's buffer
        ``index`` and its importance weight ``sample_weight`` (1 for the fresh ones). Until the
        buffer holds enough rollouts, fewer (or none) are replayed.
        """
        wanted = min(self.replayed_per_batch(batch.shape[0]), len(self.buffer))
        old = self.buffer.sample(wanted) if wanted else None  # drawn before the fresh rollouts go in
        index = self.buffer.extend(batch)
        batch.set("replayed", torch.zeros(batch.shape, dtype=torch.bool))
        if self.prioritized:
            batch.set("index", index.unsqueeze(-1).expand(batch.shape))
            batch.set("sample_weight", torch.ones(batch.shape))
        if old is None:
            return batch
        old.set("replayed", torch.ones(old.shape, dtype=torch.bool))
        if self.prioritized:
            old.set("sample_weight", old.get("priority_weight"))
        return torch.cat([batch, old.select(*batch.keys(True, True))], 0)

    @staticmethod
    def fresh(batch: TensorDictBase) -> torch.Tensor:
        """``[B]``: the rollouts of a mixed ``batch`` that came from the actors, not from the buffer."""
        replayed = batch.get("replayed", None)
        if replayed is None:
            return torch.ones(batch.shape[0], dtype=torch.bool, device=batch.device)
        return ~replayed[:, 0]

    def feedback(self, batch: TensorDictBase, policy_version: int) -> dict[str, float | torch.Tensor]:
        """After V-trace: each rollout's priority from its errors (prioritized); the replay metrics."""
        if self.prioritized and "index" in batch.keys():
            error = (batch["value_target"] - batch["state_value"]).detach().abs().reshape(batch.shape)
            self.buffer.update_priority(batch["index"][:, 0], error.float().mean(-1).cpu())
        replayed = batch.get("replayed")
        behaviour = batch.get("policy_version").float()
        # 0 until the buffer has rollouts (the first step): DDP reduces the same keys on every rank
        lag = policy_version - behaviour[replayed].mean() if replayed.any() else 0.0
        return {"replay/share": replayed.float().mean(), "replay/policy_lag": lag}


class ReplayMixedStream:
    """The actors' batches with replayed rollouts appended (``RolloutReplay.mix``), lazily as the stream."""

    def __init__(self, stream: Iterable[TensorDictBase], replay: RolloutReplay) -> None:
        self.stream = stream
        self.replay = replay

    def __iter__(self) -> Iterator[TensorDictBase]:
        for batch in self.stream:
            yield self.replay.mix(batch)
