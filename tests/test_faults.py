"""Faults with real processes: signals, non-finite losses, a crash while a checkpoint is written."""

from __future__ import annotations

import signal
import subprocess
import time

import mlflow
import psutil
import pytest
import torch

from .conftest import run_recipe, start_recipe, wait_for

pytestmark = pytest.mark.slow  # real processes killed, signalled and restarted


def _first_run(tmp_path):
    db = tmp_path / "mlflow.db"
    if not db.exists():
        return None, None
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("cartpole")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return client, (runs[0] if runs else None)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly_with_a_checkpoint(tmp_path, signum, no_stray_workers) -> None:
    args = ["fit", "--trainer.max_steps=100000", "--trainer.log_every_n_steps=1", "--checkpoint.every_n_train_steps=3"]
    proc = start_recipe("cartpole", args, tmp_path, stdout=True)
    # a checkpoint exists: training is under way (and the MLflow store is set up; polling it earlier races)
    wait_for((tmp_path / "checkpoints" / "last.ckpt").exists, 240, "training to be under way", proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    # the end-of-run summary says why it stopped, where the checkpoint is and how to resume
    name = signal.Signals(signum).name
    assert f"training ended by {name} (the run can be resumed)" in stdout, stdout[-3000:]
    assert f"checkpoint  {tmp_path / 'checkpoints' / 'last.ckpt'}" in stdout
    assert "MLflow run  " in stdout and "--ckpt_path " in stdout.splitlines()[-1]

    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    client, run = _first_run(tmp_path)
    assert run.info.status == "KILLED"
    logged = max(m.step for m in client.get_metric_history(run.info.run_id, "frames"))
    assert last["global_step"] >= logged + 1  # the checkpoint holds every update that was logged
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "actor processes outlived the signal"


def test_a_second_ctrl_c_exits_at_once(tmp_path, no_stray_workers) -> None:
    args = ["fit", "--trainer.max_steps=100000", "--checkpoint.every_n_train_steps=1", "--model=tests.faulty.SlowSteps"]
    proc = start_recipe("cartpole", args, tmp_path)
    # after the first step's checkpoint, the next step sleeps 5 s: the signals land in it
    wait_for((tmp_path / "checkpoints" / "last.ckpt").exists, 240, "the first learner step", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    start = time.time()
    proc.communicate(timeout=60)
    assert time.time() - start < 5 and proc.returncode == 130


def _weights_finite(path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_losses_are_skipped_and_counted_until_too_many_in_a_row_stop_the_run(tmp_path, no_stray_workers):
    """Steps 3 and 4 are skipped and training goes on; 10, 11 and 12 in a row stop it, keeping good weights."""
    args = ["fit", "--trainer.max_steps=50", "--trainer.log_every_n_steps=1", "--checkpoint.every_n_train_steps=2",
            "--model=tests.faulty.NaNLoss", "--model.max_nonfinite_updates=3"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path, env={"IMPALA_LIT_NAN_STEPS": "3,4,10-"})
    assert run.returncode == 3, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "3 updates in a row had a non-finite loss" in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    last = torch.load(run.checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] >= 8 and _weights_finite(run.checkpoints / "last.ckpt")
    assert last["impala"]["skipped_updates"] >= 4  # 3, 4, 10, 11 (and 12): the counter is checkpointed
    client = run.client()
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("cartpole").experiment_id])
    skipped = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, "faults/skipped_updates")}
    assert skipped[5] == 2 and skipped[9] == 2  # two skipped, and training went on
    assert mlflow_run.info.status == "FAILED"


def test_a_killed_actor_is_restarted_and_counted(tmp_path, no_stray_workers) -> None:
    args = ["fit", "--trainer.max_steps=60", "--trainer.log_every_n_steps=1", "--checkpoint.every_n_train_steps=5"]
    proc = start_recipe("cartpole", args, tmp_path)
    wait_for((tmp_path / "checkpoints" / "last.ckpt").exists, 240, "training to be under way", proc)
    actors = [p for p in psutil.Process(proc.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert len(actors) == 2
    actors[0].kill()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "restarting the actors (1 restarts so far)" in stderr
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 60
    client, run = _first_run(tmp_path)
    restarts = client.get_metric_history(run.info.run_id, "faults/actor_restarts")
    assert max(m.value for m in restarts) == 1 and run.info.status == "FINISHED"


@pytest.mark.xdist_group("ray")
def test_a_killed_ray_actor_is_restarted_and_sigterm_still_stops_cleanly(tmp_path, no_stray_workers) -> None:
    """Ray actors: a killed one is restarted and counted (its death may surface while weights are sent
    to it); SIGTERM still ends the run cleanly, though ray.init installs a handler of its own."""
    args = ["fit", "--data.actors=ray", "--trainer.max_steps=100000", "--trainer.log_every_n_steps=1",
            "--checkpoint.every_n_train_steps=3"]  # fmt: skip
    proc = start_recipe("cartpole", args, tmp_path, stdout=True)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    wait_for(checkpoint.exists, 240, "training to be under way", proc)

    def ray_actors() -> set[int]:
        found = set()
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            if cmdline.startswith("ray::") and "Collector" in cmdline:
                found.add(child.pid)
        return found

    wait_for(lambda: len(ray_actors()) == 2, 60, "two Ray actors", proc)
    first = ray_actors()
    psutil.Process(min(first)).kill()
    wait_for(lambda: len(ray_actors() - first) == 2, 120, "two new Ray actors", proc)

    def step() -> int:
        return torch.load(checkpoint, weights_only=True)["global_step"]

    restarted_at = step()
    wait_for(lambda: step() > restarted_at + 3, 120, "training to go on", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "restarting the actors (1 restarts so far)" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert "training ended by SIGTERM (the run can be resumed)" in stdout
    client, run = _first_run(tmp_path)
    restarts = client.get_metric_history(run.info.run_id, "faults/actor_restarts")
    assert max(m.value for m in restarts) == 1 and run.info.status == "KILLED"


def test_an_environment_that_raises_restarts_the_actors_then_stops_in_one_line(tmp_path, no_stray_workers) -> None:
    """A user's env raising mid-run: the actors restart (the warning names the env and its error); with
    no restarts left the run stops in one line naming them, and what was learned is in last.ckpt."""
    env_id = "tests.faulty:RaisingCartPole-v0"
    common = ["fit", f"--data.env_id={env_id}", "--eval.every_n_steps=0", "--trainer.log_every_n_steps=1"]
    # each actor process raises after 3 rollouts (2 envs x 20 steps x 3); a batch is one rollout
    env = {"IMPALA_LIT_FAIL_AFTER": "120"}
    settings = ["--data.envs_per_worker=2", "--data.batch_size=2"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    survived = run_recipe("cartpole", [*common, *settings, "--trainer.max_steps=12"], tmp_path / "a", env=env)
    assert survived.returncode == 0, survived.stderr[-3000:]
    assert f"restarting the actors (1 restarts so far): {env_id} raised RuntimeError: the simulator lost" in (
        survived.stderr
    )
    stopped = run_recipe("cartpole", [*common, *settings, "--trainer.max_steps=1000", "--data.max_actor_restarts=0"],
                         tmp_path / "b", env=env)  # fmt: skip
    assert stopped.returncode == 4, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stopped.stderr[-3000:]
    assert f"last: {env_id} raised RuntimeError: the simulator lost its licence server" in errors[0]
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] >= 2  # the steps trained before the actors died


def test_a_full_disk_stops_the_run_in_one_line_keeping_the_previous_checkpoint(tmp_path, no_stray_workers) -> None:
    """The checkpoint folder on a 2 MB tmpfs, filled up once the first checkpoint is written."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs a tmpfs mount (root): {mounted.stderr.decode().strip()}")
    try:
        args = ["fit", "--trainer.max_steps=100000", "--checkpoint.every_n_train_steps=5", "--eval.every_n_steps=0"]
        proc = start_recipe("cartpole", args, tmp_path)
        wait_for((folder / "last.ckpt").exists, 240, "the first checkpoint", proc)
        with open(folder / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):  # the disk fills up
            while True:
                filler.write(b"\0" * 65536)
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 5, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if "error:" in line]
        assert len(errors) == 1, stderr[-3000:]
        assert "no space left on the device); the checkpoints written before are intact" in errors[0]
        (folder / "filler").unlink()
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] >= 5
        assert not list(folder.glob(".*partial*"))
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_weights_sent_while_an_actor_is_dead_do_not_block_the_learner(no_stray_workers) -> None:
    import threading

    from tensordict import TensorDict

    from impala_lit import ImpalaModule
    from impala_lit.actors import ActorSettings, RolloutStream
    from impala_lit.envs import GymSpec

    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp")
    settings = ActorSettings(num_workers=2, envs_per_worker=2, unroll_length=10, batch_size=2)
    stream = RolloutStream(GymSpec("CartPole-v1"), learner.actor, settings)
    batches = iter(stream)
    next(batches)
    psutil.Process(stream.collector.procs[0].pid).kill()  # not reaped here: multiprocessing must see it die
    wait_for(lambda: not stream.collector.procs[0].is_alive(), 10, "the actor to die")
    weights = TensorDict.from_module(learner.actor).data
    sender = threading.Thread(target=stream.update_weights, args=(weights,), daemon=True)
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive(), "update_weights blocked on a dead actor"  # TorchRL's default scheme hangs here
    batch = next(batches)  # the stream restarts the actors
    assert stream.restarts == 1 and batch.batch_size == (2, 10)
    assert (batch["policy_version"] >= 1).all()  # the restarted actors start from the weights just sent
    batches.close()


def test_restarted_recurrent_actors_start_their_games_and_states_from_zero(no_stray_workers) -> None:
    """An LSTM policy's actors carry their state from one rollout to the next; actors restarted after one
    died start from the latest weights, and new games from a zero state, not from a state of the games
    that were cut off."""
    from tensordict import TensorDict

    from impala_lit import ImpalaModule
    from impala_lit.actors import ActorSettings, RolloutStream
    from impala_lit.agent.recurrent import state_keys
    from impala_lit.envs import GymSpec

    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp", core="lstm", core_size=16)
    keys = state_keys(learner.actor)
    settings = ActorSettings(num_workers=2, envs_per_worker=4, unroll_length=8, batch_size=4)  # a rollout a batch
    stream = RolloutStream(GymSpec("CartPole-v1"), learner.actor, settings)
    batches = iter(stream)

    def first_step(batch):
        return batch["is_init"][:, 0].squeeze(-1), [batch[key][:, 0].flatten(1) for key in keys]

    carried = False
    for _ in range(20):  # until a rollout goes on with games under way: their state is carried, not zero
        is_init, states = first_step(next(batches))
        if (~is_init).any():
            carried = all(state[~is_init].abs().sum(-1).gt(0).all() for state in states)
            break
    assert carried, "no rollout continued a game with its carried state"
    stream.update_weights(TensorDict.from_module(learner.actor).data)  # restarted actors start from these
    psutil.Process(stream.collector.procs[0].pid).kill()
    wait_for(lambda: not stream.collector.procs[0].is_alive(), 10, "the actor to die")
    for _ in range(5):  # the live actor's rollouts in flight may come first; then the stream restarts the actors
        batch = next(batches)
        if stream.restarts:
            break
    assert stream.restarts == 1 and (batch["policy_version"] >= 1).all()
    is_init, states = first_step(batch)
    assert is_init.all(), "a restarted actor's first rollout does not start new games"
    assert all(state.abs().sum() == 0 for state in states), "a restarted actor's state is not zero"
    batches.close()


@pytest.mark.parametrize(
    ("env_class", "error", "restarts"),
    [("EnvFailsInActors", "cannot start in an actor", 0), ("EnvFailsOnSeed", "failed 2 times in a row", 2)],
)
def test_actors_that_fail_while_starting_raise_instead_of_hanging(env_class, error, restarts, no_stray_workers) -> None:
    """An environment that raises as the collector builds it fails at once with its own error; one
    whose actor dies while being seeded is restarted, then given up on. Both used to hang the learner
    (the 3rd of 14 ale_vector actors died on a seed over 2**31)."""
    import threading

    from impala_lit import ImpalaModule
    from impala_lit.actors import ActorSettings, RolloutStream

    from . import faulty

    learner = ImpalaModule(observation_shape=(4,), num_actions=2, network="mlp")
    settings = ActorSettings(num_workers=2, envs_per_worker=2, unroll_length=5, batch_size=2, max_restarts=1)
    stream = RolloutStream(getattr(faulty, env_class)("CartPole-v1"), learner.actor, settings)
    raised: list[BaseException] = []

    def first_batch() -> None:
        try:
            next(iter(stream))
        except Exception as err:  # noqa: BLE001 - handed to the test thread
            raised.append(err)

    starter = threading.Thread(target=first_batch, daemon=True)
    starter.start()
    starter.join(timeout=120)
    assert not starter.is_alive(), "the learner hung on actors that failed to start"
    assert raised and error in str(raised[0]), raised
    assert stream.restarts == restarts and stream.collector is None


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, no_stray_workers) -> None:
    args = ["fit", "--trainer.max_steps=20", "--checkpoint.every_n_train_steps=2",
            "--model=tests.faulty.DiesWhileSavingStep4"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path, env={"IMPALA_LIT_DIE_SAVING": "1"})
    assert run.returncode == 9, run.stderr[-3000:]
    last = torch.load(run.checkpoints / "last.ckpt", weights_only=True)  # complete, not half written
    assert last["global_step"] == 2
    assert not list(run.checkpoints.glob("step4-*"))  # the step-4 file was never put in place
    resumed = run_recipe("cartpole", ["fit", "--trainer.max_steps=6", "--ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run.checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6
