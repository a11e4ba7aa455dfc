"""The IMPALA paper's networks, wrapped as one TorchRL ``ActorValueOperator``.

One shared torso (optionally followed by a recurrent core, ``impala_lit.agent.recurrent``) feeds a
policy head (categorical logits, ``ProbabilisticActor`` with ``return_log_prob=True``) and a
value head (``ValueOperator``).
Pixels arrive as ``uint8`` and are scaled to [0, 1] inside the torso.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.modules import ActorValueOperator, ProbabilisticActor, ValueOperator

from impala_lit.agent.recurrent import check_core, make_core
from impala_lit.settings import SettingError

Network = Literal["shallow", "deep", "mlp"]
NETWORKS = get_args(Network)
TORSO_GAIN = math.sqrt(2)


def orthogonal_init(module: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights scaled by ``gain`` and zero biases, on every conv and linear layer of ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)
    return module


class NatureCNN(nn.Module):
    """The paper's shallow network (Mnih et al. 2015): 3 convs, then 512 hidden units."""

    def __init__(self, in_channels: int = 4, hidden: int = 512, image_size: tuple[int, int] = (84, 84)):
        super().__init__()
        convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        flat = _flat_size(convs, in_channels, image_size)  # 64 x 7 x 7 on 84x84
        self.net = nn.Sequential(*convs, nn.Linear(flat, hidden), nn.ReLU())
        orthogonal_init(self, TORSO_GAIN)
        self.out_features = hidden
        self.autocast_dtype: torch.dtype | None = None  # see ``set_inference_precision``

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _over_images(self.net, pixels, self.autocast_dtype)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ResNetTorso(nn.Module):
    """The paper's deep network (Fig. 3): 3 stages of conv + max-pool + 2 residual blocks."""

    def __init__(
        self,
        in_channels: int = 4,
        channels: tuple[int, ...] = (16, 32, 32),
        hidden: int = 256,
        image_size: tuple[int, int] = (84, 84),
    ):
        super().__init__()
        stages: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            stages += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                _ResidualBlock(c_out),
                _ResidualBlock(c_out),
            ]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        flat = _flat_size(self.stages, in_channels, image_size)  # 32 x 11 x 11 on 84x84, 32 x 8 x 8 on 64x64
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU())
        orthogonal_init(self, TORSO_GAIN)
        for block in self.modules():  # residual blocks start as the identity, or 6 of them blow the scale up
            if isinstance(block, _ResidualBlock):
                nn.init.zeros_(block.conv1.weight)
        self.out_features = hidden
        self.autocast_dtype: torch.dtype | None = None  # see ``set_inference_precision``

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _over_images(lambda x: self.head(self.stages(_channels_last(x))), pixels, self.autocast_dtype)


class MLP(nn.Module):
    """Two tanh layers for vector observations (CartPole and friends)."""

    def __init__(self, in_features: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        orthogonal_init(self, TORSO_GAIN)  # CleanRL's choice for its tanh MLPs too
        self.out_features = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC images: oneDNN's CPU convolutions ran the ResNet twice as fast (docs/benchmarks/procgen.md).

    Procgen's rollouts already arrive NHWC, so this is a no-op there and a guard for NCHW inputs."""
    return x.contiguous(memory_format=torch.channels_last)


def _flat_size(convs: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    with torch.no_grad():
        return convs(torch.zeros(1, in_channels, *image_size)).numel()


def _over_images(net, pixels: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Apply a conv net to ``[*batch, C, H, W]`` pixels (uint8 scaled to [0, 1] here).

    With ``autocast_dtype`` the net runs under autocast and its output comes back in fp32.
    """
    lead = pixels.shape[:-3]
    x = pixels.reshape(-1, *pixels.shape[-3:])
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
    if autocast_dtype is None:
        return net(x).reshape(*lead, -1)
    with torch.autocast(x.device.type, dtype=autocast_dtype):
        out = net(x)
    return out.float().reshape(*lead, -1)


InferencePrecision = Literal["32-true", "bf16-mixed"]
INFERENCE_PRECISIONS = get_args(InferencePrecision)


def check_inference_precision(precision: str) -> None:
    """Reject an actor precision other than ``INFERENCE_PRECISIONS``, in one line."""
    if precision not in INFERENCE_PRECISIONS:
        raise SettingError(f"data.actor_precision: {precision!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")


def fastest_precision() -> str:
    """The learner precision that measured fastest on this kind of hardware (docs/benchmarks/throughput.md).

    ``bf16-mixed`` on a CPU with native bf16 (AVX512-BF16 or AMX): 2.0-2.25x the fp32 learner
    step; ``32-true`` on a GPU (H100: fp32 239k vs bf16 216k frames/s, the Nature CNN is too
    small to gain) and on CPUs that would only emulate bf16.
    """
    if torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), not by emulation."""
    probes = [getattr(torch.cpu, f"_is_{name}_supported", None) for name in ("avx512_bf16", "amx_tile")]
    return any(probe is not None and probe() for probe in probes)


def set_inference_precision(module: nn.Module, precision: str) -> nn.Module:
    """Run the pixel torsos in ``module`` under bf16 autocast (``bf16-mixed``) or in fp32 (``32-true``).

    For the actors' copy of the policy: the torso's output (and so the logits, the sampled
    action and its log-probability) stays fp32; the weights and their names are unchanged,
    so weight sync is unaffected. The MLP torso always runs in fp32.
    """
    check_inference_precision(precision)
    for torso in module.modules():
        if isinstance(torso, (NatureCNN, ResNetTorso)):
            torso.autocast_dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    return module


def make_torso(network: str, obs_shape: tuple[int, ...]) -> nn.Module:
    """Build the torso named ``network`` (one of ``NETWORKS``) for observations of ``obs_shape``."""
    if network not in NETWORKS:
        raise SettingError(f"model.network: {network!r} is not one of {', '.join(NETWORKS)}")
    if network == "mlp":
        if len(obs_shape) != 1:
            raise SettingError(f"model.network: 'mlp' needs vector observations, got shape {obs_shape}")
        return MLP(obs_shape[0])
    if len(obs_shape) != 3:
        raise SettingError(f"model.network: {network!r} needs image observations, got shape {obs_shape}")
    channels, *image_size = obs_shape
    if network == "shallow":
        if min(image_size) < 36:
            raise SettingError(f"model.network: 'shallow' needs images of at least 36x36, got {tuple(image_size)}")
        return NatureCNN(channels, image_size=tuple(image_size))
    return ResNetTorso(channels, image_size=tuple(image_size))


def make_actor_critic(
    network: str,
    obs_shape: tuple[int, ...],
    num_actions: int,
    core: str = "none",
    core_size: int = 256,
    core_norm: bool = True,
) -> ActorValueOperator:
    """Shared torso [-> recurrent core] -> (``ProbabilisticActor`` over categorical logits, ``ValueOperator``).

    Initialised as in OpenAI baselines / CleanRL: orthogonal with gain sqrt(2) in the torsos,
    0.01 for the policy head (a near-uniform first policy), 1 for the value head; zero biases.
    PyTorch's default init left a Pong torso blind to the game state (docs/benchmarks/pong.md).
    """
    check_core(core, core_size)
    torso = make_torso(network, tuple(obs_shape))
    if core == "none":
        common = TensorDictModule(torso, in_keys=["observation"], out_keys=["hidden"])
        hidden = torso.out_features
    else:  # the paper's agents: torso -> LSTM -> heads
        features = TensorDictModule(torso, in_keys=["observation"], out_keys=["features"])
        common = TensorDictSequential(features, make_core(core, torso.out_features, core_size, core_norm))
        hidden = core_size
    logits = orthogonal_init(nn.Linear(hidden, num_actions), 0.01)
    policy_head = TensorDictModule(logits, in_keys=["hidden"], out_keys=["logits"])
    actor = ProbabilisticActor(
        policy_head,
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(orthogonal_init(nn.Linear(hidden, 1), 1.0), in_keys=["hidden"])
    return ActorValueOperator(common, actor, critic)
