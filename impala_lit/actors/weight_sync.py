"""Weight sync from the learner to local actors that a dead actor cannot block."""

from __future__ import annotations

import queue

from torchrl.weight_update import SharedMemWeightSyncScheme


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
