"""The environment factory: the paper's Atari protocol, raw scores, end-of-life episodes."""

from __future__ import annotations

import itertools

import gymnasium as gym
import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import check_env_specs

from impala_lit.envs import AtariSpec, GymSpec, check_env_id
from impala_lit.envs.atari import fold_end_of_life


def _wrappers(env: gym.Env):
    while hasattr(env, "env"):
        yield env
        env = env.env


def test_atari_follows_the_paper_protocol() -> None:
    gym_env = AtariSpec("ALE/Pong-v5").make_gym()
    chain = [type(e).__name__ for e in _wrappers(gym_env)]
    assert chain[0] == "FrameStackObservation" and "AtariPreprocessing" in chain
    ale = gym_env.unwrapped
    assert ale._frameskip == 1  # the skipping (and max-pooling) is AtariPreprocessing's
    assert ale.ale.getFloat("repeat_action_probability") == 0.0  # no sticky actions
    preprocessing = next(e for e in _wrappers(gym_env) if type(e).__name__ == "AtariPreprocessing")
    assert preprocessing.frame_skip == 4 and preprocessing.noop_max == 30 and preprocessing.screen_size == (84, 84)
    assert AtariSpec("ALE/Pong-v5").frames_per_step == 4
    assert GymSpec("CartPole-v1").frames_per_step == 1


def test_atari_observations_are_stacked_uint8_frames() -> None:
    env = AtariSpec("ALE/Pong-v5").make_batched(2)
    check_env_specs(env)
    td = env.rollout(5)
    assert td["observation"].shape == (2, 5, 4, 84, 84)
    assert td["observation"].dtype == torch.uint8
    env.close()


def test_rewards_are_clipped_for_learning_but_the_game_score_stays_raw() -> None:
    torch.manual_seed(0)
    env = AtariSpec("ALE/SpaceInvaders-v5").make_batched(1)  # invaders are worth 5-30 points
    env.set_seed(0)
    td = env.rollout(400, break_when_any_done=False)
    rewards = td["next", "reward"]
    assert set(rewards.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert rewards.sum() > 0
    game_return = td["next", "game_return"].squeeze(-1)
    assert game_return.max() > rewards.sum()  # raw points, not clipped ones
    increments = game_return[..., 1:] - game_return[..., :-1]
    assert increments.max() >= 5
    env.close()


def test_unclipped_rewards_when_asked() -> None:
    env = AtariSpec("ALE/SpaceInvaders-v5", clip_rewards=False).make_batched(1)
    env.set_seed(0)
    td = env.rollout(400, break_when_any_done=False)
    assert td["next", "reward"].max() >= 5
    env.close()


@pytest.mark.parametrize("backend", ["gymnasium", "ale_vector"])
def test_end_of_life_episodes_terminate_without_ending_the_game(backend: str) -> None:
    """TorchRL's ``EndOfLifeTransform`` marks a lost life; the actors' stream makes it a termination
    for learning (``fold_end_of_life``), and the game goes on without a reset."""
    env = AtariSpec("ALE/Breakout-v5", episodic_life=True, backend=backend).make_batched(1)
    env.set_seed(0)
    td = fold_end_of_life(env.rollout(3000, break_when_any_done=False))
    assert "end-of-life" not in td["next"].keys() and "lives" not in td.keys()  # folded, then dropped
    assert (td["next", "done"] == td["next", "terminated"] | td["next", "truncated"]).all()
    terminated = td["next", "terminated"].squeeze(-1)
    game_over = td["next", "game_over"]
    assert terminated.sum() > game_over.sum() >= 1  # lives lost before the game ended
    # the game score carries across lives: it only resets after game over
    first_life_end = int(terminated.nonzero()[0, -1])
    assert not game_over[0, first_life_end]
    length = td["next", "game_length"][0]
    assert length[first_life_end + 1] > length[first_life_end] > 1  # no restart at 1 after a life
    env.close()


@pytest.mark.parametrize("backend", ["gymnasium", "ale_vector"])
def test_end_of_life_and_fire_reset_run_in_a_collector(backend: str) -> None:
    """A collector resets its environments more than once and updates its buffers in place."""
    spec = AtariSpec("ALE/Breakout-v5", episodic_life=True, fire_reset=True, frame_stack=1, backend=backend)
    collector = Collector(lambda: spec.make_batched(2), None, frames_per_batch=400)
    collector.reset()  # what each actor process does first
    batches = [batch.clone() for batch in itertools.islice(collector, 2)]
    collector.reset()
    batches.append(next(iter(collector)).clone())
    collector.shutdown()
    assert len(batches) == 3
    assert all(batch["next", "end-of-life"].shape == batch["next", "done"].shape for batch in batches)


def test_cartpole_goes_through_the_same_factory() -> None:
    env = GymSpec("CartPole-v1").make_batched(3)
    check_env_specs(env)
    td = env.rollout(600, break_when_any_done=False)
    assert td["observation"].shape == (3, 600, 4)
    over = td["next", "game_over"]
    assert over.any()
    assert (td["next", "game_return"][over] == td["next", "game_length"][over].float()).all()
    env.close()


@pytest.mark.parametrize(
    ("env_id", "hint"),
    [("ALE/Pongg-v5", "ALE/Pong-v5"), ("CartPol-v1", "CartPole-v1"), ("NoSuchGame", None)],
)
def test_unknown_env_id_is_one_clear_line(env_id: str, hint: str | None) -> None:
    with pytest.raises(ValueError) as err:
        check_env_id(env_id)
    message = str(err.value)
    assert "\n" not in message and "data.env_id" in message and env_id in message
    if hint:
        assert hint in message


def test_the_ale_vector_backend_keeps_the_protocol_and_the_keys() -> None:
    spec = AtariSpec("ALE/SpaceInvaders-v5", backend="ale_vector")
    env = spec.make_batched(2)
    check_env_specs(env)
    reference = AtariSpec("ALE/SpaceInvaders-v5").make_batched(2)
    assert set(env.observation_spec.keys(True)) == set(reference.observation_spec.keys(True))
    env.set_seed(0)
    td = env.rollout(400, break_when_any_done=False)
    assert td["observation"].shape == (2, 400, 4, 84, 84) and td["observation"].dtype == torch.uint8
    frames = td["observation"][0, 50]
    assert not torch.equal(frames[0], frames[-1])  # 4 different frames stacked
    rewards = td["next", "reward"]
    assert set(rewards.unique().tolist()) <= {-1.0, 0.0, 1.0} and rewards.sum() > 0  # clipped for learning
    increments = (td["next", "game_return"][:, 1:] - td["next", "game_return"][:, :-1]).squeeze(-1)
    assert increments.max() >= 5  # the raw score is kept
    assert (td["next", "game_length"][:, :10].squeeze(-1) == torch.arange(1, 11)).all()
    env.close()


def test_ale_vector_games_end_with_game_over_and_the_raw_score() -> None:
    env = AtariSpec("ALE/Pong-v5", backend="ale_vector").make_batched(2)
    env.set_seed(1)
    td = env.rollout(1500, break_when_any_done=False)  # a random Pong player loses 21-0 in ~800-1100 steps
    over = td["next", "game_over"]
    assert (over == td["next", "done"].squeeze(-1)).all() and over.any()
    scores = td["next", "game_return"][over].reshape(-1)
    assert ((scores >= -21) & (scores <= -15)).all()
    after = over.nonzero()[0]
    if after[1] + 1 < td.shape[1]:  # the next game starts from zero
        assert td["next", "game_length"][after[0], after[1] + 1].item() == 1
    env.close()


def test_ale_vector_actors_start_on_the_seeds_torchrl_hands_out(no_stray_workers) -> None:
    """TorchRL seeds collector worker k with a hash up to 2**32; ale-py takes C++ ints only, so
    every ale_vector actor past the second died at start (seen with 14 actors)."""
    from impala_lit import ImpalaModule
    from impala_lit.actors import ActorSettings, RolloutStream

    env = AtariSpec("ALE/Pong-v5", backend="ale_vector").make_batched(2)
    env.set_seed(4_146_711_673)  # > 2**31 - 1
    first = env.reset()["observation"]
    env.set_seed(4_146_711_673)
    assert torch.equal(env.reset()["observation"], first)  # still seeded, deterministically
    env.close()

    learner = ImpalaModule(network="shallow")
    settings = ActorSettings(num_workers=3, envs_per_worker=1, unroll_length=5, batch_size=3)
    stream = RolloutStream(AtariSpec("ALE/Pong-v5", backend="ale_vector"), learner.actor, settings)
    batches = iter(stream)
    assert next(batches).batch_size == (3, 5)
    assert stream.restarts == 0
    batches.close()
