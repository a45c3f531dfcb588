"""SMM: "Efficient Exploration via State Marginal Matching" (Lee et al., 2019), on the DDPG
backbone as URLB runs it.

A mixture of ``skill_dim`` one-hot skills ``z`` (one per episode), a VAE density ``q(s|z)``
over ``(s, z)`` (encoder and decoder of two 150-unit layers, code 128, KL weight 0.5,
Adam 1e-2) and a skill discriminator ``d(z|s)`` (obs -> H -> H -> K, Adam 1e-3). With a
uniform target ``p*(s)`` (dropped) the reward is::

    r = c_s * ||VAE(s, z) - (s, z)||^2  +  c_z * log K  +  c_zs * CE(d(.|s), z)

the reconstruction error standing for ``-log q(s|z)`` and the discriminator's
cross-entropy for ``H[z|s]``; all coefficients are 1 (URLB's and the authors' released
code, which both add the discriminator's cross-entropy: ``latent_cond_ent_coef=-1``
instead rewards states from which the skill is predictable). Rewards are computed on the
batch's first state ``s``. ``reward_timing``: ``pre_step`` (default, URLB's) takes the
reconstruction error and cross-entropy of the update's own forward pass, before its VAE and
discriminator steps (one VAE noise draw per update); ``post_step`` recomputes them after
the steps, with fresh VAE noise.

Skills: a new random skill at the start of each episode, while pretraining and, by
default, while finetuning (``finetune_skill="random"``), which is what URLB's code does:
its ``update_meta`` calls the skill search it codes (``update_meta_ft``: each skill for one
episode, then the best, "during fine-tuning") under the inverted condition ``reward_free``,
i.e. while pretraining, and even there the search never advances, because the loop resets
the env and draws a fresh skill (``init_meta``) before ``update_meta`` sees an episode's last
step. ``finetune_skill="search"`` runs the intended search before finetuning: the skill
whose deterministic rollout of the pretrained policy earns the most task reward, each skill
tried once (``finetune_candidates`` = all K skills, ``urlb.measure.skills.select_skill``),
its frames recorded as ``extra_frames`` beside the finetuning budget.
Evaluation (``evaluation_skill``): ``shared`` (default, URLB's) runs every evaluation
episode with one skill drawn at its start; ``schedule`` draws as in training.

Pixels: VAE and discriminator read the shared encoder's features, detached
(``trains_encoder`` False: the critic's loss trains the encoder). A departure: URLB's SMM
lets the VAE loss step the encoder (``update_vae`` steps ``encoder_opt``) and detaches the
critic's features.

Transfer to finetuning: the backbone's, and with ``search`` the chosen skill.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import SkillModel
from agents.parts.nets import TORCH_RANDOMNESS, Randomness, mlp, optimise, orthogonal_init
from agents.parts.skills import ONE_HOT


class SkillVAE(nn.Module):
    """SMM's VAE over ``x = (s, z)``: Gaussian code, squared-error reconstruction."""

    def __init__(self, input_dim: int, hidden_dim: int = 150, code_dim: int = 128, beta: float = 0.5):
        super().__init__()
        self.beta, self.code_dim = beta, code_dim
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 2 * code_dim),
        )
        self.decoder = mlp(code_dim, hidden_dim, input_dim)
        self.apply(orthogonal_init)

    def forward(
        self, x: torch.Tensor, randomness: Randomness = TORCH_RANDOMNESS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (beta * KL + mean squared error) and the per-sample summed squared error,
        the code drawn with noise from ``randomness``."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        code = mu + randomness.normal(mu.shape, mu) * (0.5 * logvar).exp()
        squared_error = (self.decoder(code) - x).square()
        return vae_loss(mu, logvar, squared_error, self.beta), squared_error.sum(dim=-1)


def vae_loss(
    mu: torch.Tensor, logvar: torch.Tensor, squared_error: torch.Tensor, beta: float
) -> torch.Tensor:
    """``beta * KL(N(mu, exp(logvar)) || N(0, I))`` (summed over the code, mean over the
    batch) plus the mean squared reconstruction error."""
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=-1).mean()
    return beta * kl + squared_error.mean()


def smm_reward(
    reconstruction_error: torch.Tensor,
    discriminator_ce: torch.Tensor,
    skill_dim: int,
    state_ent_coef: float = 1.0,
    latent_ent_coef: float = 1.0,
    latent_cond_ent_coef: float = 1.0,
) -> torch.Tensor:
    """``c_s * reconstruction_error + c_z * log K + c_zs * discriminator_ce``, all ``(B,)``."""
    return (
        state_ent_coef * reconstruction_error
        + latent_ent_coef * math.log(skill_dim)
        + latent_cond_ent_coef * discriminator_ce
    )


class SMM(SkillModel):
    prior = ONE_HOT
    randomness = TORCH_RANDOMNESS  # the VAE's noise (agents.parts.nets.Randomness)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        skill_dim: int = 4,
        hidden_dim: int = 1024,
        discriminator_lr: float = 1e-3,
        vae_lr: float = 1e-2,
        vae_beta: float = 0.5,
        state_ent_coef: float = 1.0,
        latent_ent_coef: float = 1.0,
        latent_cond_ent_coef: float = 1.0,
        update_skill_every_step: int = 0,
        reward_timing: str = "pre_step",
        finetune_skill: str = "random",
        evaluation_skill: str = "shared",
    ):
        super().__init__(skill_dim, update_skill_every_step)
        if skill_dim < 2:
            raise ValueError(f"SMM needs at least 2 skills, got {skill_dim}")
        for name, value, allowed in (
            ("reward_timing", reward_timing, ("pre_step", "post_step")),
            ("finetune_skill", finetune_skill, ("random", "search")),
            ("evaluation_skill", evaluation_skill, ("shared", "schedule")),
        ):
            if value not in allowed:
                raise ValueError(f"SMM {name} must be one of {allowed}, got {value!r}")
        self.reward_timing, self.finetune_skill = reward_timing, finetune_skill
        self.evaluation_skill = evaluation_skill
        # The pre-step reward of the last update and the observation tensor it belongs to
        # (its storage: the backbone may hand the reward a detached view of the same batch).
        self._pending: tuple[int, torch.Size, torch.Tensor] | None = None
        self.coefs = (state_ent_coef, latent_ent_coef, latent_cond_ent_coef)
        self.vae = SkillVAE(obs_dim + skill_dim, beta=vae_beta)
        self.discriminator = mlp(obs_dim, hidden_dim, skill_dim)
        self.discriminator.apply(orthogonal_init)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=vae_lr)
        self.discriminator_opt = torch.optim.Adam(self.discriminator.parameters(), lr=discriminator_lr)

    def optimisers(self):
        return {"vae": self.vae_opt, "discriminator": self.discriminator_opt}

    def finetune_candidates(self, count: int, generator: torch.Generator) -> torch.Tensor | None:
        """``search``: every skill, each tried once; ``random``: None (a random skill per
        episode, as while pretraining)."""
        if self.finetune_skill == "random":
            return None
        return self.prior.candidates(count, self.skill_dim, generator).to(self.fixed_skill.device)

    def _terms(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """VAE loss, per-sample reconstruction error and discriminator cross-entropy."""
        observation, skill = batch["observation"], batch["skill"]
        x = torch.cat([observation, skill], dim=-1)
        vae_loss_value, reconstruction_error = self.vae(x, self.randomness)
        ce = nn.functional.cross_entropy(
            self.discriminator(observation), skill.argmax(dim=1), reduction="none"
        )
        return vae_loss_value, reconstruction_error, ce

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        """The pre-step reward of the update that just ran on this batch (``pre_step``), or
        the reward recomputed with the current networks."""
        observation, pending, self._pending = batch["observation"], self._pending, None
        if pending is not None and pending[:2] == (observation.data_ptr(), observation.shape):
            return pending[2]
        with torch.no_grad():
            _, reconstruction_error, ce = self._terms(batch)
        return smm_reward(reconstruction_error, ce, self.skill_dim, *self.coefs)

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        vae_loss_value, reconstruction_error, ce = self._terms(batch)
        if self.reward_timing == "pre_step":
            reward = smm_reward(reconstruction_error.detach(), ce.detach(), self.skill_dim, *self.coefs)
            observation = batch["observation"]
            self._pending = (observation.data_ptr(), observation.shape, reward)
        optimise(self.vae_opt, vae_loss_value)
        optimise(self.discriminator_opt, ce.mean())
        return {
            "smm_vae_loss": vae_loss_value.detach(),
            "smm_discriminator_loss": ce.mean().detach(),
            "smm_reconstruction_error": reconstruction_error.mean().detach(),
        }
