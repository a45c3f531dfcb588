"""Disagreement: "Self-Supervised Exploration via Disagreement" (Pathak et al., ICML 2019),
as URLB runs it on the DDPG backbone.

An ensemble of forward models ``f_i(s, a) -> s'`` (5 members, one hidden layer of the
agent's width; ``agents.parts.intrinsic.EnsembleMLP``) each regresses the next observation; the
reward is their disagreement, the variance of the predictions across members averaged
over observation dimensions::

    r = mean_d Var_i[f_i(s, a)_d],      loss = sum_i mean_batch ||f_i(s, a) - s'||_2 / members

(URLB's loss is the mean over members and batch of each member's L2 error; the variance is
the unbiased one over members, as ``torch.var``). Transitions are replay's n-step ones.

Pixels (URLB): the members act on and predict the shared encoder's features, and their
loss trains the encoder while pretraining (``trains_encoder``; URLB's
``update_disagreement`` steps ``encoder_opt``): ``s`` with gradients, the target ``s'``
without, the critic on detached features.

Transfer to finetuning: the backbone's; the ensemble rides along unused.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import RewardModel
from agents.parts.intrinsic import EnsembleMLP
from agents.parts.nets import optimise


def disagreement_reward(predictions: torch.Tensor) -> torch.Tensor:
    """``(B,)`` variance across members of ``predictions`` ``(members, B, D)``, averaged over D
    (unbiased over members, as ``torch.var``, written out: CPU ``var`` is several times slower)."""
    deviation = predictions - predictions.mean(dim=0)
    return deviation.pow(2).sum(dim=0).mean(dim=-1) / (predictions.shape[0] - 1)


class Disagreement(RewardModel):
    """Args: ``target_dim`` is the size of what the members predict (None: the observation's)."""

    # The batch field the members regress (Plan2Explore predicts the next embedding instead).
    target_key = "next_observation"
    trains_encoder = True

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        members: int = 5,
        target_dim: int | None = None,
    ):
        super().__init__()
        if members < 2:
            raise ValueError(f"disagreement needs at least 2 ensemble members, got {members}")
        target_dim = obs_dim if target_dim is None else target_dim
        self.ensemble = EnsembleMLP(members, obs_dim + action_dim, hidden_dim, target_dim, depth=1)
        self.optimiser = torch.optim.Adam(self.ensemble.parameters(), lr=lr)

    def optimisers(self):
        return {"ensemble": self.optimiser}

    def _predict(self, batch: TensorDict) -> torch.Tensor:
        return self.ensemble(torch.cat([batch["observation"], batch["action"]], dim=-1))

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            return disagreement_reward(self._predict(batch))

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        errors = (self._predict(batch) - batch[self.target_key]).norm(dim=-1)  # (members, B)
        loss = errors.mean()
        optimise(self.optimiser, loss)
        return {"disagreement_loss": loss.detach()}
