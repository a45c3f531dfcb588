"""CIC: "Contrastive Intrinsic Control for Unsupervised Skill Discovery" (Laskin et al.,
2022), on the DDPG backbone as its released code runs it.

Skills are 64-D vectors drawn uniformly from [0, 1]^64, a new one every 50 env steps. A
state network ``g`` (obs -> H -> H -> 64) embeds ``s`` and ``s'``; a predictor maps the
pair ``(g(s), g(s'))`` to a key and a skill network (64 -> H -> H -> 64) maps the skill to
a query; the contrastive loss (``agents.parts.intrinsic.cic_contrastive_loss``, temperature 0.5)
makes each transition's key pick out its own skill's query among the batch's. The reward
is APT's particle entropy of ``g(s')`` over the batch, k = 16 averaged, distances divided
by their running variance (what the released code's ``moving_std`` holds), clip 5e-4::

    r = log(1 + mean_{j<=16} max(||g(s') - g_j|| / c - 5e-4, 0))

(distances: ``knn_distance``, ``exact`` as the released code takes them, or ``cdist``).

Finetuning skill rule (``finetune_skill``), where paper and code differ:

* ``mean`` (default; the released code, which produced the published numbers): every
  world pursues the fixed skill 0.5 * 1 during finetuning;
* ``search`` (the paper's procedure, in spirit): the pretrained policy is rolled out
  deterministically with ``skill_selection.candidates`` skills drawn from the prior and
  the best on the task is fixed (``urlb.measure.skills.select_skill``).

(The released code also builds a ``next_state_net`` it never uses; we leave it out.)
Pixels (CIC's code is state-only): the networks read the shared encoder's features,
detached (``trains_encoder`` False: the critic's loss trains the encoder).
Transfer to finetuning: the backbone's, and the skill networks with the fixed skill.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import SkillModel
from agents.parts.intrinsic import ParticleEntropy, cic_contrastive_loss
from agents.parts.nets import mlp, optimise, orthogonal_init
from agents.parts.skills import UNIT_CUBE


class CIC(SkillModel):
    prior = UNIT_CUBE  # CIC draws skills uniformly in [0, 1]^d

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        skill_dim: int = 64,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        update_skill_every_step: int = 50,
        temperature: float = 0.5,
        project_skill: bool = True,
        knn_k: int = 16,
        knn_average: bool = True,
        knn_normaliser: str | None = "variance",
        knn_clip: float = 5e-4,
        knn_distance: str = "exact",
        finetune_skill: str = "mean",
    ):
        super().__init__(skill_dim, update_skill_every_step)
        if finetune_skill not in ("mean", "search"):
            raise ValueError(f"CIC finetune_skill must be 'mean' or 'search', got {finetune_skill!r}")
        self.temperature, self.finetune_skill = temperature, finetune_skill
        self.state_net = mlp(obs_dim, hidden_dim, skill_dim)
        self.pred_net = mlp(2 * skill_dim, hidden_dim, skill_dim)
        self.skill_net = mlp(skill_dim, hidden_dim, skill_dim) if project_skill else nn.Identity()
        self.apply(orthogonal_init)
        self.entropy = ParticleEntropy(knn_k, knn_average, knn_normaliser, knn_clip, knn_distance)
        parameters = [*self.state_net.parameters(), *self.pred_net.parameters(), *self.skill_net.parameters()]
        self.optimiser = torch.optim.Adam(parameters, lr=lr)

    def optimisers(self):
        return {"cic": self.optimiser}

    def finetune(self) -> None:
        if self.finetune_skill == "mean":
            self.fix_skill(torch.full((self.skill_dim,), 0.5))

    def finetune_candidates(self, count: int, generator: torch.Generator) -> torch.Tensor | None:
        return self.evaluation_skills(count, generator) if self.finetune_skill == "search" else None

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            return self.entropy(self.state_net(batch["next_observation"]))

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        states = self.state_net(torch.cat([batch["observation"], batch["next_observation"]]))
        key = self.pred_net(torch.cat(states.chunk(2), dim=1))
        query = self.skill_net(batch["skill"])
        loss = cic_contrastive_loss(query, key, self.temperature).mean()
        optimise(self.optimiser, loss)
        return {"cic_loss": loss.detach()}
