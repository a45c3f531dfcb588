"""FB: forward-backward representations, a behaviour foundation model evaluated zero-shot.

Touati, Rapin & Ollivier, "Does Zero-Shot Reinforcement Learning Exist?", ICLR 2023, as their
reference code runs it (github.com/facebookresearch/controllable_agent,
``url_benchmark/agent/fb_ddpg.py``, ``fb_modules.py``). The successor measure of pi_z is
factored as M^{pi_z}(s, a, ds') ~ F(s, a, z)^T B(s') rho(ds'), learnt by the TD loss on
``M_i[s, t] = F_i(s_s, a_s, z_s)^T B(s'_t)`` over a batch, plus an orthonormality regulariser on B:

    min_{F,B}  1/2 sum_i E_{s != t}[(M_i - g min_j M'_j)^2] - sum_i E_s[M_i[s, s]]
               + lambda (E_{s != t}[(B_s^T B_t)^2] - 2 E_s[|B_s|^2])
    max_pi     min_i F_i(s, pi(s, z), z)^T z

z is drawn on the sphere of radius sqrt(z_dim), a ``mix_ratio`` share replaced by B of
(permuted) dataset states; F and B have Polyak targets (``fb_target_tau``). Zero-shot, a task's
z is ``sqrt(d) normalise(mean_i r_i B(s'_i))`` over reward-labelled dataset transitions; a
goal's is ``sqrt(d) normalise(B(g))``. B's output lies on the same sphere (``norm_z``).

Settings are the reference's ``FBDDPGAgentConfig`` defaults (the config's header names each);
each offline update is one of the reference's updates: its 1M gradient steps make 500k updates
(``update_every_steps=2`` skips odd steps), ``offline_updates`` counts updates made. Parity:
``tests/reference/test_fb_parity.py`` replays the reference's updates with its draws.

Pixels: as HILP's copy of FB runs them (``hilp_zsrl``'s ``agent/fb_ddpg.py``; controllable_agent
builds an encoder but its update never encodes): the states B mixes in are the batch's
observations permuted (the permutation drawn before the shifts) and shifted and encoded on
their own; the encoder learns through F's input s alone (s', the mixed states: detached).
Parity: ``tests/reference/test_zero_shot_pixel_parity.py``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.parts.latent import (
    fb_loss,
    mix_latents,
    on_sphere,
    orthonormality_loss,
    reward_weighted_latent,
    state_map,
)
from agents.parts.nets import soft_update
from agents.zero_shot import LatentAgent


class BackwardMap(torch.nn.Module):
    """B(s) ``(N, z_dim)`` on the sphere of radius sqrt(z_dim) (``norm_z``)."""

    def __init__(self, obs_dim: int, z_dim: int, hidden_dim: int):
        super().__init__()
        self.net = state_map(obs_dim, hidden_dim, z_dim)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return on_sphere(self.net(observation))


class FBAgent(LatentAgent):
    """FB on URLB's domains. Args as :class:`agents.zero_shot.LatentAgent`'s, and:

    Args:
        backward_hidden_dim: width of B's layers (the reference's 526).
        lr_coef: B's learning rate is ``lr_coef * lr``.
        ortho_coef: lambda, the orthonormality regulariser's weight.
    """

    def __init__(
        self,
        obs_dim,
        action_dim: int,
        z_dim: int = 50,
        hidden_dim: int = 1024,
        feature_dim: int = 512,
        backward_hidden_dim: int = 526,
        lr: float = 1e-4,
        lr_coef: float = 1.0,
        batch_size: int = 1024,
        stddev: float = 0.2,
        stddev_clip: float = 0.3,
        fb_target_tau: float = 0.01,
        discount: float = 0.99,
        mix_ratio: float = 0.5,
        ortho_coef: float = 1.0,
        offline_updates: int = 500_000,
        encoder_depth: int | None = None,
        aug_pad: int | None = None,
        finetune_lr: float = 1e-4,
        finetune_scale_reward: bool = True,
        finetune_seed_actions: str = "policy",
    ):
        super().__init__(
            obs_dim,
            action_dim,
            z_dim,
            hidden_dim,
            feature_dim,
            lr,
            batch_size,
            stddev,
            stddev_clip,
            fb_target_tau,
            discount,
            mix_ratio,
            offline_updates,
            encoder_depth,
            aug_pad,
            finetune_lr=finetune_lr,
            finetune_scale_reward=finetune_scale_reward,
            finetune_seed_actions=finetune_seed_actions,
        )
        self.ortho_coef = ortho_coef
        self.backward_map = BackwardMap(self.repr_dim, z_dim, backward_hidden_dim)
        self.backward_target = BackwardMap(self.repr_dim, z_dim, backward_hidden_dim)
        self.backward_target.load_state_dict(self.backward_map.state_dict())
        self.backward_target.requires_grad_(False)
        self.fb_opt = torch.optim.Adam(
            [
                {"params": self.forward_map.parameters()},
                {"params": self.backward_map.parameters(), "lr": lr_coef * lr},
            ],
            lr=lr,
        )

    # The reference's shift order; ``mix_observation``: the permuted states B mixes in.
    encoded_fields = (("observation", True), ("next_observation", False), ("mix_observation", False))

    def optimisers(self):
        return {"actor": self.actor_opt, "fb": self.fb_opt} | self.encoder_optimisers()

    # -- zero-shot ----------------------------------------------------------------------------------
    @torch.no_grad()
    def infer_latent(self, observation, next_observation, reward) -> torch.Tensor:
        """z = normalise(mean_i r_i B(s'_i)) (the reference's ``infer_meta``: next states)."""
        return reward_weighted_latent(self.backward_map(self.encode(next_observation)), reward)

    def reward_features(self, observation, next_observation) -> torch.Tensor:
        return self.backward_map(self.encode(next_observation))

    @torch.no_grad()
    def goal_latent(self, observation, goal) -> torch.Tensor:
        return self.backward_map(self.encode(goal))

    # -- learning -----------------------------------------------------------------------------------
    def encode_batch(self, batch: TensorDict) -> TensorDict:
        """The permutation of the states B mixes in is drawn first (``mix_observation``); then
        the frames are shifted and encoded."""
        if self.mix_ratio > 0:
            batch["mix_observation"] = batch["observation"][self.permutation(batch["action"])]
        return super().encode_batch(batch)

    def mix_dataset_latents(self, batch: TensorDict, z: torch.Tensor) -> torch.Tensor:
        """B of the permuted batch's states replaces z where the mix mask holds."""
        mask = self.mix_mask(z)
        with torch.no_grad():
            candidates = self.backward_map(batch["mix_observation"])
        return mix_latents(z, candidates, mask)

    def update_representation(self, batch: TensorDict, z: torch.Tensor) -> dict[str, torch.Tensor]:
        observation, next_observation = batch["observation"], batch["next_observation"]
        next_action = self.next_action(next_observation, z)
        with torch.no_grad():
            target_f1, target_f2 = self.forward_target(next_observation, z, next_action)
            target_b = self.backward_target(next_observation)
            target_m = torch.min(target_f1 @ target_b.T, target_f2 @ target_b.T)
        f1, f2 = self.forward_map(observation, z, batch["action"])
        b = self.backward_map(next_observation)
        loss, metrics = fb_loss(f1 @ b.T, f2 @ b.T, target_m, batch["discount"])
        orth, orth_metrics = orthonormality_loss(b)
        loss = loss + self.ortho_coef * orth
        self.step_representation(loss, self.fb_opt)
        return metrics | orth_metrics | {"fb_loss": loss.detach(), "orth_loss": orth.detach()}

    def update_targets(self) -> None:
        super().update_targets()
        soft_update(self.backward_target, self.backward_map, self.target_tau)
