"""Pieces of the pretrained decision transformer (``agents/pdt.py``; Xie et al., "Future-conditioned
Unsupervised Pretraining for Decision Transformer", ICML 2023): its pure losses and return
targets, the reference's return-weighted episode windows, and the future encoder.

Imports: torch, agents.parts and urlb.data.datasets (episode boundaries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn

from agents.parts.nets import gaussian_kl
from agents.parts.transformer import SEQUENCE_RANDOMNESS, GaussianHead, TokenTransformer, causal_mask
from urlb.data.datasets import episode_boundaries


# -- losses ---------------------------------------------------------------------------------------
def pdt_loss(action_log_prob, entropy, temperature, posterior, prior, kl_weight, return_nll=None):
    """PDT's loss (the reference trainer's pretrain and finetune losses) and its metrics.

    Args:
        action_log_prob: ``(B, K)`` log pi(a_t | ...) of the data's actions.
        entropy: ``(B, K)`` one-sample estimate of the policy's entropy.
        temperature: ``()`` alpha, a constant here.
        posterior, prior: ``(mean, log_std)`` pairs, each ``(B, K, Z)``, of q(z_t | future)
            and p(z_t | s_t). The KLs are averaged over z's dimensions, as the reference does.
        kl_weight: beta on KL(q || N(0, I)).
        return_nll: ``(B, K)`` -log f(R_t | s_t, z_t) when finetuning, else None.
    """
    if entropy.shape != action_log_prob.shape or posterior[0].shape[:2] != action_log_prob.shape:
        raise ValueError(
            f"pdt_loss shapes: {tuple(action_log_prob.shape)}, {tuple(entropy.shape)}, "
            f"{tuple(posterior[0].shape)}"
        )
    zeros = torch.zeros_like(posterior[0])
    kl_standard = gaussian_kl(*posterior, zeros, zeros).mean()
    prior_kl = gaussian_kl(posterior[0].detach(), posterior[1].detach(), *prior).mean()
    nll, entropy_mean = -action_log_prob.mean(), entropy.mean()
    loss = nll - temperature * entropy_mean + kl_weight * kl_standard + prior_kl
    metrics = {"action_nll": nll, "entropy": entropy_mean, "kl_standard": kl_standard, "prior_kl": prior_kl}
    if return_nll is not None:
        loss = loss + return_nll.mean()
        metrics["return_nll"] = return_nll.mean()
    return loss, {k: v.detach() for k, v in metrics.items()} | {"loss": loss.detach()}


def horizon_return(reward: torch.Tensor, context_length: int) -> torch.Tensor:
    """Return targets ``(B, K)`` from window rewards ``(B, 2K)``: for context position i, the
    mean reward over window steps ``i .. K + i``, from s_t to the last step z_t encodes."""
    if reward.shape[1] != 2 * context_length:
        raise ValueError(f"horizon_return needs (B, {2 * context_length}) rewards, got {tuple(reward.shape)}")
    total = F.pad(reward.cumsum(1), (1, 0))
    span = context_length + 1
    return (total[:, span : span + context_length] - total[:, :context_length]) / span


def returns_to_go(reward: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``(M,)`` each row's sum of rewards from it to the end of its episode, for rows ``(M,)``
    split into episodes ``starts[i] <= row < ends[i]`` (the reference's ``discount_cumsum``
    with gamma 1), in float64 before rounding once."""
    total = F.pad(reward.double().cumsum(0), (1, 0))  # total[r]: rewards of rows < r
    lengths = ends - starts
    episode_end = total[ends].repeat_interleave(lengths)
    return (episode_end - total[:-1]).to(reward.dtype)


def select_by_return(candidates: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """The candidate ``(N, Z)`` of highest predicted return, per world, from ``(M, N, Z)``
    candidates and their ``(M, N)`` predicted returns."""
    best = predicted.argmax(0)  # (N,)
    return candidates.gather(0, best[None, :, None].expand(1, *candidates.shape[1:]))[0]


def temperature_loss(log_temperature: torch.Tensor, entropy: torch.Tensor, target_entropy: float):
    """``alpha (H - target)`` with H a constant: alpha shrinks while the entropy is above target."""
    return log_temperature.exp() * (entropy.detach() - target_entropy)


# -- the reference's finetuning data --------------------------------------------------------------
class EpisodeWindows:
    """Windows of the replay's complete episodes (those that ended with a flag), read again when
    ``version`` changes (the agent's count of ended episodes): the reference's finetuning data,
    a replay of whole trajectories.
    ``sample`` draws episodes uniformly over their windows, or weighted by return (``R - min R +
    1e-6``, the reference's ``sample_trajs``), a window uniformly within each, and returns the
    windows with every step's return-to-go."""

    def __init__(self):
        self.version, self.data = None, None

    def refresh(self, replay, task_index: int, length: int, version: int) -> None:
        if version == self.version and self.data is not None:
            return
        self.version, data = version, replay.to_dataset()
        starts, ends = episode_boundaries(data)
        reward = data["task_reward"][:, task_index]
        rtg = returns_to_go(reward, starts, ends)
        complete = (data["terminated"] | data["truncated"])[ends - 1] & (ends - starts >= length)
        starts, ends = starts[complete], ends[complete]
        if len(starts) == 0:
            raise ValueError(
                f"no complete episode of {length} steps in the replay yet: the reference's finetuning "
                "settings (return_to_go, return_weighted) need whole episodes before the first update"
            )
        keys = ("observation", "action", "task_reward")
        self.data = {key: data[key] for key in keys} | {"return_to_go": rtg}
        self.starts, self.windows = starts, ends - starts - length + 1
        self.returns = rtg[starts]

    def sample(self, batch_size: int, length: int, weighted: bool) -> TensorDict:
        weights = self.returns - self.returns.min() + 1e-6 if weighted else self.windows.double()
        episode = torch.multinomial(weights, batch_size, replacement=True)
        offset = (torch.rand(batch_size, device=episode.device) * self.windows[episode]).long()
        rows = (self.starts[episode] + offset)[:, None] + torch.arange(length, device=episode.device)
        return TensorDict({k: v[rows] for k, v in self.data.items()}, batch_size=rows.shape)


# -- networks -------------------------------------------------------------------------------------
class FutureEncoder(nn.Module):
    """q(z | future): a causal transformer over future (s, a) tokens; z_i is read at a_i."""

    def __init__(self, obs_dim, action_dim, z_dim, width, layers, heads, dropout):
        super().__init__()
        self.embed_state, self.embed_action = nn.Linear(obs_dim, width), nn.Linear(action_dim, width)
        self.transformer = TokenTransformer(width, layers, heads, dropout)
        self.head = GaussianHead(width, z_dim)

    def forward(self, observation: torch.Tensor, action: torch.Tensor, randomness=SEQUENCE_RANDOMNESS):
        """``(B, K, obs)``, ``(B, K, A)`` future steps -> ``(mean, log_std)`` ``(B, K, Z)``."""
        batch, steps = action.shape[:2]
        tokens = torch.stack([self.embed_state(observation), self.embed_action(action)], 2)
        out = self.transformer(tokens.flatten(1, 2), causal_mask(2 * steps, action.device), randomness)
        return self.head(out.view(batch, steps, 2, -1)[:, :, 1])
