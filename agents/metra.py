"""METRA: "METRA: Scalable Unsupervised RL with Metric-Aware Abstraction" (Park, Rybkin,
Levine, ICLR 2024), as a reward model on the SAC backbone.

A representation ``phi: S -> R^d`` is trained to maximise the skill-aligned displacement
of consecutive states under a temporal-distance constraint,

    max_phi  E[(phi(s') - phi(s))^T z]   s.t.   ||phi(s') - phi(s)||^2 / d <= 1,

by dual gradient descent with a learned multiplier ``lambda = exp(log_lambda)``:

    penalty   = min(1 - mean_i (phi(s')_i - phi(s)_i)^2, slack)
    loss_phi  = -mean(r + lambda.detach() * penalty)
    loss_lam  = log_lambda * mean(penalty.detach())

and the policy ``pi(a | s, z)`` is trained by SAC on ``r = (phi(s') - phi(s))^T z``,
recomputed with the updated ``phi`` in the same update. Skills are unit-norm Gaussian
vectors (continuous) or one-hot (discrete, where the reward uses the centred skill
``(z - mean(z)) * d / (d - 1)`` so that moving along no skill earns nothing), one per
episode.

Where implementations differ, this module follows the authors' code
(github.com/seohongpark/METRA at e08e762; ``tests/reference/test_metra_parity.py`` replays
its update to 1e-5):

* the constraint is on the *mean* squared difference over the ``d`` dimensions
  (``dual_dist=one`` there), i.e. ``||phi(s')-phi(s)|| <= sqrt(d)``, not the paper's
  ``<= 1``; the two differ by a constant rescaling of ``phi``;
* lambda starts at 30, slack 1e-3, and ``log lambda`` is the learned parameter (the loss
  above is linear in it); every optimiser is Adam with lr 1e-4; ``phi`` is a 2x1024 ReLU
  MLP with Xavier-uniform weights (their trajectory encoder's mean network);
* one update is: a ``phi`` step, a lambda step on the pre-step penalty, the reward
  recomputed with the new ``phi``, then SAC's critic, actor and temperature steps;
* SAC as in their code (``configs/agent/metra.yaml``): garage's tanh policy, two independent
  2x1024 Q networks with 0.5 x MSE each, batch 256, temperature from 0.01, target entropy
  ``-action_dim / 2`` (``agents/sac.py``);
* their update-to-data ratio: 50 gradient steps per epoch of 8 paths x 200 steps on state
  Ant and HalfCheetah (1/32 per step, the config's), 200 per epoch on pixel quadruped (1/8);
* transitions are one step apart: ``nstep = 1`` (the reward and the constraint are
  defined on consecutive states), whatever the preset's n-step return;
* skills last 200 agent steps (their ``max_path_length``; ``update_skill_every_step``),
  inside URLB's 1000-step episodes, so later skills start where the last one ended, not
  from a reset;
* the agent observes the global pose next to URLB's observation (``observe_pose``:
  quadruped torso x, y and heading): their state-based experiments give phi and the
  policy the full state, x-y and orientation included, while URLB's observations are
  egocentric, so phi could not tell where the agent is and the policy could not tell
  which way it faces. ``observe_pose=false`` runs METRA on URLB's observation as is.

Kept departures (docs/fidelity.md): no state normaliser (theirs is a preset
for Ant and HalfCheetah only, off on quadruped); URLB's seed frames of random actions
before the first update where they wait for 10k transitions of the policy's; URLB's time
limits bootstrapped (``bootstrap_time_limits``).

Finetuning skill rule: the pretrained policy is rolled out once with each candidate skill
(``skill_selection.candidates`` unit vectors, 48 by default, drawn from the run's seed, or
every one-hot skill) on the downstream task, and the skill with the highest task return is fixed for
finetuning (``urlb.measure.skills.select_skill``; the episodes it spends are reported as
``frames_used`` in ``skill_selection.json``). Transfer: the actor and critic trunk, as for
every SAC agent, plus ``phi`` (unused while finetuning) and the chosen skill.

Zero-shot goal reaching (``urlb.measure.skills.goal_reaching``): ``z = (phi(g) - phi(s)) /
||phi(g) - phi(s)||``, recomputed every step.

Pixels (``configs/agent/metra.yaml``'s ``pixel_encoders``): ``per_network`` (default, the
reference's ``--encoder 1``): ``phi``, the policy and each Q network read the frames through
an encoder of their own (their ``CNN``: DreamerV2's four stride-2 convolutions, ELU, frames
scaled to [0, 1], no augmentation), ``phi``'s trained by METRA's objective, each Q's by its
TD loss, the policy's by its loss. ``shared``: one DrQ-v2 encoder with random shifts, trained
by the critic, whose detached features ``phi`` reads. ``observe_pose`` and goal reaching need state
observations (the pose and the goals are entries of the state vector): on pixels the first
is refused when the agent is built, the second in :meth:`METRA.goal_skill`.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import SkillModel
from agents.parts.nets import mlp, optimise, xavier_uniform_init
from agents.parts.skills import ONE_HOT, UNIT_SPHERE


def metra_reward(
    phi: torch.Tensor, next_phi: torch.Tensor, skill: torch.Tensor, discrete: bool
) -> torch.Tensor:
    """``(phi(s') - phi(s))^T z`` ``(B,)``; for one-hot skills ``z`` is centred and rescaled
    to ``(z - mean(z)) * d / (d - 1)`` (``d = 1``: left as is)."""
    if not phi.shape == next_phi.shape == skill.shape:
        raise ValueError(f"metra_reward shapes differ: {phi.shape}, {next_phi.shape}, {skill.shape}")
    if discrete:
        d = skill.shape[1]
        skill = (skill - skill.mean(dim=1, keepdim=True)) * d / max(d - 1, 1)
    return ((next_phi - phi) * skill).sum(dim=1)


def constraint_penalty(phi: torch.Tensor, next_phi: torch.Tensor, slack: float) -> torch.Tensor:
    """``min(1 - mean_i (phi(s')_i - phi(s)_i)^2, slack)`` ``(B,)``: positive while the
    step is shorter than the bound (clipped at ``slack``), negative when it violates it."""
    return torch.clamp(1.0 - (next_phi - phi).pow(2).mean(dim=1), max=slack)


def representation_loss(reward: torch.Tensor, penalty: torch.Tensor, dual: torch.Tensor) -> torch.Tensor:
    """``-mean(r + lambda * penalty)`` with the multiplier ``dual`` held constant."""
    return -(reward + dual.detach() * penalty).mean()


def dual_loss(log_dual: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """``log_lambda * mean(penalty)`` with the penalty held constant: lambda grows while
    the constraint is violated on average and shrinks while it is slack."""
    return log_dual * penalty.detach().mean()


class METRA(SkillModel):
    # Transitions the reward and constraint are defined on: consecutive states.
    nstep = 1

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        skill_dim: int = 4,
        discrete: bool = False,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        dual_lr: float = 1e-4,
        init_dual: float = 30.0,
        dual_slack: float = 1e-3,
        update_skill_every_step: int = 0,
        observe_pose: bool = True,
        frame_encoder=None,
    ):
        """``frame_encoder``: set by the SAC backbone with ``pixel_encoders=per_network``, a
        factory of frame encoders: phi reads flat frames through one of its own (module
        docstring)."""
        super().__init__(skill_dim, update_skill_every_step, observe_pose)
        if discrete and skill_dim < 2:
            raise ValueError("discrete METRA needs skill_dim >= 2 (the centred reward of one skill is 0)")
        self.discrete = discrete
        self.prior = ONE_HOT if discrete else UNIT_SPHERE
        self.dual_slack = dual_slack
        # their trajectory encoder: garage's MLP with w_init=xavier_uniform_ (zero biases)
        if frame_encoder is None:
            self.phi = mlp(obs_dim, hidden_dim, skill_dim)
        else:  # METRA's WithEncoder(Encoder, traj_encoder): its own CNN, trained by phi's loss
            encoder = frame_encoder()
            self.phi = nn.Sequential(encoder, mlp(encoder.embed_dim, hidden_dim, skill_dim))
        self.phi.apply(xavier_uniform_init)
        self.log_dual = nn.Parameter(torch.tensor(math.log(init_dual)))
        self.phi_opt = torch.optim.Adam(self.phi.parameters(), lr=lr)
        self.dual_opt = torch.optim.Adam([self.log_dual], lr=dual_lr)

    def optimisers(self):
        return {"phi": self.phi_opt, "dual": self.dual_opt}

    # -- skills ---------------------------------------------------------------------------
    def finetune_candidates(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """Every one-hot skill (discrete), else ``count`` unit vectors from ``generator``."""
        return self.prior.candidates(count, self.skill_dim, generator).to(self.fixed_skill.device)

    def goal_skill(self, observation: torch.Tensor, goal_observation: torch.Tensor) -> torch.Tensor:
        """``(phi(g) - phi(s)) / ||phi(g) - phi(s)||``: the skill that heads for a goal;
        state observations ``(N, obs_dim)`` only."""
        if observation.ndim != 2 or goal_observation.ndim != 2:
            raise ValueError(
                f"METRA goal reaching needs state observations (N, obs_dim), got {tuple(observation.shape)}"
            )
        with torch.no_grad():
            direction = self.phi(goal_observation) - self.phi(observation)
        return direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-6)

    # -- reward and update ----------------------------------------------------------------
    def _phis(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        """phi(s) and phi(s') of a batch, in two forward passes as the reference: the loss
        reads only differences ``phi(s') - phi(s)``, so the gradients of biases that every
        state passes alike cancel to rounding noise, which Adam scales up to whole steps; one
        pass over both would sum that noise in another order than the reference."""
        return self.phi(batch["observation"]), self.phi(batch["next_observation"])

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            phi, next_phi = self._phis(batch)
        return metra_reward(phi, next_phi, batch["skill"], self.discrete)

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        phi, next_phi = self._phis(batch)
        reward = metra_reward(phi, next_phi, batch["skill"], self.discrete)
        penalty = constraint_penalty(phi, next_phi, self.dual_slack)
        dual = self.log_dual.exp().detach()  # the multiplier this update's phi loss used
        loss = representation_loss(reward, penalty, dual)
        optimise(self.phi_opt, loss)
        lam_loss = dual_loss(self.log_dual, penalty)
        optimise(self.dual_opt, lam_loss)
        step = (next_phi - phi).detach()
        return {
            "metra_loss": loss.detach(),
            "metra_reward": reward.mean().detach(),
            "metra_penalty": penalty.mean().detach(),
            "metra_dual": dual,
            "metra_dual_loss": lam_loss.detach(),
            "metra_step_norm": step.norm(dim=1).mean(),
        }
