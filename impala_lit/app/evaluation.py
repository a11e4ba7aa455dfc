"""Evaluation games: the raw game score of the current policy, and a GIF of one game.

``EvaluationCallback`` plays them every ``every_n_steps`` learner steps during ``fit`` (in
the learner process, on a CPU copy of the policy; the actors keep collecting meanwhile)
and when ``test``/``validate`` runs. Games use fresh environments under the training
protocol, but always end with the game (no end-of-life episodes) and score unclipped rewards.
Procgen games are scored on levels never trained on (``eval/*``, the benchmark's test score)
and on the training levels (``eval_train/*``); ``eval/generalization_gap`` is the difference.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from tensordict import TensorDict
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from impala_lit.agent.recurrent import carry_state, env_transforms, reset_state
from impala_lit.envs import EnvSpec
from impala_lit.learning.source import RolloutSource
from impala_lit.settings import NonNegativeInt, PositiveInt

VIDEO_MAX_PIXELS = 120_000  # frames larger than this (CartPole's 400x600) are downscaled


@dataclasses.dataclass
class GameResults:
    """Raw scores and lengths (agent steps) of the games played, and the frames of the recorded one."""

    returns: list[float]
    lengths: list[int]
    frames: list[np.ndarray]
    fps: float

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        returns = np.asarray(self.returns, dtype=np.float64)
        return {
            f"{prefix}/return_mean": float(returns.mean()),
            f"{prefix}/return_std": float(returns.std()),
            f"{prefix}/return_min": float(returns.min()),
            f"{prefix}/return_max": float(returns.max()),
            f"{prefix}/length_mean": float(np.mean(self.lengths)),
            f"{prefix}/games": float(len(returns)),
        }

    def gif(self) -> bytes:
        """The recorded game as an animated GIF (MLflow's artifact view plays it)."""
        import imageio.v3 as iio

        frames = np.stack(self.frames)
        buffer = io.BytesIO()
        iio.imwrite(buffer, frames, extension=".gif", duration=1000.0 / self.fps, loop=0)
        return buffer.getvalue()


def _small(frame: np.ndarray) -> np.ndarray:
    """Downscale (by striding) frames above ``VIDEO_MAX_PIXELS`` as they are recorded."""
    step = max(1, math.ceil(math.sqrt(frame.shape[0] * frame.shape[1] / VIDEO_MAX_PIXELS)))
    return np.ascontiguousarray(frame[::step, ::step])


def play_games(
    env: EnvSpec,
    policy: TensorDictModuleBase,
    episodes: int,
    *,
    greedy: bool = False,
    seed: int = 0,
    record: bool = False,
    max_video_frames: int = 1000,
) -> GameResults:
    """Play ``episodes`` whole games with ``policy``; with ``record``, also the first ``max_video_frames``
    agent steps of one more game, for the GIF only (not scored).

    The scored games are played at once, one per environment of the training backend's batched
    env (``ale_vector`` for Pong), with one policy call per step for all of them. The recorded
    game renders RGB frames, so it is played alone, and it stops with its last recorded frame:
    played to the end alone it cost 10-20 s per evaluation late in Pong, the learner paused
    meanwhile (docs/benchmarks/throughput.md).
    """
    policy = copy.deepcopy(policy).cpu().float().eval()
    mode = ExplorationType.DETERMINISTIC if greedy else ExplorationType.RANDOM
    frames: list[np.ndarray] = []
    fps = env.video_fps or 30.0
    with torch.no_grad(), set_exploration_type(mode):
        if record:
            frames, fps = _record_game(env, policy, seed, max_video_frames)
        returns, lengths = _play_batched(env, policy, episodes, seed)
    return GameResults(returns, lengths, frames, fps)


def _record_game(
    spec: EnvSpec, policy: TensorDictModuleBase, seed: int, max_video_frames: int
) -> tuple[list[np.ndarray], float]:
    """Up to ``max_video_frames`` frames of one game in a gymnasium env that renders RGB; and their frame rate."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (CartPole's renderer) needs no screen
    game = spec.make_gym(render_mode="rgb_array")
    fps = spec.video_fps or float(game.metadata.get("render_fps", 30))
    frames: list[np.ndarray] = []
    state = reset_state(policy, 1)  # a recurrent policy carries its state through the game
    try:
        obs, _ = game.reset(seed=seed)
        frames.append(_small(game.render()))
        while len(frames) < max_video_frames:
            td = TensorDict(observation=torch.as_tensor(np.asarray(obs)).unsqueeze(0), batch_size=[1])
            if state is not None:
                td.update(state)
            out = policy(td)
            if state is not None:
                state = carry_state(out, policy)
            obs, _, terminated, truncated, _ = game.step(int(out["action"].item()))
            frames.append(_small(game.render()))
            if terminated or truncated:
                break
        return frames, fps
    finally:
        game.close()


def _play_batched(spec: EnvSpec, policy: TensorDictModuleBase, games: int, seed: int) -> tuple[list, list]:
    """``games`` games at once, one per environment of a batched env (seeds ``seed, seed + 1...``);
    an environment whose game is over plays on until the last one ends, unscored."""
    env = spec.make_batched(games)
    for transform in env_transforms(policy):  # a recurrent policy's state, carried by the env
        env.append_transform(transform)
    returns: list[float | None] = [None] * games
    lengths: list[int | None] = [None] * games
    try:
        env.set_seed(seed)
        td = env.reset()
        while any(r is None for r in returns):
            td, next_td = env.step_and_maybe_reset(policy(td))
            over = td.get(("next", "game_over")).reshape(-1)
            if over.any():
                scores = td.get(("next", "game_return")).reshape(-1)
                steps = td.get(("next", "game_length")).reshape(-1)
                for i in over.nonzero().reshape(-1).tolist():
                    if returns[i] is None:
                        returns[i], lengths[i] = float(scores[i]), int(steps[i])
            td = next_td
    finally:
        env.close()
    return returns, lengths


class EvaluationCallback(Callback):
    """Plays evaluation games during ``fit`` and for ``test``/``validate``; logs ``eval/*`` and a GIF.

    Args:
        every_n_steps: during ``fit``, evaluate every this many learner steps (0: never).
        episodes: games per evaluation.
        greedy: play the most likely action instead of sampling from the policy.
        video: record one more game (not scored), up to ``max_video_frames`` agent steps, and log
            it as ``videos/step<N>.gif`` in the MLflow run.
        max_video_frames: agent steps recorded at most.
        seed: seed of the first evaluation game (game i uses seed + i).
    """

    def __init__(
        self,
        every_n_steps: NonNegativeInt = 0,
        episodes: PositiveInt = 10,
        greedy: bool = False,
        video: bool = True,
        max_video_frames: int = 1000,
        seed: int = 1_000_000,
    ):
        self.every_n_steps = every_n_steps
        self.episodes = episodes
        self.greedy = greedy
        self.video = video
        self.max_video_frames = max_video_frames
        self.seed = seed

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Play the games in each of the environment's evaluation sets, upload the GIF of the first;
        returns the ``eval/*`` metrics (and ``eval_train/*`` for Procgen's training levels)."""
        source = trainer.datamodule
        if not isinstance(source, RolloutSource):
            raise TypeError("eval: the data module is not a RolloutSource, so there are no games to play")
        metrics: dict[str, float] = {}
        for index, (prefix, env) in enumerate(source.env_spec.evaluation_sets().items()):
            record = self.video and index == 0
            results = play_games(
                env,
                pl_module.actor,
                self.episodes,
                greedy=self.greedy,
                seed=self.seed,
                record=record,
                max_video_frames=self.max_video_frames,
            )
            if record and results.frames:
                self._upload_gif(trainer, results.gif())
            metrics |= results.metrics(prefix)
        if "eval_train/return_mean" in metrics:
            metrics["eval/generalization_gap"] = metrics["eval_train/return_mean"] - metrics["eval/return_mean"]
        return metrics

    def _upload_gif(self, trainer: pl.Trainer, gif: bytes) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / f"step{trainer.global_step:08d}.gif"
                    path.write_bytes(gif)
                    try:
                        logger.experiment.log_artifact(logger.run_id, str(path), "videos")
                    except Exception as err:  # noqa: BLE001 - a tracking server away costs the GIF, not the run
                        warnings.warn(f"evaluation GIF not uploaded ({type(err).__name__}: {err})", stacklevel=2)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        # DDP: the first learner plays; the others' weights are the same
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and trainer.is_global_zero:
            metrics = self.evaluate(trainer, pl_module)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _evaluate_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log_dict(self.evaluate(trainer, pl_module))

    on_validation_epoch_end = _evaluate_and_log
    on_test_epoch_end = _evaluate_and_log
