"""Network pieces shared by every agent (URLB's state-based architectures)."""

from __future__ import annotations

import math

import torch
from torch import nn


def orthogonal_init(module: nn.Module) -> None:
    """URLB's ``utils.weight_init``: orthogonal weights, zero biases, for linear layers."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def xavier_uniform_init(module: nn.Module) -> None:
    """Flax's ``nn.Dense`` as RLPD and SUPE build it: Xavier-uniform weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def mlp(input_dim: int, hidden_dim: int, output_dim: int, depth: int = 2) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``hidden_dim`` then a linear output."""
    layers: list[nn.Module] = []
    dim = input_dim
    for _ in range(depth):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, output_dim))
    return nn.Sequential(*layers)


def layer_norm_trunk(input_dim: int, hidden_dim: int) -> nn.Sequential:
    """URLB's trunk: Linear, LayerNorm, Tanh."""
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh())


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- tau * source + (1 - tau) * target``, in place."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def hard_update(target: nn.Module, source: nn.Module) -> None:
    target.load_state_dict(source.state_dict())


def optimise(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One gradient step on ``loss``."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def clipped_step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, max_norm: float) -> torch.Tensor:
    """One gradient step on ``loss`` into ``optimiser``'s parameters only (a loss that passes
    through other modules, e.g. an actor's through a world model, leaves their gradients
    alone), with the gradient norm clipped at ``max_norm``. Returns the norm before clipping."""
    params = [p for group in optimiser.param_groups for p in group["params"]]
    optimiser.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
    optimiser.step()
    return norm


class Randomness:
    """Where an agent draws the random numbers of its updates and exploration: torch's
    default generator. The one override is the reference-parity tests
    (``tests/reference``), which substitute a source serving the draws recorded from
    URLB's own code so that a replayed update is compared exactly (issue 17). Agents hold
    one as their ``randomness`` attribute."""

    def normal(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws of ``shape`` with ``like``'s dtype and device."""
        return torch.randn(shape, dtype=like.dtype, device=like.device)

    def multinomial(self, probs: torch.Tensor, num_samples: int) -> torch.Tensor:
        """``torch.multinomial(probs, num_samples)``: indices ``(*probs.shape[:-1], num_samples)``."""
        return torch.multinomial(probs, num_samples)

    def uniform(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uniform draws in [0, 1) of ``shape`` with ``like``'s dtype and device."""
        return torch.rand(shape, dtype=like.dtype, device=like.device)

    def permutation(self, size: int, device) -> torch.Tensor:
        """A random permutation of ``0 .. size - 1`` (int64)."""
        return torch.randperm(size, device=device)

    def randint(self, high: int, shape: tuple[int, ...], device) -> torch.Tensor:
        """Integers uniform in ``[0, high)`` of ``shape`` (int64): random shifts' offsets."""
        return torch.randint(0, high, shape, device=device)


TORCH_RANDOMNESS = Randomness()


class TruncatedNormal(torch.distributions.Normal):
    """DrQ-v2 / URLB's exploration distribution: a Gaussian whose samples are clipped to
    [-1, 1] with a straight-through gradient, and whose noise can be clipped at ``clip``.
    ``sample`` draws its noise from ``randomness`` (:class:`Randomness`)."""

    def __init__(self, loc: torch.Tensor, scale: float | torch.Tensor, low=-1.0, high=1.0, eps=1e-6):
        super().__init__(loc, torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).expand_as(loc))
        self.low, self.high, self.eps = low, high, eps

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        clamped = x.clamp(self.low + self.eps, self.high - self.eps)
        return x - x.detach() + clamped.detach()

    def sample(self, clip: float | None = None, randomness: Randomness = TORCH_RANDOMNESS) -> torch.Tensor:
        noise = randomness.normal(self._extended_shape(), self.loc) * self.scale
        if clip is not None:
            noise = noise.clamp(-clip, clip)
        return self._clamp(self.loc + noise)


def gaussian_log_prob_tanh(mean: torch.Tensor, log_std: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """Log-density of ``tanh(raw)`` where ``raw ~ N(mean, exp(log_std))``, summed over
    the action dimension, with the numerically stable tanh correction
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (SAC, Haarnoja et al. 2018, App. C)."""
    std = log_std.exp()
    gaussian = -0.5 * ((raw - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    correction = 2 * (math.log(2) - raw - nn.functional.softplus(-2 * raw))
    return (gaussian - correction).sum(-1)


def gaussian_kl(mean_q, log_std_q, mean_p, log_std_p) -> torch.Tensor:
    """Elementwise ``KL(N(mean_q, e^log_std_q) || N(mean_p, e^log_std_p))``."""
    var_q, var_p = (2 * log_std_q).exp(), (2 * log_std_p).exp()
    return log_std_p - log_std_q + (var_q + (mean_q - mean_p) ** 2) / (2 * var_p) - 0.5


def gaussian_nll(value, mean, log_std) -> torch.Tensor:
    """Elementwise ``-log N(value; mean, e^log_std)``."""
    return (value - mean) ** 2 / (2 * (2 * log_std).exp()) + log_std + 0.5 * math.log(2 * math.pi)
