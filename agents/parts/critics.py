"""Critics the actor-critic backbones share: URLB's double-Q critic (DDPG and SAC), its
layout without a shared trunk (METRA's SAC: two independent MLPs) and RLPD's ensemble of
LayerNorm Q networks (SAC with ``num_critics > 2``).

Imports: torch and agents.parts.nets only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from agents.parts.nets import layer_norm_trunk, mlp, orthogonal_init


def xavier_normal_init(module: nn.Module) -> None:
    """garage's default for MLP layers (METRA's Q functions): Xavier-normal weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        nn.init.zeros_(module.bias)


class DoubleQCritic(nn.Module):
    """URLB's critic: a shared LayerNorm trunk and two Q heads.

    States (``feature_dim`` None): the trunk reads ``(s, a)``, each head one hidden layer.
    With ``shared_trunk=False`` there is no trunk: each head is its own MLP of two hidden
    ReLU layers on ``(s, a)``, no LayerNorm, Xavier-normal weights (METRA's SAC: garage's
    ``ContinuousMLPQFunction`` twice, github.com/seohongpark/METRA ``tests/main.py``).
    Pixels: the trunk compresses the encoder's features alone to ``feature_dim`` and the
    action joins after it; each head has two hidden layers (URLB), whatever ``shared_trunk``.
    Or, with ``frame_encoder`` (a factory; ``shared_trunk=False``), each head reads flat frames
    through an encoder of its own (METRA's pixel Q functions).

    With ``task_dim > 0`` the heads output successor features ``psi(s, a)`` of that size and
    ``Q = psi(s, a) . w``, with ``w`` the last ``task_dim`` entries of the input (the task
    vector appended as the skill): APS's critic (Liu & Abbeel 2021)."""

    def __init__(
        self,
        input_dim: int,
        action_dim: int,
        hidden_dim: int,
        task_dim: int = 0,
        feature_dim: int | None = None,
        shared_trunk: bool = True,
        frame_encoder=None,
    ):
        super().__init__()
        self.task_dim = task_dim
        self.action_in_trunk = feature_dim is None
        if frame_encoder is not None and (shared_trunk or feature_dim is not None):
            raise ValueError("Q networks with their own frame encoders take shared_trunk=False")
        if feature_dim is not None:
            self.trunk = layer_norm_trunk(input_dim, feature_dim)
            head_input, depth = feature_dim + action_dim, 2
        elif shared_trunk:
            self.trunk = layer_norm_trunk(input_dim + action_dim, hidden_dim)
            head_input, depth = hidden_dim, 1
        else:
            self.trunk = nn.Identity()
            head_input, depth = input_dim + action_dim, 2
        out = task_dim if task_dim else 1
        self.q1, self.q2 = (self.head(head_input, hidden_dim, out, depth, frame_encoder) for _ in range(2))
        self.apply(orthogonal_init if shared_trunk or feature_dim is not None else xavier_normal_init)

    @staticmethod
    def head(input_dim: int, hidden_dim: int, out: int, depth: int, frame_encoder) -> nn.Module:
        """One Q network; with ``frame_encoder``, behind a frame encoder of its own (METRA's
        ``WithEncoder``: the first ``C * H * W`` inputs are frames)."""
        if frame_encoder is None:
            return mlp(input_dim, hidden_dim, out, depth)
        encoder = frame_encoder()
        return nn.Sequential(
            encoder, mlp(input_dim + encoder.embed_dim - encoder.frame_size, hidden_dim, out, depth)
        )

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.action_in_trunk:
            h = self.trunk(torch.cat([observation, action], dim=-1))
        else:
            h = torch.cat([self.trunk(observation), action], dim=-1)
        if not self.task_dim:
            return self.q1(h).squeeze(-1), self.q2(h).squeeze(-1)
        task = observation[:, -self.task_dim :]
        return (self.q1(h) * task).sum(-1), (self.q2(h) * task).sum(-1)


class EnsembleLinear(nn.Module):
    """``num`` independent linear layers applied at once: ``(num, B, in) -> (num, B, out)``
    (a ``(B, in)`` input is shared by all); orthogonal weights, zero biases, per member."""

    def __init__(self, num: int, input_dim: int, output_dim: int, init=nn.init.orthogonal_):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, input_dim, output_dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, output_dim))
        with torch.no_grad():
            for weight in self.weight:
                init(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.expand(len(self.weight), -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with each member's own gain and shift; ``eps`` is
    added to the variance (torch's default 1e-5; Flax's, RLPD's and SUPE's, 1e-6)."""

    def __init__(self, num: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


ENSEMBLE_LAYOUTS = ("urlb", "rlpd")


class EnsembleCritic(nn.Module):
    """RLPD's critic: ``num_critics`` Q networks, each ``depth`` hidden layers of Linear,
    LayerNorm, ReLU (RLPD's ``MLP(use_layer_norm=True)``; SUPE's hidden dims (256, 256, 256))
    and a linear output, evaluated as one batched network; ``forward`` gives ``(N, B)``.

    States (``feature_dim`` None): every network reads ``(s, a)`` (``trunk`` is empty).
    Pixels: one shared LayerNorm trunk compresses the encoder's features to ``feature_dim``
    and the action joins after it, as in :class:`DoubleQCritic`. ``task_dim > 0``: successor
    features dotted with the task, as there (APS).

    ``layout`` (``ENSEMBLE_LAYOUTS``): ``urlb``, orthogonal weights and torch's LayerNorm
    epsilon 1e-5 (urlb's networks); ``rlpd``, Xavier-uniform weights and Flax's epsilon 1e-6
    (RLPD's ``MLP`` and ``nn.LayerNorm`` defaults, SUPE's critic)."""

    def __init__(
        self,
        input_dim: int,
        action_dim: int,
        hidden_dim: int,
        num_critics: int,
        task_dim: int = 0,
        feature_dim: int | None = None,
        depth: int = 3,
        layout: str = "urlb",
    ):
        super().__init__()
        if layout not in ENSEMBLE_LAYOUTS:
            raise ValueError(f"critic layout {layout!r}; known: {', '.join(ENSEMBLE_LAYOUTS)}")
        init, eps = (nn.init.orthogonal_, 1e-5) if layout == "urlb" else (nn.init.xavier_uniform_, 1e-6)
        self.task_dim = task_dim
        if feature_dim is None:
            self.trunk, width = nn.Identity(), input_dim + action_dim
        else:
            self.trunk, width = layer_norm_trunk(input_dim, feature_dim), feature_dim + action_dim
            self.trunk.apply(orthogonal_init)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                EnsembleLinear(num_critics, width, hidden_dim, init),
                EnsembleLayerNorm(num_critics, hidden_dim, eps),
            ]
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(EnsembleLinear(num_critics, width, task_dim or 1, init))
        self.heads = nn.Sequential(*layers)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out = self.heads(torch.cat([self.trunk(observation), action], dim=-1))  # (N, B, task_dim or 1)
        if not self.task_dim:
            return out.squeeze(-1)
        return (out * observation[:, -self.task_dim :]).sum(-1)
