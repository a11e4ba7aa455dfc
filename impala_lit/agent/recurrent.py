"""Recurrent cores: an LSTM (or GRU) between the torso and the heads, as in the IMPALA paper's agents.

Built from TorchRL's parts. The core is TorchRL's ``LSTMModule`` (``GRUModule``): it reads the
torso's ``features``, ``is_init`` and the state (``recurrent_state_h``/``recurrent_state_c``, or
``recurrent_state``) and writes ``hidden`` and the state after the step under ``("next", ...)``.

How the state flows:

- **Actors.** Their environments get TorchRL's ``InitTracker`` (``is_init`` on the first step of
  every episode) and the core's ``TensorDictPrimer`` (the state, zero at every reset), so the
  collector carries the state from step to step and across unrolls, and every step of a rollout
  stores the state it was acted from (TorchRL's collector layout).
- **Learner.** Each ``[B, T]`` unroll is replayed under ``set_recurrent_mode(True)`` from the state
  stored at its first step (``learner_inputs``: the only stored state the learner reads); TorchRL
  splits the unroll at ``is_init`` and starts every later episode from a zero state. The state
  after step ``t`` (the core's ``("next", ...)`` output at the end of each episode piece) feeds
  the critic on the true next observation where V-trace bootstraps.
- **Restarts and resumes** start the actors' environments afresh: new episodes, zero states.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.envs import InitTracker, Transform
from torchrl.modules import GRUModule, LSTMModule
from torchrl.modules.utils import get_primers_from_module

from impala_lit.settings import SettingError

Core = Literal["none", "lstm", "gru"]
CORES = get_args(Core)


def check_core(core: str, core_size: int) -> None:
    """Reject an unknown core or a size below 1, in one line."""
    if core not in CORES:
        raise SettingError(f"model.core: {core!r} is not one of {', '.join(CORES)}")
    if core_size < 1:
        raise SettingError(f"model.core_size: must be a positive integer, got {core_size}")


class _FP32Core:
    """Runs the core in fp32 outside autocast, whatever the trainer's precision; with
    ``normalize_input``, on the layer-normalized ``features`` (no learned parameters).

    Under CPU bf16 autocast, PyTorch runs ``nn.LSTM`` as oneDNN's bf16 ``mkldnn_rnn_layer`` with
    the fp32 state and fails ("could not create a primitive descriptor for the LSTM forward
    propagation primitive"); the core is a small part of the learner's work next to the torso.

    The normalization: on Pong the CNN's features grew until the LSTM's gates saturated and passed
    no gradient back to the torso (docs/benchmarks/pong.md).
    """

    normalize_input: bool = False

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        features = tensordict.get("features")
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            if self.normalize_input:
                features = nn.functional.layer_norm(features, features.shape[-1:])
            tensordict.set("features", features)
            return super().forward(tensordict)


class LSTMCore(_FP32Core, LSTMModule):
    """TorchRL's ``LSTMModule``, in fp32."""


class GRUCore(_FP32Core, GRUModule):
    """TorchRL's ``GRUModule``, in fp32."""


def make_core(core: str, input_size: int, core_size: int, normalize_input: bool = True) -> LSTMModule | GRUModule:
    """TorchRL's LSTM or GRU module from ``features`` to ``hidden``, carrying its state in the tensordict.

    Orthogonal weights and zero biases, as CleanRL's PPO-LSTM initialises its core;
    ``normalize_input`` layer-normalizes ``features`` first (see ``_FP32Core``).
    """
    check_core(core, core_size)
    if core == "none":
        raise SettingError("model.core: 'none' has no recurrent module")
    cls = LSTMCore if core == "lstm" else GRUCore
    module = cls(input_size=input_size, hidden_size=core_size, in_key="features", out_key="hidden")
    module.normalize_input = normalize_input
    for name, param in module.named_parameters():
        if "weight" in name:
            nn.init.orthogonal_(param, 1.0)
        else:
            nn.init.zeros_(param)
    return module


def set_core_norm(module: nn.Module, normalize_input: bool) -> None:
    """Switch the input normalization of every core in ``module`` (it has no weights to load)."""
    for core in recurrent_cores(module):
        core.normalize_input = normalize_input


def recurrent_cores(module: nn.Module) -> list[LSTMModule | GRUModule]:
    return [m for m in module.modules() if isinstance(m, (LSTMModule, GRUModule))]


def state_keys(module: nn.Module) -> list[NestedKey]:
    """The keys of the state the recurrent cores in ``module`` read (``[]`` for a feed-forward one)."""
    return [key for core in recurrent_cores(module) for key in core.in_keys[1:] if key != "is_init"]


def next_state_keys(module: nn.Module) -> list[NestedKey]:
    """The keys under which the cores write the state after the step (``("next", ...)``)."""
    return [key for core in recurrent_cores(module) for key in core.out_keys[1:]]


def env_transforms(module: nn.Module) -> list[Transform]:
    """What an environment needs for a policy with a recurrent core: ``InitTracker`` and the state's primer.

    Empty for a feed-forward policy, whose rollouts stay as they were.
    """
    if not recurrent_cores(module):
        return []
    return [InitTracker(), get_primers_from_module(module)]


def learner_inputs(batch: TensorDictBase, keys: list[NestedKey]) -> TensorDictBase:
    """What the learner's replay of ``batch`` ``[B, T]`` reads: observations, ``is_init`` and the state
    stored at the first step only (zero where an episode starts there; zero at later steps, where
    TorchRL's recurrent mode starts each new episode from the state at its first step).
    """
    inputs = batch.select("observation", "is_init")
    first_is_init = batch.get("is_init")[:, 0].squeeze(-1)
    for key in keys:
        stored = batch.get(key)
        state = torch.zeros_like(stored)
        first = stored[:, 0]
        mask = first_is_init.reshape(-1, *[1] * (first.dim() - 1))
        state[:, 0] = first.masked_fill(mask, 0.0)
        inputs.set(key, state)
    return inputs


def reset_state(module: TensorDictModuleBase, batch_size: int) -> TensorDictBase | None:
    """Zero states and ``is_init`` for ``batch_size`` games about to start (``None`` if feed-forward)."""
    transforms = env_transforms(module)
    if not transforms:
        return None
    primer = transforms[1]
    state = primer.primers.zero().expand(batch_size).clone()
    state.set("is_init", torch.ones(batch_size, 1, dtype=torch.bool))
    return state


def carry_state(output: TensorDictBase, module: nn.Module) -> TensorDictBase:
    """The state a policy call wrote under ``("next", ...)``, as the inputs of the next step."""
    carried = output.select(*next_state_keys(module)).get("next")
    carried.set("is_init", torch.zeros(*output.batch_size, 1, dtype=torch.bool))
    return carried
