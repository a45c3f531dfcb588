"""APS: "Active Pretraining with Successor Features" (Liu & Abbeel, ICML 2021), on the DDPG
backbone as URLB runs it.

A state feature ``phi(s')`` (obs -> H -> H -> 10) and a task vector ``w`` on the unit
sphere (the skill, a new random one every 5 env steps) define a successor-feature agent:
the Q heads output 10 successor features ``psi(s, a)`` and ``Q = psi . w``
(``DoubleQCritic`` with ``task_dim``, switched on by ``successor_features``). ``phi`` is
trained to maximise ``w . phi(s') / ||phi(s')||`` for the skill that reached ``s'``, and
the reward is that exploitation term plus APT's particle entropy of the raw features::

    r = log(1 + mean_{j<=12} max(||phi(s') - phi_j|| / c - 1e-4, 0))  +  w . phi(s') / ||phi(s')||

with ``c`` the running mean of the kNN distances (``agents.parts.intrinsic.ParticleEntropy``).

Finetuning (the task-vector regression): skills keep being drawn at random for the first
``num_init_frames`` frames (4096; they fall inside the 4000 seed frames of random actions),
then ``w`` is fitted once by least squares ``phi(s') w ~ r`` on up to ``lstsq_samples``
transitions of the finetuning replay (one-step rewards of the task, normalised features),
normalised, and fixed for the rest of finetuning and for evaluation (``adapt``; saved with
the weights, so resume keeps it). URLB's released code solves the transposed problem
(``lstsq(r, phi)``, which gives ``w`` proportional to ``sum r phi``) on n-step returns; we
solve the regression the paper states.

Pixels: ``phi`` reads the shared encoder's features, detached (``trains_encoder`` False:
the critic's loss trains the encoder). A departure: URLB's APS encodes ``s'`` with
gradients, lets its ``phi`` loss step the encoder (``update_aps`` steps ``encoder_opt``) and
detaches the critic's features. The regression encodes one-step transitions drawn by
``replay.sample_transitions`` (a pixel replay stores no flat dataset) with the backbone's
encoder, unshifted.

Transfer to finetuning: the backbone's (encoder, actor, critic trunk; the successor-feature
heads start fresh) and ``phi``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import SkillModel
from agents.metra import unit_skills
from agents.parts.intrinsic import ParticleEntropy
from agents.parts.nets import mlp, optimise, orthogonal_init


def regress_task(features: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """The unit vector along the least-squares ``w`` of ``features @ w ~ rewards``
    (``(M, D)``, ``(M,)``)."""
    w = torch.linalg.lstsq(features, rewards[:, None]).solution.squeeze(1)
    return w / w.norm().clamp_min(1e-12)


class APS(SkillModel):
    successor_features = True

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        skill_dim: int = 10,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        update_skill_every_step: int = 5,
        knn_k: int = 12,
        knn_average: bool = True,
        knn_normaliser: str | None = "mean",
        knn_clip: float = 1e-4,
        num_init_frames: int = 4096,
        lstsq_samples: int = 4096,
    ):
        super().__init__(skill_dim, update_skill_every_step)
        self.num_init_frames, self.lstsq_samples = num_init_frames, lstsq_samples
        self.features = mlp(obs_dim, hidden_dim, skill_dim)
        self.features.apply(orthogonal_init)
        self.entropy = ParticleEntropy(knn_k, knn_average, knn_normaliser, knn_clip)
        self.optimiser = torch.optim.Adam(self.features.parameters(), lr=lr)

    def optimisers(self):
        return {"features": self.optimiser}

    def sample_skills(self, num: int, device) -> torch.Tensor:
        return unit_skills(num, self.skill_dim, device)

    def evaluation_skills(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return unit_skills(count, self.skill_dim, "cpu", generator).to(self.fixed_skill.device)

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            phi = self.features(batch["next_observation"])
            exploit = (batch["skill"] * nn.functional.normalize(phi, dim=1)).sum(dim=1)
            return self.entropy(phi) + exploit

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        phi = nn.functional.normalize(self.features(batch["next_observation"]), dim=1)
        loss = -(batch["skill"] * phi).sum(dim=1).mean()
        optimise(self.optimiser, loss)
        return {"aps_loss": loss.detach()}

    def adapt(self, replay, frame: int, state: TensorDict, task_index: int | None, encode=None) -> TensorDict:
        """At finetuning frame ``num_init_frames``: regress the task vector and fix it. States:
        ``lstsq_samples`` distinct transitions of ``replay.to_dataset()``; pixels (``encode``
        given): ``replay.sample_transitions(lstsq_samples)`` encoded by ``encode``."""
        if task_index is None or self._fixed or frame < self.num_init_frames:
            return state
        if encode is None:
            data = replay.to_dataset()
            rows = torch.randperm(len(data["task_reward"]), device=data["task_reward"].device)[
                : self.lstsq_samples
            ]
            next_observation, reward = data["next_observation"][rows], data["task_reward"][rows, task_index]
        else:
            if not hasattr(replay, "sample_transitions"):
                raise TypeError("APS's task regression on pixels needs replay.sample_transitions(batch_size)")
            data = replay.sample_transitions(self.lstsq_samples)
            next_observation, reward = encode(data["next_observation"]), data["task_reward"][:, task_index]
        with torch.no_grad():
            phi = nn.functional.normalize(self.features(next_observation), dim=1)
        self.fix_skill(regress_task(phi, reward))
        state["skill"] = self.draw(state.batch_size[0], state["skill"].device)
        return state
