"""DIAYN: "Diversity is All You Need" (Eysenbach et al., ICLR 2019), as a reward model.

    r(s', z) = log q(z | s') - log p(z),   p(z) uniform over K one-hot skills,

with the discriminator q trained by cross-entropy to recognise the skill from the next
state. Two published variants, as configs over the same code:

* ``agent=diayn`` is URLB's (Laskin et al. 2021): DDPG backbone, 16 skills, a new random
  skill every 50 env steps, discriminator obs -> H -> H -> K (ReLU), Adam 1e-4;
* ``agent=diayn_paper`` is the paper's: SAC (temperature 0.1), 50 skills, one skill per
  episode.

Skills are per world, carried in the agent's state and stored in replay. Finetuning skill
rule (URLB's): skills keep being drawn at random on the pretraining schedule (URLB's
finetune loop calls the same ``update_meta``); the policy thus finetunes across skills.
Evaluation (``evaluation_skill``): ``shared`` (default, URLB's ``eval``, which calls
``init_meta`` once) runs every evaluation episode with one skill drawn at its start and
held to the end; ``schedule`` draws per world and redraws on the training schedule.

Pixels: the discriminator reads the shared encoder's features of ``s'``, detached
(``trains_encoder`` False: the critic's loss trains the encoder). A departure: URLB's DIAYN
encodes ``s'`` with gradients, lets the discriminator loss step the encoder
(``update_diayn`` steps ``encoder_opt``) and keeps the critic's features detached.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import SkillModel
from agents.parts.nets import mlp, optimise, orthogonal_init
from agents.parts.skills import ONE_HOT


def diayn_reward(logits: torch.Tensor, skill_index: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[z] - log(1 / K)`` for logits ``(B, K)`` and skills ``(B,)``."""
    if logits.ndim != 2 or skill_index.shape != logits.shape[:1]:
        raise ValueError(f"diayn_reward: logits {tuple(logits.shape)}, skills {tuple(skill_index.shape)}")
    log_q = torch.log_softmax(logits, dim=1).gather(1, skill_index[:, None]).squeeze(1)
    return log_q - math.log(1.0 / logits.shape[1])


def discriminator_loss(logits: torch.Tensor, skill_index: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the discriminator on the true skills."""
    return nn.functional.cross_entropy(logits, skill_index)


class DIAYN(SkillModel):
    prior = ONE_HOT

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        skill_dim: int = 16,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        update_skill_every_step: int = 50,
        scale: float = 1.0,
        observe_pose: bool = False,
        evaluation_skill: str = "shared",
    ):
        """``update_skill_every_step``: env steps between skill draws (0: once per episode);
        ``observe_pose``: observations carry the global pose (``SkillModel``; URLB: off);
        ``evaluation_skill``: ``shared`` or ``schedule`` (module docstring)."""
        super().__init__(skill_dim, update_skill_every_step, observe_pose)
        if evaluation_skill not in ("shared", "schedule"):
            raise ValueError(
                f"DIAYN evaluation_skill must be 'shared' or 'schedule', got {evaluation_skill!r}"
            )
        self.scale, self.evaluation_skill = scale, evaluation_skill
        self.discriminator = mlp(obs_dim, hidden_dim, skill_dim)
        self.discriminator.apply(orthogonal_init)
        self.optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=lr)

    def optimisers(self):
        return {"discriminator": self.optimiser}

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            logits = self.discriminator(batch["next_observation"])
        return self.scale * diayn_reward(logits, batch["skill"].argmax(dim=1))

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        logits = self.discriminator(batch["next_observation"])
        skill = batch["skill"].argmax(dim=1)
        loss = discriminator_loss(logits, skill)
        optimise(self.optimiser, loss)
        accuracy = (logits.argmax(dim=1) == skill).float().mean()
        return {"diayn_loss": loss.detach(), "diayn_accuracy": accuracy}
