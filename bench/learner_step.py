"""Learner step time on ready batches, fp32 vs bf16 autocast, in one process.

    python bench/learner_step.py [--threads 1] [--network shallow] [--steps 8] [--compile] [--channels-last]
    python bench/learner_step.py --procgen --network deep      # 64x64 RGB, 15 actions, no frame skip

``--compile`` adds rows with the torso (the network's convolutions and dense layer, nearly all
of the step's work) under ``torch.compile`` (inductor), timed after its compilation.
``--channels-last`` adds rows with the convolution weights in channels-last (NHWC) memory
format (the convolutions then compute in NHWC), which oneDNN's CPU kernels may prefer.

Frames are emulator frames (batch x unroll x frame skip: 4 for Atari, 1 with ``--procgen``).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from tensordict import TensorDict

from impala_lit import ImpalaModule


def fake_batch(batch_size: int, unroll: int, num_actions: int, obs_shape: tuple[int, ...]) -> TensorDict:
    pixels = (batch_size, unroll, *obs_shape)
    flags = torch.zeros(batch_size, unroll, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": torch.randint(0, 256, pixels, dtype=torch.uint8),
            "action": torch.randint(0, num_actions, (batch_size, unroll)),
            "action_log_prob": torch.full((batch_size, unroll), -1.79),
            "policy_version": torch.zeros(batch_size, unroll, dtype=torch.int64),
            "next": {
                "observation": torch.randint(0, 256, pixels, dtype=torch.uint8),
                "reward": torch.randn(batch_size, unroll, 1),
                "done": flags,
                "terminated": flags,
            },
        },
        batch_size=[batch_size, unroll],
    )


def time_steps(module: ImpalaModule, batch: TensorDict, steps: int, bf16: bool) -> float:
    optimizer = torch.optim.RMSprop(module.parameters(), lr=6e-4, alpha=0.99, eps=0.01)
    elapsed = 0.0
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(module.compute_advantages(batch.clone(False)))["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 40.0)
        optimizer.step()
        if i >= 2:
            elapsed += time.perf_counter() - start
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the learner gets cores - workers)")
    parser.add_argument("--network", default="shallow", choices=["shallow", "deep"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--unroll", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--procgen", action="store_true", help="Procgen's 3x64x64 frames and 15 actions")
    extra = parser.add_mutually_exclusive_group()
    extra.add_argument("--compile", action="store_true", help="also time the torso under torch.compile")
    extra.add_argument("--channels-last", action="store_true", help="also time with channels-last conv weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs_shape, num_actions, skip = ((3, 64, 64), 15, 1) if args.procgen else ((4, 84, 84), 6, 4)
    module = ImpalaModule(observation_shape=obs_shape, num_actions=num_actions, network=args.network)
    batch = fake_batch(args.batch_size, args.unroll, num_actions, obs_shape)
    frames = args.batch_size * args.unroll * skip
    result = {"threads": args.threads, "network": args.network, "observation_shape": obs_shape}
    runs = [("fp32", False), ("bf16", True)]
    if args.channels_last:
        runs += [("fp32_channels_last", False), ("bf16_channels_last", True)]
    if args.compile:
        runs += [("fp32_compiled", False), ("bf16_compiled", True)]
    for name, bf16 in runs:
        if name == "fp32_channels_last":
            module = module.to(memory_format=torch.channels_last)  # 4-d conv weights only
        if name == "fp32_compiled":
            torso = module.actor_critic.module[0]  # the TensorDictModule around the torso
            torso.module = torch.compile(torso.module)
            start = time.perf_counter()
            time_steps(module, batch, 1, bf16)  # compiles (warm-up steps included)
            result["compile_s"] = round(time.perf_counter() - start, 1)
        seconds = time_steps(module, batch, args.steps, bf16)
        result[f"{name}_step_s"] = round(seconds, 4)
        result[f"{name}_fps"] = round(frames / seconds)
        print(f"{name:18s} {seconds * 1000:8.1f} ms/step  {frames / seconds:9.0f} frames/s")
    result["bf16_speedup"] = round(result["fp32_step_s"] / result["bf16_step_s"], 2)
    print(f"bf16-mixed speedup: {result['bf16_speedup']}x")
    if args.channels_last:
        for name in ("fp32", "bf16"):
            result[f"{name}_channels_last_speedup"] = round(
                result[f"{name}_step_s"] / result[f"{name}_channels_last_step_s"], 2
            )
        print(f"channels-last speedup: fp32 {result['fp32_channels_last_speedup']}x, "
              f"bf16 {result['bf16_channels_last_speedup']}x")  # fmt: skip
    if args.compile:
        for name in ("fp32", "bf16"):
            result[f"{name}_compile_speedup"] = round(result[f"{name}_step_s"] / result[f"{name}_compiled_step_s"], 2)
        print(f"torch.compile speedup: fp32 {result['fp32_compile_speedup']}x, bf16 {result['bf16_compile_speedup']}x"
              f" (compiling took {result['compile_s']} s)")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
