"""ICM: "Curiosity-driven Exploration by Self-supervised Prediction" (Pathak et al., ICML
2017), as URLB runs it (Laskin et al. 2021) on the DDPG backbone.

A forward model predicts ``s'`` from ``(s, a)`` and an inverse model predicts ``a`` from
``(s, s')`` (``agents.parts.intrinsic.ForwardInverseModel``; on states both act on the raw
observation, URLB's setting). The reward is the forward model's error::

    r = log(1 + scale * ||f(s, a) - s'||_2),      loss = mean ||f(s,a) - s'|| + mean ||g(s,s') - a||

computed, like the update, on replay's n-step transitions (``s'`` is n steps after ``s``:
URLB's n=3). Hidden 1024, Adam 1e-4 (the agent's), scale 1.

Pixels (URLB): the models act on the shared encoder's features, and their loss trains the
encoder while pretraining (``trains_encoder``; URLB's ``update_icm`` steps ``encoder_opt``):
``s`` with gradients, ``s'`` without, the critic on detached features.

Transfer to finetuning: the backbone's (encoder, actor and critic trunk); the dynamics models are
copied with the reward model but no longer trained or used (finetuning trains on the task
reward alone).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import RewardModel
from agents.parts.intrinsic import ForwardInverseModel
from agents.parts.nets import optimise


def icm_reward(forward_error: torch.Tensor, scale: float) -> torch.Tensor:
    """URLB's ICM reward ``log(1 + scale * forward_error)``."""
    return torch.log1p(scale * forward_error)


class ICM(RewardModel):
    trains_encoder = True

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_dim: int = 1024, lr: float = 1e-4, scale: float = 1.0
    ):
        super().__init__()
        self.scale = scale
        self.model = ForwardInverseModel(obs_dim, action_dim, hidden_dim)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=lr)

    def optimisers(self):
        return {"icm": self.optimiser}

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            forward_error, _ = self.model.errors(
                batch["observation"], batch["action"], batch["next_observation"]
            )
        return icm_reward(forward_error, self.scale)

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        forward_error, backward_error = self.model.errors(
            batch["observation"], batch["action"], batch["next_observation"]
        )
        loss = forward_error.mean() + backward_error.mean()
        optimise(self.optimiser, loss)
        return {
            "icm_loss": loss.detach(),
            "icm_forward_error": forward_error.mean().detach(),
            "icm_inverse_error": backward_error.mean().detach(),
        }
