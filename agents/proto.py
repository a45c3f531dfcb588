"""ProtoRL: "Reinforcement Learning with Prototypical Representations" (Yarats et al., ICML
2021), on the DDPG backbone as URLB runs it.

A representation is learned with prototypes (SwAV-style): the online branch maps ``s``
through the predictor (obs -> 128) and a projector (128 -> 512 -> 128) onto the unit
sphere and scores it against 512 unit-norm prototypes; the target branch (a predictor
updated by Polyak averaging, tau 0.05) maps ``s'`` onto the sphere and its scores are
turned into soft cluster assignments by Sinkhorn-Knopp (``agents.parts.intrinsic.sinkhorn_knopp``).
The loss is the cross-entropy between them at temperature 0.1.

The reward is a kNN distance of the next state's embedding ``z = normalize(predictor(s'))``
to a queue of 2048 earlier embeddings: at each reward computation every prototype draws one
sample of the batch (softmax of its scores over the batch) into the queue (first-in,
first-out), and ``r`` is the distance to the 3rd nearest queue entry (``knn_distance``:
``exact``, URLB's norms of differences, or ``cdist``). The queue and its
pointer are buffers (saved and restored). On states the encoder is the identity.

Pixels: the predictor reads the shared encoder's features, and the prototype loss trains
the encoder while pretraining (``trains_encoder``; URLB's ``proto_opt`` holds the encoder).
Departure: URLB's target branch and reward encode ``s'`` with a Polyak-averaged copy of the
encoder (tau 0.05); here both read the shared encoder's current features of ``s'``
(without gradients), and only the predictor has a target copy.

Transfer to finetuning (ProtoRL's ``init_from``): the encoder (pixels), the actor and the
**whole** critic (heads included, unlike URLB's other agents; into the critic, the target
critic stays fresh), and the representation.
"""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import RewardModel
from agents.parts.intrinsic import KNN_DISTANCES, knn_distances, sinkhorn_knopp
from agents.parts.nets import TORCH_RANDOMNESS, optimise, orthogonal_init, soft_update


def prototype_loss(
    online_scores: torch.Tensor, target_scores: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy between Sinkhorn assignments of the target scores and the softmax of
    the online scores, both at ``temperature``; scores ``(B, K)``."""
    with torch.no_grad():
        assignment = sinkhorn_knopp(target_scores / temperature)
    log_p = torch.log_softmax(online_scores / temperature, dim=1)
    return -(assignment * log_p).sum(dim=1).mean()


class ProtoRL(RewardModel):
    transfer_whole_critic = True
    trains_encoder = True
    randomness = TORCH_RANDOMNESS  # the queue's draws (agents.parts.nets.Randomness)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        pred_dim: int = 128,
        proj_dim: int = 512,
        num_protos: int = 512,
        temperature: float = 0.1,
        topk: int = 3,
        queue_size: int = 2048,
        target_tau: float = 0.05,
        knn_distance: str = "exact",
    ):
        super().__init__()
        if queue_size < num_protos or queue_size % num_protos:
            raise ValueError(f"queue_size ({queue_size}) must be a multiple of num_protos ({num_protos})")
        if knn_distance not in KNN_DISTANCES:
            raise ValueError(f"knn_distance must be one of {KNN_DISTANCES}, got {knn_distance!r}")
        self.temperature, self.topk, self.target_tau = temperature, topk, target_tau
        self.knn_distance = knn_distance
        self.predictor = nn.Linear(obs_dim, pred_dim)
        self.projector = nn.Sequential(
            nn.Linear(pred_dim, proj_dim), nn.ReLU(inplace=True), nn.Linear(proj_dim, pred_dim)
        )
        self.prototypes = nn.Linear(pred_dim, num_protos, bias=False)
        for module in (self.predictor, self.projector, self.prototypes):
            module.apply(orthogonal_init)
        self.predictor_target = copy.deepcopy(self.predictor).requires_grad_(False)
        self.register_buffer("queue", torch.zeros(queue_size, pred_dim))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self.optimiser = torch.optim.Adam(
            [*self.predictor.parameters(), *self.projector.parameters(), *self.prototypes.parameters()], lr=lr
        )

    def optimisers(self):
        return {"proto": self.optimiser}

    @torch.no_grad()
    def normalise_prototypes(self) -> None:
        self.prototypes.weight.copy_(nn.functional.normalize(self.prototypes.weight, dim=1))

    @torch.no_grad()
    def enqueue(self, embedding: torch.Tensor) -> None:
        """Each prototype picks one row of ``embedding`` ``(B, D)`` at random, with
        probabilities softmax(its scores over the batch), into the FIFO queue."""
        scores = self.prototypes(embedding).T  # (K, B)
        picks = self.randomness.multinomial(torch.softmax(scores, dim=1), 1).squeeze(1)  # (K,)
        slots = (self.queue_pointer + torch.arange(len(picks), device=picks.device)) % len(self.queue)
        self.queue.index_copy_(0, slots, embedding[picks])
        self.queue_pointer.copy_((self.queue_pointer + len(picks)) % len(self.queue))

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        self.normalise_prototypes()
        with torch.no_grad():
            z = nn.functional.normalize(self.predictor(batch["next_observation"]), dim=1)
            self.enqueue(z)
            return knn_distances(z, self.queue, self.topk, self.knn_distance)[:, -1]

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        self.normalise_prototypes()
        online = nn.functional.normalize(self.projector(self.predictor(batch["observation"])), dim=1)
        with torch.no_grad():
            target = nn.functional.normalize(self.predictor_target(batch["next_observation"]), dim=1)
            target_scores = self.prototypes(target)
        loss = prototype_loss(self.prototypes(online), target_scores, self.temperature)
        optimise(self.optimiser, loss)
        soft_update(self.predictor_target, self.predictor, self.target_tau)
        return {"proto_loss": loss.detach()}
