"""Latent world-model pieces: DreamerV2's recurrent state-space model (RSSM), its KL
balancing, the lambda-return and the networks around them.

Hafner et al., "Mastering Atari with Discrete World Models" (DreamerV2, ICLR 2021), in the
configuration Rajeswar et al. use on URLB ("Mastering the Unsupervised Reinforcement
Learning Benchmark from Pixels", ICML 2023): a GRU path ``h`` (LayerNorm GRU, 200 units) and
a stochastic latent ``z`` (32 categoricals of 32 classes, or a diagonal Gaussian), ELU MLPs.

    prior      p(z_t | h_t),            h_t = GRU(h_{t-1}, z_{t-1}, a_{t-1})
    posterior  q(z_t | h_t, e(o_t))
    features   s_t = [z_t, h_t]   (what the heads, the actor and the critic read)

Everything here is agent-free: :mod:`agents.dreamer` assembles it. The functions are pure
and tested against hand-worked values (``tests/test_world_model.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from agents.parts.encoders import ConvEncoder
from agents.parts.nets import TORCH_RANDOMNESS, Randomness, TruncatedNormal


# -- returns and losses ---------------------------------------------------------------------
def lambda_return(
    reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor, bootstrap: torch.Tensor, lambda_: float
) -> torch.Tensor:
    """TD(lambda) targets along the first (time) axis (Sutton & Barto eq. 12.3; DreamerV2 eq. 5).

    ``R_t = r_t + d_t ((1 - lambda) v_{t+1} + lambda R_{t+1})`` for ``t < H``, with
    ``v_H = R_H = bootstrap``. ``lambda_ = 1`` gives the discounted Monte-Carlo return plus
    the discounted bootstrap; ``lambda_ = 0`` the one-step target.

    Args:
        reward, value, discount: ``(H, ...)``.
        bootstrap: ``(...)``: the value after the last step.
    Returns:
        ``(H, ...)`` targets.
    """
    if not reward.shape == value.shape == discount.shape or bootstrap.shape != reward.shape[1:]:
        raise ValueError(
            f"lambda_return shapes: reward {tuple(reward.shape)}, value {tuple(value.shape)}, "
            f"discount {tuple(discount.shape)}, bootstrap {tuple(bootstrap.shape)}"
        )
    next_value = torch.cat([value[1:], bootstrap[None]], 0)
    inputs = reward + discount * next_value * (1 - lambda_)
    returns = []
    last = bootstrap
    for t in reversed(range(len(reward))):
        last = inputs[t] + discount[t] * lambda_ * last
        returns.append(last)
    return torch.stack(returns[::-1], 0)


def latent_kl(lhs: dict[str, torch.Tensor], rhs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``KL(lhs || rhs)`` summed over the latent's dimensions, ``(...)``.

    Categorical latents are given as ``logits`` ``(..., S, C)`` (S independent categoricals);
    Gaussian ones as ``mean`` and ``std`` ``(..., S)``."""
    if "logits" in lhs:
        log_p = F.log_softmax(lhs["logits"], -1)
        log_q = F.log_softmax(rhs["logits"], -1)
        return (log_p.exp() * (log_p - log_q)).sum((-2, -1))
    var_ratio = (lhs["std"] / rhs["std"]).pow(2)
    mean_term = ((lhs["mean"] - rhs["mean"]) / rhs["std"]).pow(2)
    return 0.5 * (var_ratio + mean_term - 1 - var_ratio.log()).sum(-1)


def kl_balance_loss(
    posterior: dict[str, torch.Tensor],
    prior: dict[str, torch.Tensor],
    balance: float = 0.8,
    free_nats: float = 1.0,
    free_average: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV2's KL balancing with free nats (Hafner et al. 2021, Algorithm 2).

    ``loss = balance * max(KL(sg(q) || p), free) + (1 - balance) * max(KL(q || sg(p)), free)``:
    the prior is pulled towards the posterior ``balance / (1 - balance)`` times harder than
    the posterior towards the prior. ``free_average`` clips the batch mean (DreamerV2's
    ``free_avg``), else each element before averaging. Returns ``(loss, kl)`` with ``kl`` the
    per-element ``KL(q || p)`` (detached).
    """
    detach = lambda stats: {k: v.detach() for k, v in stats.items()}  # noqa: E731
    to_prior = latent_kl(detach(posterior), prior)
    to_posterior = latent_kl(posterior, detach(prior))
    if free_average:
        to_prior, to_posterior = to_prior.mean(), to_posterior.mean()
    loss = (
        balance * to_prior.clamp(min=free_nats).mean()
        + (1 - balance) * to_posterior.clamp(min=free_nats).mean()
    )
    return loss, latent_kl(detach(posterior), detach(prior))


class RewardScale(nn.Module):
    """DreamerV2's ``StreamNorm``: divide rewards by a running mean of their magnitude,
    ``m <- momentum m + (1 - momentum) mean|r|``, starting from 1. ``momentum = 1`` leaves
    rewards unchanged (DreamerV2 on task rewards; Plan2Explore uses 0.95 on its own)."""

    def __init__(self, momentum: float = 1.0, eps: float = 1e-8):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("magnitude", torch.ones(()))

    def forward(self, reward: torch.Tensor) -> torch.Tensor:
        if self.momentum < 1.0:
            with torch.no_grad():
                self.magnitude.lerp_(reward.detach().abs().mean(), 1 - self.momentum)
        return reward / (self.magnitude + self.eps)


# -- networks -------------------------------------------------------------------------------
def elu_mlp(input_dim: int, hidden_dim: int, output_dim: int | None, layers: int = 4) -> nn.Sequential:
    """``layers`` ELU layers of ``hidden_dim`` (DreamerV2's heads), then a linear output of
    ``output_dim`` (None: end on the last hidden layer, an embedding)."""
    modules: list[nn.Module] = []
    dim = input_dim
    for _ in range(layers):
        modules += [nn.Linear(dim, hidden_dim), nn.ELU()]
        dim = hidden_dim
    if output_dim is not None:
        modules.append(nn.Linear(dim, output_dim))
    return nn.Sequential(*modules)


class LayerNormGRUCell(nn.Module):
    """DreamerV2's GRU: one linear map (with a bias, as DreamerV2's and mastering-urlb's
    ``use_bias=norm is not None``) of ``[input, h]`` to reset, candidate and update parts,
    LayerNorm over them, and an update bias of -1 (keep the old state at first)."""

    def __init__(self, input_dim: int, hidden_dim: int, update_bias: float = -1.0):
        super().__init__()
        self.linear = nn.Linear(input_dim + hidden_dim, 3 * hidden_dim)
        self.norm = nn.LayerNorm(3 * hidden_dim)
        self.update_bias = update_bias

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        reset, candidate, update = self.norm(self.linear(torch.cat([x, h], -1))).chunk(3, -1)
        candidate = torch.tanh(torch.sigmoid(reset) * candidate)
        update = torch.sigmoid(update + self.update_bias)
        return update * candidate + (1 - update) * h


def categorical_index(probs: torch.Tensor, randomness: Randomness = TORCH_RANDOMNESS) -> torch.Tensor:
    """One draw from each categorical of ``probs`` ``(..., C)``: class indices ``(...)``.

    Torch's generator draws one uniform per categorical and inverts the CDF (multinomial would
    draw one per class); any other ``randomness`` (the parity tests' recorded draws) is asked
    for ``multinomial(probs (M, C), 1)``, as ``torch.distributions.OneHotCategorical`` samples."""
    classes = probs.shape[-1]
    if randomness is not TORCH_RANDOMNESS:
        return randomness.multinomial(probs.detach().reshape(-1, classes), 1).reshape(probs.shape[:-1])
    uniform = torch.rand(probs.shape[:-1], device=probs.device, dtype=probs.dtype)
    return (probs.detach().cumsum(-1) < uniform[..., None]).sum(-1).clamp(max=classes - 1)


class RSSM(nn.Module):
    """The recurrent state-space model.

    A latent state is a dict of tensors with a shared batch shape: ``deter`` ``(..., D)``,
    ``stoch`` ``(..., S*C)`` (one-hot samples, flattened) or ``(..., S)`` (Gaussian), and the
    parameters of the distribution ``stoch`` was drawn from (``logits`` ``(..., S, C)``, or
    ``mean`` and ``std`` ``(..., S)``).

    Args:
        action_dim, embed_dim: sizes of the action and of the observation embedding.
        deter_dim: GRU units (DreamerV2: 200).
        stoch_dim: number of categoricals, or Gaussian dimensions (32).
        classes: classes per categorical (32); 0 for a Gaussian latent.
        hidden_dim: width of the layers around the GRU (200).
        min_std: Gaussian latents' floor on the std (``2 sigmoid(x / 2) + min_std``).

    Latent draws come from ``randomness`` (``agents.parts.nets.Randomness``: torch's generator),
    which the reference-parity tests replace with recorded draws.
    """

    randomness = TORCH_RANDOMNESS

    def __init__(
        self,
        action_dim: int,
        embed_dim: int,
        deter_dim: int = 200,
        stoch_dim: int = 32,
        classes: int = 32,
        hidden_dim: int = 200,
        min_std: float = 0.1,
    ):
        super().__init__()
        self.deter_dim, self.stoch_dim, self.classes, self.min_std = deter_dim, stoch_dim, classes, min_std
        self.stoch_size = stoch_dim * classes if classes else stoch_dim
        stats = stoch_dim * classes if classes else 2 * stoch_dim
        self.img_in = nn.Sequential(nn.Linear(self.stoch_size + action_dim, hidden_dim), nn.ELU())
        self.cell = LayerNormGRUCell(hidden_dim, deter_dim)
        self.img_out = nn.Sequential(nn.Linear(deter_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, stats))
        self.obs_out = nn.Sequential(
            nn.Linear(deter_dim + embed_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, stats)
        )

    @property
    def feature_dim(self) -> int:
        return self.deter_dim + self.stoch_size

    def initial(self, batch: int, device) -> dict[str, torch.Tensor]:
        """The all-zero state every sequence and episode starts from (DreamerV2)."""
        return {
            "deter": torch.zeros(batch, self.deter_dim, device=device),
            "stoch": torch.zeros(batch, self.stoch_size, device=device),
        }

    @staticmethod
    def feature(state: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[z, h]``: what every head reads."""
        return torch.cat([state["stoch"], state["deter"]], -1)

    def _stats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.classes:
            return {"logits": x.unflatten(-1, (self.stoch_dim, self.classes))}
        mean, std = x.chunk(2, -1)
        return {"mean": mean, "std": 2 * torch.sigmoid(std / 2) + self.min_std}

    def sample(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """A reparameterised draw: one-hot samples with straight-through gradients
        (``sample + p - sg(p)``, DreamerV2), or ``mean + std * eps``; flattened."""
        if self.classes:
            probs = stats["logits"].softmax(-1)
            one_hot = F.one_hot(categorical_index(probs, self.randomness), self.classes).to(probs.dtype)
            return (one_hot + probs - probs.detach()).flatten(-2)
        return stats["mean"] + stats["std"] * self.randomness.normal(stats["std"].shape, stats["std"])

    def entropy(self, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Entropy of the latent distribution, summed over its dimensions, ``(...)``."""
        if self.classes:
            log_p = F.log_softmax(stats["logits"], -1)
            return -(log_p.exp() * log_p).sum((-2, -1))
        return (0.5 * math.log(2 * math.pi * math.e) + stats["std"].log()).sum(-1)

    def img_step(self, state: dict[str, torch.Tensor], action: torch.Tensor) -> dict[str, torch.Tensor]:
        """The prior one step on: ``h' = GRU(h, [z, a])``, ``z' ~ p(z' | h')``."""
        x = self.img_in(torch.cat([state["stoch"], action], -1))
        deter = self.cell(x, state["deter"])
        stats = self._stats(self.img_out(deter))
        return {"deter": deter, "stoch": self.sample(stats), **stats}

    def obs_step(
        self, state: dict[str, torch.Tensor], action: torch.Tensor, embed: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(posterior, prior)`` after taking ``action`` from ``state`` and observing ``embed``."""
        prior = self.img_step(state, action)
        stats = self._stats(self.obs_out(torch.cat([prior["deter"], embed], -1)))
        return {"deter": prior["deter"], "stoch": self.sample(stats), **stats}, prior

    def observe(
        self, embed: torch.Tensor, action: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Filter a batch of sequences from the initial state.

        Args:
            embed: ``(B, T, E)`` observation embeddings.
            action: ``(B, T, A)``: ``action[:, t]`` led into observation ``t`` (zeros at 0).
        Returns:
            posteriors and priors, dicts of ``(B, T, ...)``.
        """
        state = self.initial(embed.shape[0], embed.device)
        posts, priors = [], []
        for t in range(embed.shape[1]):
            state, prior = self.obs_step(state, action[:, t], embed[:, t])
            posts.append(state)
            priors.append(prior)
        stack = lambda steps: {k: torch.stack([s[k] for s in steps], 1) for k in steps[0]}  # noqa: E731
        return stack(posts), stack(priors)


class Actor(nn.Module):
    """DreamerV2's actor on latent features: an ELU MLP to a truncated normal with mean
    ``tanh(mu)`` and std ``2 sigmoid(sigma / 2) + min_std`` (its ``trunc_normal``), samples
    clipped to [-1, 1] with a straight-through gradient, so the dynamics gradient reaches
    the policy through a sampled action."""

    def __init__(
        self, feature_dim: int, action_dim: int, hidden_dim: int, layers: int = 4, min_std: float = 0.1
    ):
        super().__init__()
        self.net = elu_mlp(feature_dim, hidden_dim, 2 * action_dim, layers)
        self.min_std = min_std

    def forward(self, feature: torch.Tensor) -> TruncatedNormal:
        mean, std = self.net(feature).chunk(2, -1)
        return TruncatedNormal(torch.tanh(mean), 2 * torch.sigmoid(std / 2) + self.min_std)


class ConvDecoder(nn.Module):
    """DreamerV2's image decoder: features to a 1536-channel 1x1 map, then four stride-2
    transposed convolutions (kernels 5, 5, 6, 6) to the mean of a unit-variance Gaussian over
    a 64x64 frame in the encoder's [-0.5, 0.5] scale.

    ``output_elu``: an ELU after the last convolution too, as mastering-urlb's ``Decoder``
    appends its activation after every layer (its ``act`` for the last one is set to the
    identity and then not used); DreamerV2's last layer is linear. The predicted mean is then
    at least -1, below every target."""

    def __init__(
        self, obs_shape: tuple[int, int, int], feature_dim: int, depth: int = 48, output_elu: bool = False
    ):
        super().__init__()
        if tuple(obs_shape[1:]) != (64, 64):
            raise ValueError(
                f"frames of {obs_shape}: DreamerV2's decoder produces 64x64 frames; render at 64x64"
            )
        self.linear = nn.Linear(feature_dim, 32 * depth)
        widths = [32 * depth, 4 * depth, 2 * depth, depth, obs_shape[0]]
        layers: list[nn.Module] = []
        for i, kernel in enumerate((5, 5, 6, 6)):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], kernel, stride=2))
            if i < 3 or output_elu:
                layers.append(nn.ELU())
        self.net = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        batch = feature.shape[:-1]
        x = self.linear(feature).reshape(-1, self.linear.out_features, 1, 1)
        x = self.net(x)
        return x.reshape(*batch, *x.shape[1:])


def observation_target(observation: torch.Tensor) -> torch.Tensor:
    """What the decoder reconstructs: state vectors as they are, uint8 frames in [-0.5, 0.5]."""
    return observation.float() / 255.0 - 0.5 if observation.dtype == torch.uint8 else observation


def observation_encoder(
    obs_shape: tuple[int, ...], hidden_dim: int, layers: int = 4, cnn_depth: int = 48
) -> tuple[nn.Module, int]:
    """The encoder for an observation spec, and its embedding size: an ELU MLP ending on a
    hidden layer for state vectors ``(D,)`` (DreamerV2's ``mlp_keys`` encoder), the
    convolutional encoder of ``cnn_depth`` base channels for frames ``(C, H, W)``."""
    if len(obs_shape) == 1:
        return elu_mlp(obs_shape[0], hidden_dim, None, layers), hidden_dim
    if len(obs_shape) == 3:
        encoder = ConvEncoder(obs_shape, cnn_depth)
        return encoder, encoder.embed_dim
    raise ValueError(f"observation shape {obs_shape}: expected a state vector (D,) or frames (C, H, W)")


def observation_decoder(
    obs_shape: tuple[int, ...],
    feature_dim: int,
    hidden_dim: int,
    layers: int = 4,
    cnn_depth: int = 48,
    output_elu: bool = False,
) -> nn.Module:
    """The decoder matching :func:`observation_encoder`: latent features to the mean of a
    unit-variance Gaussian over the observation (DreamerV2's ``mse`` heads); ``output_elu``
    for frames only (:class:`ConvDecoder`)."""
    if len(obs_shape) == 1:
        return elu_mlp(feature_dim, hidden_dim, obs_shape[0], layers)
    if len(obs_shape) == 3:
        return ConvDecoder(obs_shape, feature_dim, cnn_depth, output_elu)
    raise ValueError(f"observation shape {obs_shape}: expected a state vector (D,) or frames (C, H, W)")
