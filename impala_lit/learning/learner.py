"""``ImpalaModule``: the IMPALA learner (Espeholt et al. 2018) as a ``LightningModule``.

Data flow of one step: rollouts ``[B, T]`` from the actors -> ``compute_advantages``
(learner forward pass, bootstrap values, V-trace) -> ``loss`` -> Lightning's optimizer
step (RMSProp, gradient-norm clip) -> ``optimizer_step`` sends the weights back to the actors.

To try another objective, subclass and override ``loss`` (and, if needed,
``compute_advantages``); see ``impala_lit.learning.appo``.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import grad_norm
from tensordict import TensorDict, TensorDictBase
from torchrl.modules import set_recurrent_mode

from impala_lit.agent.networks import Network, make_actor_critic
from impala_lit.agent.recurrent import Core, learner_inputs, set_core_norm, state_keys
from impala_lit.learning.source import NoSource, RolloutSource
from impala_lit.learning.vtrace import TakenActionVTrace
from impala_lit.settings import ClosedUnitInterval, NonNegativeFloat, PositiveFloat, PositiveInt


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


class ImpalaModule(pl.LightningModule):
    """IMPALA learner: V-trace actor-critic on rollouts from asynchronous actors.

    Defaults are the paper's (Table D.1 / the reference ``scalable_agent`` code).

    Args:
        observation_shape: shape of one observation (set from the data module by the CLI).
        num_actions: size of the discrete action space (set from the data module by the CLI).
        network: ``shallow`` (Nature CNN, 512 hidden), ``deep`` (15-layer ResNet, 256 hidden) or ``mlp``.
        core: ``none`` (feed-forward), ``lstm`` or ``gru``: a recurrent core between the torso and
            the heads (``impala_lit.agent.recurrent``); the actors carry its state, the learner replays
            each unroll from the state stored at its first step.
        core_size: units of the recurrent core.
        core_norm: layer-normalize the torso's features before the core (no learned weights):
            without it the features grew and saturated the LSTM's gates on Pong. Checkpoints
            saved before this setting existed load with it off.
        discount: gamma.
        rho_thresh: V-trace rho-bar, clips the importance ratio of the TD error and policy gradient.
        c_thresh: V-trace c-bar, clips the trace coefficients.
        baseline_cost: weight of the baseline loss ``0.5 * sum (v_s - V(x_s))^2``.
        entropy_cost: weight of the entropy bonus.
        normalize_advantage: standardize the policy-gradient advantages over the batch (PPO's and
            CleanRL's ``norm_adv``): the policy term keeps one scale while the value error shrinks;
            pair it with an entropy cost at the scale of standardized advantages (CleanRL: 0.01).
        lr: learning rate.
        optimizer: ``rmsprop`` (the paper's; ``rms_alpha``, ``rms_eps``) or ``adam`` (RLlib's and
            moolib's; ``adam_eps``).
        rms_alpha: RMSProp decay.
        rms_eps: RMSProp epsilon, added to ``sqrt(mean square)`` (PyTorch's); where gradients are
            small (Pong's) it sets the step size. TensorFlow's RMSProp (the paper's code, 0.1)
            adds it inside the square root.
        rms_init: RMSProp's running mean of squared gradients at the start: 0 (PyTorch's), or 1
            (TensorFlow's, which the paper's reference code ran): its first updates then take
            steps of about ``lr x gradient``, growing to full size as the mean decays over a few
            hundred updates (a warm-up), where PyTorch's are full size from the first update.
        adam_eps: Adam epsilon.
        loss_reduction: ``sum`` the loss terms over batch and time (the reference code's scale,
            which the paper's RMSProp learning rate, epsilon and gradient clip were tuned for) or
            take their ``mean``.
        lr_decay: decay the learning rate linearly to 0 over ``lr_decay_frames``.
        lr_decay_frames: frames over which the learning rate decays to 0 (emulator frames);
            ``None``: the frame budget ``max_frames``, else ``trainer.max_steps``. A horizon
            longer than the budget leaves the rate above 0 when training stops.
        max_frames: frame budget (emulator frames); training stops when it is spent.
        max_nonfinite_updates: a non-finite loss or gradient skips the update (counted in
            ``faults/skipped_updates``); this many in a row stop the run with ``NonFiniteError``.
    """

    def __init__(
        self,
        observation_shape: tuple[int, ...] = (4, 84, 84),
        num_actions: int = 6,
        network: Network = "shallow",
        core: Core = "none",
        core_size: PositiveInt = 256,
        core_norm: bool = True,
        discount: ClosedUnitInterval = 0.99,
        rho_thresh: PositiveFloat = 1.0,
        c_thresh: PositiveFloat = 1.0,
        baseline_cost: NonNegativeFloat = 0.5,
        entropy_cost: NonNegativeFloat = 0.01,
        normalize_advantage: bool = False,
        lr: PositiveFloat = 6e-4,
        optimizer: Literal["rmsprop", "adam"] = "rmsprop",
        rms_alpha: ClosedUnitInterval = 0.99,
        rms_eps: PositiveFloat = 0.01,
        rms_init: NonNegativeFloat = 0.0,
        adam_eps: PositiveFloat = 1e-8,
        loss_reduction: Literal["sum", "mean"] = "sum",
        lr_decay: bool = True,
        lr_decay_frames: PositiveInt | None = None,
        max_frames: PositiveInt | None = None,
        max_nonfinite_updates: PositiveInt = 10,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.actor_critic = make_actor_critic(
            network, tuple(observation_shape), num_actions, core, core_size, core_norm
        )
        self.state_keys = state_keys(self.actor_critic)  # [] for a feed-forward network
        self.vtrace = TakenActionVTrace(gamma=discount, rho_thresh=rho_thresh, c_thresh=c_thresh)
        self.frames = 0  # emulator frames consumed by the learner
        self.policy_version = 0  # weight updates sent to the actors
        self.skipped_updates = 0  # updates skipped for a non-finite loss or gradient
        self._nonfinite_in_row = 0
        self._log_this_update = True  # False on the minibatch updates whose metrics are not logged (APPO)
        self._recent_games: deque[tuple[float, float]] = deque(maxlen=100)  # (raw score, length); checkpointed
        # not Lightning's Timer: the Trainer adds one only when trainer.max_time is set
        self._train_seconds_before = 0.0  # training time of the processes this run was resumed from
        self._train_start: float | None = None
        self._fps_window: deque[tuple[float, int]] = deque(maxlen=20)
        self.source: RolloutSource | NoSource = NoSource()  # set in ``setup`` from the trainer's data module

    def setup(self, stage: str) -> None:
        """Take the data module as the ``RolloutSource`` when it is one (batches fed by hand need none)."""
        datamodule = self.trainer.datamodule
        self.source = datamodule if isinstance(datamodule, RolloutSource) else NoSource()

    def on_train_start(self) -> None:
        self._train_start = time.perf_counter()

    @property
    def train_seconds(self) -> float:
        """Seconds of training in this run, over every process of it (a resumed run's pause does not count)."""
        running = time.perf_counter() - self._train_start if self._train_start is not None else 0.0
        return self._train_seconds_before + running

    # -- networks -----------------------------------------------------------------------------
    @property
    def actor(self):
        """The policy as a TorchRL operator: observation -> action, action_log_prob."""
        return self.actor_critic.get_policy_operator()

    @property
    def critic(self):
        """The value function as a TorchRL operator: observation -> state_value."""
        return self.actor_critic.get_value_operator()

    def forward(self, observation: TensorDictBase) -> TensorDictBase:
        """One torso (and core) pass, both heads: writes ``hidden``, ``logits`` and ``state_value``.

        With a recurrent core, call it under ``set_recurrent_mode(True)`` on ``[B, T]`` inputs
        from ``impala_lit.agent.recurrent.learner_inputs``.
        """
        td = self.actor_critic.module[0](observation)
        self.actor_critic.get_policy_head().get_dist_params(td)
        return self.actor_critic.get_value_head()(td)

    # -- V-trace -----------------------------------------------------------------------------
    def compute_advantages(self, batch: TensorDictBase) -> TensorDictBase:
        """Learner pass over ``batch`` ``[B, T]`` and V-trace; returns the same batch with:

        ``logits``, ``learner_log_prob`` (of the taken action) and ``state_value`` (with
        gradients), ``("next", "state_value")`` (bootstrap values, no gradient), ``advantage``
        (rho-clipped) and ``value_target`` (v_s). All in fp32, outside autocast.

        A recurrent core replays each unroll from the state stored at its first step, resetting
        where episodes start inside it; bootstrap values use the state after the step.
        """
        if self.state_keys:
            with set_recurrent_mode(True):
                out = self(learner_inputs(batch, self.state_keys))
        else:
            out = self(batch.select("observation"))
        done = batch.get(("next", "done")).squeeze(-1)
        terminated = batch.get(("next", "terminated")).squeeze(-1)
        with torch.autocast(self.device.type, enabled=False):
            logits = out.get("logits").float()
            value = out.get("state_value").float()
            learner_log_prob = torch.log_softmax(logits, -1).gather(-1, batch["action"].unsqueeze(-1)).squeeze(-1)
            # V(x_{t+1}) is V(x_t+1) of the same rollout unless the episode ended at t:
            # terminated -> 0; truncated, or the last step -> the critic on the true next observation.
            next_value = torch.zeros_like(value)
            next_value[:, :-1] = value[:, 1:].detach()
            next_value = next_value.masked_fill(done.unsqueeze(-1), 0.0)
            bootstrap = ~terminated & done
            bootstrap[:, -1] = ~terminated[:, -1]
            if bootstrap.any():
                with torch.no_grad():
                    next_obs = batch.get(("next", "observation"))[bootstrap]
                    next_td = TensorDict(observation=next_obs, batch_size=next_obs.shape[:1])
                    for key in self.state_keys:  # the state after step t, where an episode piece ends
                        next_td.set(key, out.get(("next", key))[bootstrap])
                    if self.state_keys:
                        next_td.set("is_init", torch.zeros(len(next_obs), 1, dtype=torch.bool, device=self.device))
                    next_value[bootstrap] = self.critic(next_td).get("state_value").float()
            batch.set("logits", logits)
            batch.set("state_value", value)
            batch.set("learner_log_prob", learner_log_prob)
            batch.set(("next", "state_value"), next_value)
            self.vtrace(batch)
        return batch

    # -- loss --------------------------------------------------------------------------------
    def reduce_term(self, per_step: torch.Tensor, batch: TensorDictBase) -> torch.Tensor:
        """A loss term over batch and time: its sum (the reference code's scale) or mean (``loss_reduction``).

        Steps are weighted by the batch's ``sample_weight`` where it has one (prioritized replay).
        """
        weight = batch.get("sample_weight", None)
        if weight is not None:
            per_step = per_step * weight.reshape(per_step.shape)
        return per_step.sum() if self.hparams.loss_reduction == "sum" else per_step.mean()

    def scale_advantage(self, advantage: torch.Tensor) -> torch.Tensor:
        """The policy gradient's advantages: standardized over the batch if ``normalize_advantage``, else as given."""
        if self.hparams.normalize_advantage:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        return advantage

    def loss(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """IMPALA's loss on a batch from ``compute_advantages``; ``"loss"`` is optimised.

        Each term is reduced over batch and time by ``reduce_term``: summed by default, as the
        reference implementation does (the paper's RMSProp settings are tuned for that scale).
        """
        hp = self.hparams
        log_probs = torch.log_softmax(batch["logits"], -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        advantage = self.scale_advantage(batch["advantage"].squeeze(-1))
        policy = -self.reduce_term(advantage * batch["learner_log_prob"], batch)
        baseline = self.reduce_term((batch["value_target"] - batch["state_value"]).pow(2), batch)
        baseline = hp.baseline_cost * 0.5 * baseline
        entropy_loss = -hp.entropy_cost * self.reduce_term(entropy, batch)
        return {
            "loss": policy + baseline + entropy_loss,
            "policy": policy,
            "baseline": baseline,
            "entropy": entropy_loss,
        }

    # -- the Lightning loop --------------------------------------------------------------------
    def training_step(self, batch: TensorDictBase, batch_idx: int) -> torch.Tensor | None:
        return self._train_on(batch)

    def _train_on(
        self, batch: TensorDictBase, new_steps: int | None = None, log: bool = True, games: TensorDictBase | None = None
    ) -> torch.Tensor | None:
        """V-trace, loss and (if ``log``) metrics on ``batch``, counting the games that end in ``games`` (default:
        ``batch``); the loss to optimise, or ``None`` to skip the update."""
        batch = self.compute_advantages(batch)
        source_metrics = self.source.feedback(batch, self.policy_version)
        terms = self.loss(batch)
        self._log_this_update = log
        # DDP: the global loss, so that all learners skip together (else the gradient all-reduce waits forever)
        if not torch.isfinite(self._log_training(batch, terms, new_steps, source_metrics, log, games)):
            self._skip_update("loss")
            return None  # Lightning skips backward and the optimizer step
        return terms["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norms = grad_norm(self, norm_type=2)
        if not norms:
            return
        total = norms["grad_2.0_norm_total"]
        if not torch.isfinite(total):
            self._skip_update("gradient")
            optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are left as they are
            return
        self._nonfinite_in_row = 0
        if self._log_this_update:
            self.log("grad_norm", total)

    def _skip_update(self, what: str) -> None:
        self.skipped_updates += 1
        self._nonfinite_in_row += 1
        self.log("faults/skipped_updates", float(self.skipped_updates))
        limit = self.hparams.max_nonfinite_updates
        if self._nonfinite_in_row >= limit:
            raise NonFiniteError(
                f"{self._nonfinite_in_row} updates in a row had a non-finite {what} (model.max_nonfinite_updates="
                f"{limit}); stopped at step {self.global_step}, the last checkpoint holds the last good weights"
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The update, then the new weights to the actors.

        Here rather than in ``on_train_batch_end``: callbacks (checkpoints) run before that
        hook, and must see the policy version that matches the saved weights.
        """
        super().optimizer_step(*args, **kwargs)
        self.send_weights()

    def send_weights(self) -> None:
        """Bump the policy version and send the actor's weights to the actors."""
        self.policy_version += 1
        weights = TensorDict.from_module(self.actor).data
        if self.device.type != "cpu":
            weights = weights.to("cpu")
        self.source.update_weights(weights)
        max_frames = self.hparams.max_frames
        if max_frames is not None and self.frames >= max_frames:
            self.trainer.should_stop = True

    def _world_size(self) -> int:
        """Learner processes (DDP ranks); each consumes a batch per step."""
        return self.trainer.world_size if self._trainer is not None else 1

    def new_steps(self, batch: TensorDictBase) -> int:
        """Agent steps of ``batch`` the learner has not seen before (the source's fresh rollouts)."""
        return int(self.source.fresh(batch).sum()) * batch.shape[1]

    def _log_training(
        self,
        batch: TensorDictBase,
        terms: dict[str, torch.Tensor],
        new_steps: int | None = None,
        source_metrics: dict[str, float | torch.Tensor] | None = None,
        log: bool = True,
        games: TensorDictBase | None = None,
    ) -> torch.Tensor:
        """Count the frames; log the step's metrics if ``log``. ``new_steps`` agent steps (default: the
        batch's fresh ones) were not seen before.

        Returns the loss averaged over all learners (non-finite if any learner's is).
        """
        world = self._world_size()
        fresh = self.source.fresh(batch)
        steps = int(fresh.sum()) * batch.shape[1] if new_steps is None else new_steps
        # global: every learner consumes a batch of the same size per step
        self.frames += steps * self.source.frames_per_step * world
        if not log:  # Lightning's ``log`` costs ~1 ms a metric: 32 minibatch updates spent most of their time there
            loss = terms["loss"].detach()
            return self.trainer.strategy.reduce(loss, reduce_op="mean") if world > 1 else loss
        now = time.perf_counter()
        self._fps_window.append((now, self.frames))
        metrics = {f"loss/{k}" if k != "loss" else "loss/total": v.detach() for k, v in terms.items()}
        with torch.no_grad():
            log_rho = batch["learner_log_prob"] - batch["action_log_prob"]
            rho = log_rho.exp()
            metrics["vtrace/rho_mean"] = rho.mean()
            # how far the learner has moved from the actors' policy: KL(behaviour || learner) by
            # Schulman's unbiased estimator E_mu[rho - 1 - log rho], and the mean |log rho|
            metrics["vtrace/approx_kl"] = (rho - 1.0 - log_rho).mean()
            metrics["vtrace/log_rho_abs"] = log_rho.abs().mean()
            metrics["vtrace/rho_clipped_frac"] = (rho > self.hparams.rho_thresh).float().mean()
            metrics["vtrace/value_target_mean"] = batch["value_target"].mean()
            # per step, whatever the loss's reduction and costs: a policy that stays at the maximum
            # entropy (ln of the action count) with advantages much smaller than the entropy cost
            # has not started to learn (Procgen CoinRun, docs/benchmarks/procgen.md)
            log_probs = torch.log_softmax(batch["logits"].float(), -1)
            metrics["policy/entropy"] = -(log_probs.exp() * log_probs).sum(-1).mean()
            metrics["vtrace/advantage_std"] = batch["advantage"].float().std()
            behaviour_version = batch["policy_version"][fresh].float()
        metrics["policy_lag"] = self.policy_version - behaviour_version.mean()  # of the actors' fresh rollouts
        metrics |= source_metrics or {}
        metrics["frames"] = float(self.frames)
        metrics["time/train_min"] = self.train_seconds / 60
        metrics["lr"] = self.optimizers().param_groups[0]["lr"] if self._trainer is not None else 0.0
        games = batch if games is None else games
        over = games.get(("next", "game_over"))
        if over.any():
            returns = games.get(("next", "game_return"))[over].reshape(-1).tolist()
            lengths = games.get(("next", "game_length"))[over].reshape(-1).tolist()
            self._recent_games.extend(zip(returns, lengths, strict=False))
        returns, lengths = zip(*self._recent_games, strict=False) if self._recent_games else ((), ())
        totals = [sum(returns), sum(lengths), len(returns), self.source.actor_restarts]
        if world > 1:
            # DDP: two all-reduces make every figure global, identical on all ranks
            keys = list(metrics)
            means = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float32, device=self.device) for k in keys])
            metrics = dict(zip(keys, self.trainer.strategy.reduce(means, reduce_op="mean"), strict=True))
            totals = torch.tensor(totals, dtype=torch.float64, device=self.device)
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        if not isinstance(self.source, NoSource):
            metrics["faults/actor_restarts"] = float(totals[3])
        self.log_dict(metrics)
        if len(self._fps_window) > 1:
            (t0, f0), (t1, f1) = self._fps_window[0], self._fps_window[-1]
            self.log("fps", (f1 - f0) / max(t1 - t0, 1e-9), prog_bar=True)
        if totals[2]:  # mean raw score and length of the last 100 games (of each learner's actors)
            self.log("episode/return", totals[0] / totals[2], prog_bar=True)
            self.log("episode/length", totals[1] / totals[2])
            self.log("episode/games", float(totals[2]))  # in the window: up to 100 per learner
        return metrics["loss/total"]

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adam":
            optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr, eps=hp.adam_eps)
        else:
            optimizer = torch.optim.RMSprop(self.parameters(), lr=hp.lr, alpha=hp.rms_alpha, eps=hp.rms_eps)
            if hp.rms_init > 0:  # a resumed run's saved state replaces this one
                for param in self.parameters():
                    square_avg = torch.full_like(param, hp.rms_init)
                    optimizer.state[param] = {"step": torch.zeros(()), "square_avg": square_avg}
        total_steps = self._decay_steps()
        if not hp.lr_decay or total_steps is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _decay_steps(self) -> int | None:
        horizon = self.hparams.lr_decay_frames or self.hparams.max_frames
        if horizon is not None:
            frames_per_batch = self.source.frames_per_batch
            if frames_per_batch:
                return math.ceil(horizon / (frames_per_batch * self._world_size()))
        max_steps = self.trainer.max_steps if self._trainer is not None else -1
        return max_steps if max_steps > 0 else None

    # -- checkpoints ---------------------------------------------------------------------------
    # Tensors and primitives only: ``fit(ckpt_path=...)`` loads with ``weights_only=True``.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        numpy_state = np.random.get_state()
        checkpoint["impala"] = {
            "frames": self.frames,
            "policy_version": self.policy_version,
            "skipped_updates": self.skipped_updates,
            "train_seconds": self.train_seconds,
            # the 100-game window of ``episode/return``: a resumed run's first means are not over 1-2 games
            "recent_games": torch.tensor(list(self._recent_games), dtype=torch.float64).reshape(-1, 2),
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters")
        if self.state_keys and saved is not None and "core_norm" not in saved:
            set_core_norm(self.actor_critic, False)  # saved before the setting: its core had none
            self.hparams.core_norm = False
        state = checkpoint.get("impala", {})
        self.frames = int(state.get("frames", 0))
        self.policy_version = int(state.get("policy_version", 0))
        self.skipped_updates = int(state.get("skipped_updates", 0))
        self._train_seconds_before = float(state.get("train_seconds", 0.0))
        games = state.get("recent_games")
        self._recent_games.clear()
        if games is not None:
            self._recent_games.extend(tuple(game) for game in games.tolist())
        rng = state.get("rng")
        if rng is not None:  # the learner's random streams continue where they stopped
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, keys.numpy(), *rest))

    # -- evaluation: games are played by ``impala_lit.app.evaluation.EvaluationCallback`` -------------
    def validation_step(self, batch: int, batch_idx: int) -> None:
        pass

    def test_step(self, batch: int, batch_idx: int) -> None:
        pass
