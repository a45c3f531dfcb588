"""HILP: Hilbert representations and the latent policy on them, evaluated zero-shot.

Park, Kreiman & Levine, "Foundation Policies with Hilbert Representations", ICML 2024, as the
authors' zero-shot RL code runs it (github.com/seohongpark/HILP, ``hilp_zsrl``: the ``sf`` agent
with ``feature_learner=hilp``, PyTorch, built on controllable_agent). phi: S -> R^d is learnt as
a goal-conditioned value whose distance is temporal (two phis and their Polyak targets, IQL's
expectile value step), then successor features F of phi under pi(s, z) and the policy:

    V(s, g) = -||phi(s) - phi(g)||,   min_phi  sum_i E[ |tau - 1(A < 0)| (r + g' V_i'(s', g) - V_i(s, g))^2 ]
    min_F  sum_i E[ |F_i(s, a, z) - (phi_t + g F'(s', a', z))|^2 ],   max_pi  min_i F_i(s, pi(s, z), z)^T z

with r = -1 until s = g, g drawn from the same episode (Geometric(1 - future) steps ahead) or,
with probability ``random_goal``, anywhere in the dataset; phi_t = phi(s') (``feature_type=state``,
the reference's zero-shot default) or phi(s') - phi(s) (``diff``: the paper's reward
``(phi(s') - phi(s))^T z``, the reference's HILP-G runs); F' is the target head whose F'^T z is
smaller. The features read phi_1 minus a running mean of it. z is drawn on the sphere, a
``mix_ratio`` share replaced by ``Cov^+ phi_t`` of permuted dataset states. Zero-shot, a task's z
is the least-squares regression of its rewards on phi_t, normalised; a goal's is
``normalise(phi(g) - phi(s))``, recomputed each step.

Settings are the reference's (``SFAgentConfig`` and the README's walker command; the config's
header names each). ``q_loss=true`` regresses F^T z on its target instead of F (the README's
quadruped and jaco runs). Parity: ``tests/reference/test_hilp_parity.py`` replays the
reference's updates with its draws (departures: docs/fidelity.md).

Pixels (the reference's pixel runs): s, s' and g are each shifted and encoded (in that order);
the encoder learns through s (F and phi) and g (phi), s' is detached; "g reached" compares the
shifted encodings, as the reference does. Parity: ``tests/reference/test_zero_shot_pixel_parity.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tensordict import TensorDict

from agents.parts.latent import (
    goal_distance_value,
    hilp_value_loss,
    mix_latents,
    on_sphere,
    regress_latent,
    state_map,
)
from agents.parts.nets import soft_update
from agents.zero_shot import LatentAgent

FEATURE_TYPES = ("state", "diff")


class HILPAgent(LatentAgent):
    """HILP on URLB's domains. Args as :class:`agents.zero_shot.LatentAgent`'s, and:

    Args:
        phi_hidden_dim: width of phi's layers.
        lr_coef: phi's learning rate is ``lr_coef * lr``.
        hilp_discount: gamma' of the goal-conditioned value.
        hilp_expectile: tau of the value's expectile loss.
        phi_target_tau: Polyak rate of phi's targets.
        running_mean_rate: rate of the running mean subtracted from phi's features.
        future, random_goal: goal sampling (``DatasetSampler.sample_with_goals``).
        feature_type: ``state`` (phi(s')) or ``diff`` (phi(s') - phi(s)).
        q_loss: regress F^T z rather than F.
        copy_phi_targets: phi's targets start as copies of the phis; False (the reference's): they
            start from their own random initialisation (the reference re-initialises every layer
            after copying).
    """

    def __init__(
        self,
        obs_dim,
        action_dim: int,
        z_dim: int = 50,
        hidden_dim: int = 1024,
        feature_dim: int = 512,
        phi_hidden_dim: int = 512,
        lr: float = 1e-4,
        lr_coef: float = 5.0,
        batch_size: int = 1024,
        stddev: float = 0.2,
        stddev_clip: float = 0.3,
        sf_target_tau: float = 0.01,
        discount: float = 0.98,
        mix_ratio: float = 0.5,
        hilp_discount: float = 0.96,
        hilp_expectile: float = 0.5,
        phi_target_tau: float = 0.005,
        running_mean_rate: float = 0.005,
        future: float = 0.99,
        random_goal: float = 0.375,
        feature_type: str = "state",
        q_loss: bool = False,
        copy_phi_targets: bool = False,
        offline_updates: int = 1_000_000,
        encoder_depth: int | None = None,
        aug_pad: int | None = None,
        finetune_lr: float = 1e-4,
        finetune_scale_reward: bool = True,
        finetune_seed_actions: str = "policy",
    ):
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type={feature_type!r}; use one of {', '.join(FEATURE_TYPES)}")
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
            sf_target_tau,
            discount,
            mix_ratio,
            offline_updates,
            encoder_depth,
            aug_pad,
            finetune_lr=finetune_lr,
            finetune_scale_reward=finetune_scale_reward,
            finetune_seed_actions=finetune_seed_actions,
        )
        self.hilp_discount, self.hilp_expectile = hilp_discount, hilp_expectile
        self.phi_target_tau, self.running_mean_rate = phi_target_tau, running_mean_rate
        self.future, self.random_goal = future, random_goal
        self.feature_type, self.q_loss = feature_type, q_loss
        repr_dim = self.repr_dim
        self.phis = torch.nn.ModuleList([state_map(repr_dim, phi_hidden_dim, z_dim) for _ in range(2)])
        self.phi_targets = torch.nn.ModuleList([state_map(repr_dim, phi_hidden_dim, z_dim) for _ in range(2)])
        if copy_phi_targets:
            self.phi_targets.load_state_dict(self.phis.state_dict())
        self.phi_targets.requires_grad_(False)
        self.register_buffer("running_mean", torch.zeros(z_dim))
        self.sf_opt = torch.optim.Adam(self.forward_map.parameters(), lr=lr)
        self.phi_opt = torch.optim.Adam(self.phis.parameters(), lr=lr_coef * lr)

    # The reference's shift order: s, s', then the goal.
    encoded_fields = (("observation", True), ("next_observation", False), ("goal", True))

    def optimisers(self):
        return {"actor": self.actor_opt, "sf": self.sf_opt, "phi": self.phi_opt} | self.encoder_optimisers()

    # -- the representation -------------------------------------------------------------------------
    def phi(self, observation: torch.Tensor) -> torch.Tensor:
        """phi_1(s) minus its running mean ``(N, z_dim)``: what F and z are built on."""
        return self.phis[0](observation) - self.running_mean

    def features(self, observation, next_observation) -> torch.Tensor:
        """phi_t of transitions: phi(s') (``state``) or phi(s') - phi(s) (``diff``)."""
        if self.feature_type == "state":
            return self.phi(next_observation)
        return self.phi(next_observation) - self.phi(observation)

    def values(self, phis, observation, goal) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(goal_distance_value(phi(observation), phi(goal)) for phi in phis)

    # -- zero-shot ----------------------------------------------------------------------------------
    @torch.no_grad()
    def infer_latent(self, observation, next_observation, reward) -> torch.Tensor:
        # phi_t reads s only for diff: frames that would go unread are not encoded
        observation = self.encode(observation) if self.feature_type == "diff" else observation
        return regress_latent(self.features(observation, self.encode(next_observation)), reward)

    def reward_features(self, observation, next_observation) -> torch.Tensor:
        observation = self.encode(observation) if self.feature_type == "diff" else observation
        return self.features(observation, self.encode(next_observation))

    @torch.no_grad()
    def goal_latent(self, observation, goal) -> torch.Tensor:
        return on_sphere(self.phi(self.encode(goal)) - self.phi(self.encode(observation)))

    # -- learning -----------------------------------------------------------------------------------
    def sample_batch(self, sampler) -> TensorDict:
        batch = sampler.sample_with_goals(self.batch_size, self.future, self.random_goal)
        batch["discount"] = self.discount * (~batch["terminated"]).to(batch["action"].dtype)
        return batch

    def mix_dataset_latents(self, batch: TensorDict, z: torch.Tensor) -> torch.Tensor:
        """``phi_t Cov(phi_t)^+`` of the permuted batch replaces z where the mix mask holds."""
        perm, mask = self.permutation(z), self.mix_mask(z)
        with torch.no_grad():
            phi = self.features(batch["observation"][perm], batch["next_observation"][perm])
        inverse = torch.linalg.pinv(phi.T @ phi / len(phi))
        return mix_latents(z, phi @ inverse, mask)

    def update_representation(self, batch: TensorDict, z: torch.Tensor) -> dict[str, torch.Tensor]:
        observation, next_observation = batch["observation"], batch["next_observation"]
        next_action = self.next_action(next_observation, z)
        with torch.no_grad():
            next_f1, next_f2 = self.forward_target(next_observation, z, next_action)
            target_phi = self.features(observation, next_observation)
            smaller = ((next_f1 * z).sum(-1) < (next_f2 * z).sum(-1))[:, None]
            target_f = target_phi + batch["discount"][:, None] * torch.where(smaller, next_f1, next_f2)
        f1, f2 = self.forward_map(observation, z, batch["action"])
        if self.q_loss:
            target_q = (target_f * z).sum(-1)
            sf_loss = F.mse_loss((f1 * z).sum(-1), target_q) + F.mse_loss((f2 * z).sum(-1), target_q)
        else:
            sf_loss = F.mse_loss(f1, target_f) + F.mse_loss(f2, target_f)
        phi_loss, metrics = self.value_loss(observation, next_observation, batch["goal"])
        # sf and phi: disjoint parameters, each loss's own gradients; the pixel encoder: the sum
        # of both losses' (the reference's two backward calls)
        self.step_representation(sf_loss + phi_loss, self.sf_opt, self.phi_opt)
        return metrics | {"sf_loss": sf_loss.detach(), "phi_norm": target_phi.norm(dim=-1).mean()}

    def value_loss(self, observation, next_observation, goal):
        """phi's loss; then, as the reference does before stepping, the targets' Polyak step and
        the running mean's update (with phi_1 before the step)."""
        reached = (observation - goal).norm(dim=-1) < 1e-6
        with torch.no_grad():
            target_next = self.values(self.phi_targets, next_observation, goal)
            target_values = self.values(self.phi_targets, observation, goal)
        values = self.values(self.phis, observation, goal)
        loss, metrics = hilp_value_loss(
            values, target_next, target_values, reached, self.hilp_discount, self.hilp_expectile
        )
        soft_update(self.phi_targets, self.phis, self.phi_target_tau)
        with torch.no_grad():
            batch_mean = self.phis[0](observation).mean(0)
            self.running_mean.lerp_(batch_mean, self.running_mean_rate)
        return loss, metrics
