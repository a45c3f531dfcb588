"""Plan2Explore: "Planning to Explore via Self-Supervised World Models" (Sekar et al.,
ICML 2020), as Rajeswar et al. (ICML 2023) pretrain Dreamer with it on URLB
(github.com/mazpie/mastering-urlb, ``agent/plan2explore.py``).

A latent reward model for :class:`agents.dreamer.DreamerAgent`: an ensemble of one-step
predictors ``f_k(s_t, a_t) -> e(o_{t+1})`` (5 members, one ReLU hidden layer as wide as the
embedding) from the model's features ``s_t`` to the encoder's embedding of the next
observation; the intrinsic reward of an imagined transition is their disagreement::

    r(s_t, a_t) = mean_d Var_k[f_k(s_t, a_t)_d],     loss = mean_{k, batch} ||f_k(s_t, a_t) - e(o_{t+1})||_2

The ensemble trains on the posterior transitions of each replay batch (detached, as the
reference code does) with the world model's optimiser settings (theirs passes ``model_opt``:
Adam with its epsilon, the gradient norm clipped, decoupled weight decay); the reward is
differentiable in the features, so the actor's dynamics gradient sees it (the actions are
data: Dreamer detaches them). Disagreement's machinery (``agents/disagreement.py``) with the
embedding as target.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.disagreement import Disagreement, disagreement_reward
from agents.parts.nets import clipped_step


class Plan2Explore(Disagreement):
    """Args as :class:`agents.disagreement.Disagreement`, with ``embed_dim`` (the size of the
    embedding the members predict, given by the Dreamer agent) in place of ``target_dim``.

    Args:
        hidden_dim: the members' hidden width; None: ``embed_dim`` (the reference's).
        lr, adam_eps, grad_clip, weight_decay: the optimiser (the world model's: 3e-4, 1e-5,
            100, 1e-6 per step, multiplicative as Dreamer's, ``agents/dreamer.py``).
    """

    target_key = "next_embed"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        embed_dim: int,
        hidden_dim: int | None = None,
        lr: float = 3e-4,
        members: int = 5,
        adam_eps: float = 1e-5,
        grad_clip: float = 100.0,
        weight_decay: float = 1e-6,
    ):
        hidden_dim = embed_dim if hidden_dim is None else hidden_dim
        super().__init__(obs_dim, action_dim, hidden_dim, lr, members, target_dim=embed_dim)
        self.grad_clip = grad_clip
        # Dreamer's decay multiplies weights by (1 - weight_decay) before each step: AdamW's
        # decoupled decay of lr * (weight_decay / lr).
        self.optimiser = torch.optim.AdamW(
            self.ensemble.parameters(), lr=lr, eps=adam_eps, weight_decay=weight_decay / lr
        )

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        return disagreement_reward(self._predict(batch))

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        errors = (self._predict(batch) - batch[self.target_key]).norm(dim=-1)  # (members, B)
        loss = errors.mean()
        grad_norm = clipped_step(self.optimiser, loss, self.grad_clip)
        return {"disagreement_loss": loss.detach(), "disagreement_grad_norm": grad_norm}
