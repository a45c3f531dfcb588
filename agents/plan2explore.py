"""Plan2Explore: "Planning to Explore via Self-Supervised World Models" (Sekar et al.,
ICML 2020), as Rajeswar et al. (ICML 2023) pretrain Dreamer with it on URLB.

A latent reward model for :class:`agents.dreamer.DreamerAgent`: an ensemble of one-step
predictors ``f_k(s_t, a_t) -> e(o_{t+1})`` (5 members, one ReLU hidden layer as wide as the
embedding) from the model's features ``s_t`` to the encoder's embedding of the next
observation; the intrinsic reward of an imagined transition is their disagreement::

    r(s_t, a_t) = mean_d Var_k[f_k(s_t, a_t)_d],     loss = mean_{k, batch} ||f_k(s_t, a_t) - e(o_{t+1})||_2

The ensemble trains on the posterior transitions of each replay batch (detached, as the
reference code does); the reward is differentiable in the features, so the actor's
dynamics gradient sees it. Disagreement's machinery (``agents/disagreement.py``) with the
embedding as target.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.disagreement import Disagreement, disagreement_reward


class Plan2Explore(Disagreement):
    """Args as :class:`agents.disagreement.Disagreement`, with ``embed_dim`` (the size of the
    embedding the members predict, given by the Dreamer agent) in place of ``target_dim``."""

    target_key = "next_embed"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        embed_dim: int,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        members: int = 5,
    ):
        super().__init__(obs_dim, action_dim, hidden_dim, lr, members, target_dim=embed_dim)

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        return disagreement_reward(self._predict(batch))
