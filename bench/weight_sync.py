"""Weight-sync cost: ``RolloutStream.update_weights`` (Nature CNN) while 2 x 32 ``ale_vector`` actors run.

python bench/weight_sync.py

Times 30 weight updates, each right after a batch arrives (as the learner sends them), through
TorchRL's shared-memory weight sync including the workers' acknowledgements.
"""

import statistics
import time

from tensordict import TensorDict

from impala_lit import ImpalaModule
from impala_lit.actors import ActorSettings, RolloutStream
from impala_lit.envs import AtariSpec

if __name__ == "__main__":
    spec = AtariSpec("ALE/Pong-v5", backend="ale_vector")
    module = ImpalaModule(observation_shape=(4, 84, 84), num_actions=6, network="shallow")
    settings = ActorSettings(num_workers=2, envs_per_worker=32, unroll_length=20, batch_size=32)
    stream = RolloutStream(spec, module.actor, settings)
    batches = iter(stream)
    for _ in range(3):
        next(batches)
    weights = TensorDict.from_module(module.actor).data
    times = []
    for _ in range(30):
        next(batches)
        start = time.perf_counter()
        stream.update_weights(weights)
        times.append(time.perf_counter() - start)
    batches.close()
    mb = sum(t.numel() * t.element_size() for t in weights.values(True, True)) / 1e6
    print(
        f"weights {mb:.1f} MB; update_weights median {statistics.median(times) * 1e3:.1f} ms, "
        f"max {max(times) * 1e3:.1f} ms over {len(times)} updates"
    )
