"""Throughput of every stage of the pipeline, on the default Pong setup.

python bench/throughput.py --seconds 30

Frames are emulator frames (agent steps x frame skip). Stages, each measured for ``--seconds``:

- ``env_fps``: the actors' environment backend alone (``EnvSpec.make_batched``, random
  actions), ``num_workers`` processes in parallel;
- ``actor_fps``: the TorchRL collectors running the policy (``RolloutStream``), no learner;
- ``learner_fps``: learner steps (V-trace, loss, backward, RMSProp) on ready batches, in
  fp32 and in ``--precision``;
- ``end_to_end_fps``: a real ``recipes/pong.py fit`` subprocess, read from its MLflow run
  (after a warm-up).

Prints a table, then one JSON line with exactly those four keys, plus ``machine``, ``settings``
and ``details``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensordict import TensorDictBase

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from impala_lit import EnvSpec, ImpalaModule  # noqa: E402
from impala_lit.actors import ActorSettings, RolloutStream  # noqa: E402
from impala_lit.envs import AtariSpec  # noqa: E402
from recipes.atari import PONG  # noqa: E402


def _env_worker(spec: EnvSpec, num_envs: int, seconds: float, queue) -> None:
    torch.set_num_threads(1)
    env = spec.make_batched(num_envs)
    td = env.reset()
    steps, start = 0, None
    while True:
        td["action"] = env.action_spec.rand()
        _, td = env.step_and_maybe_reset(td)
        steps += 1
        if steps == 20:  # after warm-up
            start, counted = time.perf_counter(), steps
        if start is not None and time.perf_counter() - start >= seconds:
            break
    queue.put((steps - counted) * num_envs * spec.frames_per_step / (time.perf_counter() - start))
    env.close()


def env_fps(spec: EnvSpec, workers: int, envs_per_worker: int, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_env_worker, args=(spec, envs_per_worker, seconds, queue)) for _ in range(workers)]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return total


def raw_gym_fps(spec: EnvSpec, seconds: float) -> float:
    """One gymnasium env with the protocol's wrappers, no TorchRL: the per-core ceiling."""
    env = spec.make_gym()
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps * spec.frames_per_step / (time.perf_counter() - start)


def actor_fps(spec: EnvSpec, args, seconds: float) -> tuple[float, TensorDictBase]:
    module = ImpalaModule(observation_shape=(4, 84, 84), num_actions=6, network=args.network)
    settings = ActorSettings(num_workers=args.num_workers, envs_per_worker=args.envs_per_worker,
                             unroll_length=args.unroll_length, batch_size=args.batch_size,
                             actor_device=args.actor_device, actor_precision=args.actor_precision)  # fmt: skip
    stream = RolloutStream(spec, module.actor, settings)
    batches = iter(stream)
    batch = next(batches)  # the workers are up
    for _ in range(2):
        batch = next(batches)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(batches)
        frames += batch.numel() * spec.frames_per_step
    fps = frames / (time.perf_counter() - start)
    batches.close()
    return fps, batch


def learner_fps(batch: TensorDictBase, args, precision: str, seconds: float) -> float:
    """Learner steps on one ready batch; on a GPU each step copies the batch there, as ``fit`` does."""
    device = torch.device(args.device)
    module = ImpalaModule(observation_shape=(4, 84, 84), num_actions=6, network=args.network).to(device)
    optimizer = torch.optim.RMSprop(module.parameters(), lr=6e-4, alpha=0.99, eps=0.01)
    bf16 = precision.startswith("bf16")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            td = module.compute_advantages(batch.to(device) if device.type != "cpu" else batch.clone())
            loss = module.loss(td)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 40.0)
        optimizer.step()

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    sync()
    return steps * batch.numel() * 4 / (time.perf_counter() - start)


def end_to_end_fps(
    args,
    seconds: float,
    warmup: float = 20.0,
    extra: list[str] = (),
    env: dict | None = None,
    recipe: str = "pong",
) -> tuple[float, dict]:
    """Frames/s of ``recipes/<recipe>.py fit`` (``extra`` arguments appended), read from its MLflow run.

    ``args`` (this script's settings) are passed explicitly; ``None`` runs the recipe's own defaults.
    """
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        total = int(seconds + warmup)
        settings = [] if args is None else [
            f"--trainer.precision={args.precision}",
            f"--trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            f"--data.num_workers={args.num_workers}", f"--data.envs_per_worker={args.envs_per_worker}",
            f"--data.batch_size={args.batch_size}", f"--data.unroll_length={args.unroll_length}",
            f"--model.network={args.network}", f"--data.backend={args.backend}",
            f"--data.actor_device={args.actor_device}", f"--data.actor_precision={args.actor_precision}",
        ]  # fmt: skip
        command = [
            sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), "fit",
            f"--trainer.max_time=00:00:{total // 60:02d}:{total % 60:02d}",
            "--trainer.log_every_n_steps=5", "--eval.every_n_steps=0", f"--checkpoint.dirpath={tmp}/ckpt",
            f"--trainer.logger.init_args.artifact_location={tmp}/artifacts", "--trainer.enable_progress_bar=false",
            *settings,
            *extra,
        ]  # fmt: skip
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri, **(env or {}))
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=total + 300)
        if proc.returncode != 0:
            raise RuntimeError(f"fit failed: {proc.stderr[-2000:]}")
        client = mlflow.MlflowClient(uri)
        (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        frames = sorted(client.get_metric_history(run.info.run_id, "frames"), key=lambda m: m.step)
        lag = [m.value for m in client.get_metric_history(run.info.run_id, "policy_lag")]
        wait = sorted(client.get_metric_history(run.info.run_id, "time/data_wait_frac"), key=lambda m: m.step)
    t0 = frames[0].timestamp / 1000
    steady = [m for m in frames if m.timestamp / 1000 - t0 >= warmup]
    if len(steady) < 2:
        steady = frames
    fps = (steady[-1].value - steady[0].value) / ((steady[-1].timestamp - steady[0].timestamp) / 1000)
    steady_wait = [m.value for m in wait if m.timestamp / 1000 - t0 >= warmup] or [m.value for m in wait]
    return fps, {
        "policy_lag_mean": sum(lag) / max(len(lag), 1),
        "frames_total": frames[-1].value,
        # share of the learner's time spent waiting for batches (0: it never waits)
        "learner_data_wait_frac": sum(steady_wait) / max(len(steady_wait), 1),
    }


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time per stage")
    parser.add_argument("--num-workers", dest="num_workers", type=int, default=2)
    parser.add_argument("--envs-per-worker", dest="envs_per_worker", type=int, default=32)  # the Pong recipe's
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    parser.add_argument("--unroll-length", dest="unroll_length", type=int, default=20)
    parser.add_argument("--network", default="shallow")
    parser.add_argument("--backend", default="ale_vector", choices=["gymnasium", "ale_vector"])
    parser.add_argument("--precision", default=PONG["trainer.precision"], help="learner precision (end to end)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the learner runs")
    parser.add_argument("--actor-device", dest="actor_device", default="cpu", choices=["cpu", "cuda"],
                        help="where the actors run the policy (data.actor_device)")  # fmt: skip
    parser.add_argument("--actor-precision", dest="actor_precision", default=PONG["data.actor_precision"],
                        choices=["32-true", "bf16-mixed"], help="data.actor_precision")  # fmt: skip
    args = parser.parse_args()
    spec = AtariSpec("ALE/Pong-v5", backend=args.backend)
    s = args.seconds

    def progress(name: str, value: float) -> float:  # each stage as it finishes: a cut-off run keeps them
        print(f"[stage] {name}: {value:,.0f} frames/s", flush=True)
        return value

    details = {"raw_gym_fps_1core": progress("raw_gym_fps_1core", raw_gym_fps(AtariSpec("ALE/Pong-v5"), min(s, 10.0)))}
    results = {"env_fps": progress("env_fps", env_fps(spec, args.num_workers, args.envs_per_worker, s))}
    results["actor_fps"], batch = actor_fps(spec, args, s)
    progress("actor_fps", results["actor_fps"])
    details["learner_fps_fp32"] = progress("learner_fps_fp32", learner_fps(batch, args, "32-true", s))
    details["learner_fps_bf16"] = progress("learner_fps_bf16", learner_fps(batch, args, "bf16-mixed", s))
    details["learner_threads"] = torch.get_num_threads()
    results["learner_fps"] = details["learner_fps_bf16" if args.precision.startswith("bf16") else "learner_fps_fp32"]
    results["end_to_end_fps"], e2e = end_to_end_fps(args, s)
    details.update(e2e)
    details["end_to_end_over_min_actor_learner"] = results["end_to_end_fps"] / min(
        results["actor_fps"], results["learner_fps"]
    )

    print(f"{'stage':<28}{'frames/s':>12}")
    for key, value in {**results, **{k: v for k, v in details.items() if k.endswith("fps") or "fps_" in k}}.items():
        print(f"{key:<28}{value:>12,.0f}")
    print(f"{'e2e / min(actor, learner)':<28}{details['end_to_end_over_min_actor_learner']:>12.2f}")
    names = ("num_workers", "envs_per_worker", "batch_size", "unroll_length", "network", "precision", "seconds",
             "backend", "device", "actor_device", "actor_precision")  # fmt: skip
    settings = {k: getattr(args, k) for k in names}
    settings["env"] = "ALE/Pong-v5, paper protocol (skip 4 + max-pool, 84x84 grey, 4-frame stack, no sticky actions)"
    rounded = {k: round(v, 1) for k, v in results.items()}
    print(
        json.dumps(
            {
                **rounded,
                "machine": machine(),
                "settings": settings,
                "details": {k: round(v, 3) if isinstance(v, float) else v for k, v in details.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
