"""Beyond one learner process and beyond local actors: Lightning DDP learners, Ray actors."""

from __future__ import annotations

import pytest
import torch

from impala_lit.testing import local_ray_cluster

from .conftest import run_recipe

pytestmark = pytest.mark.slow  # two DDP learners, a two-node Ray cluster

STEPS, BATCH, UNROLL = 30, 32, 20  # cartpole recipe: batch 32 x 20, frame skip 1


def test_two_ddp_learners_stay_identical_and_count_both_frame_streams(tmp_path, no_stray_workers) -> None:
    probe = tmp_path / "probe"
    # with replay (each learner its own buffer): replayed rollouts are not counted as frames; with an
    # LSTM core (the recurrent path is the one with more to synchronise: states in rollouts, replay)
    args = ["fit", "--model=tests.probes.RecordsRanks", "--trainer.accelerator=cpu", "--trainer.devices=2",
            "--trainer.strategy=ddp", f"--trainer.max_steps={STEPS}", "--trainer.log_every_n_steps=1",
            "--data.num_workers=2", "--eval.every_n_steps=0", "--data.replay_ratio=0.5",
            "--model.core=lstm", "--model.core_size=16"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path, timeout=400, env={"IMPALA_LIT_PROBE": str(probe)})
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(f"{probe}.rank{r}", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["num_workers"] for r in ranks] == [1, 1]  # each learner feeds from its own share of the actors
    assert (ranks[0]["weights"] == ranks[1]["weights"]).all()  # gradients all-reduced: one set of weights
    assert not (ranks[0]["weights"] == torch.zeros_like(ranks[0]["weights"])).all()
    for rank in ranks:  # every actor got the final weights, stamped with the same version
        assert (rank["actor_weights"] == rank["learner_actor_weights"]).all()
        assert rank["policy_version"] == STEPS
    frames = STEPS * BATCH * UNROLL * 2
    assert ranks[0]["frames"] == ranks[1]["frames"] == frames  # the counter counts both learners' batches

    client, mlflow_run = run.client(), run.only_run("cartpole")  # one run: rank 0 logs
    logged = client.get_metric_history(mlflow_run.info.run_id, "frames")
    assert max(m.value for m in logged) == frames
    share = client.get_metric_history(mlflow_run.info.run_id, "replay/share")
    assert max(m.value for m in share) == 0.5
    assert torch.load(run.checkpoints / "last.ckpt", weights_only=True)["impala"]["frames"] == frames


@pytest.fixture
def ray_cluster():
    """A real two-node Ray cluster on 127.0.0.1 (a head and one worker node, 1 CPU each)."""
    with local_ray_cluster(nodes=2, cpus_per_node=1) as cluster:
        yield cluster


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
def test_ray_actors_on_a_two_node_cluster_train_cartpole_to_450(tmp_path, ray_cluster, no_stray_workers) -> None:
    # two actors of 1 CPU on two 1-CPU nodes: one on each node (the run would wait forever otherwise); the
    # recipe's IMPALA default, whose 450 has the widest margin in 500k frames (docs/benchmarks/cartpole.md)
    args = ["fit", "--data.actors=ray", f"--data.ray_address={ray_cluster.address}",
            "--data.num_workers=2", "--eval.every_n_steps=0",
            "--trainer.callbacks+=impala_lit.StopAtReturn", "--trainer.callbacks.threshold=450"]  # fmt: skip
    run = run_recipe("cartpole", args, tmp_path, timeout=900, env=ray_cluster.env)
    assert run.returncode == 0, run.stderr[-3000:]
    reached = run.return_reached("cartpole", 450, "Ray actors, CartPole")
    assert reached.frames is not None, f"no mean return >= 450 within the budget: {reached}"
    assert reached.max_frames <= 500_000 + 32 * 20
    client, mlflow_run = run.client(), run.only_run("cartpole")
    lag = client.get_metric_history(mlflow_run.info.run_id, "policy_lag")
    assert 0 < max(m.value for m in lag) < 10  # the Ray actors' rollouts carry policy versions
