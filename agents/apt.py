"""APT: "Behavior From the Void: Unsupervised Active Pre-Training" (Liu & Abbeel, NeurIPS
2021), on the DDPG backbone as URLB runs it.

The reward is a particle-based (k-nearest-neighbour) estimate of state entropy in a
learned representation ``h``::

    r = log(1 + mean_{j <= k} max(||h - h_j|| / c - clip, 0))

over the other samples of the batch (``agents.parts.intrinsic.ParticleEntropy``; distances
``knn_distance``: ``exact``, URLB's norms of differences, or ``cdist``, ``torch.cdist``'s
faster matrix-product form). Three representations, chosen by ``representation``:

* ``icm`` (config ``icm_apt``, the APT of URLB's tables): ``h`` is the trunk
  Linear -> LayerNorm -> Tanh (512) of forward and inverse dynamics models trained with
  ICM's losses (``agents.parts.intrinsic.ForwardInverseModel``); particles are the batch's first
  states ``s``; k = 12, averaged, no running normalisation, clip 0 (URLB's ``icm_apt``).
* ``contrastive`` (config ``apt``, the paper's independent representation): an encoder
  trained apart from the policy by contrastive learning, InfoNCE between the embeddings of
  ``s`` and of the state ``s'`` n steps later (on states there are no image augmentations;
  temporal neighbours are the positive pairs) through a projection head; particles are the
  next states ``s'``, distances divided by their running mean, clip 1e-4 (URLB's APT
  settings for its independent-representation config).
* ``identity`` (config ``dreamer_apt``): the input itself, nothing trained; particles are
  the next states. For inputs that are already a learned representation: a world model's
  latent features (Rajeswar et al. 2023 take the kNN entropy of Dreamer's latent states).

Pixels: the representation reads the shared encoder's features, and, for ``icm`` and
``contrastive``, its loss trains the encoder while pretraining (``trains_encoder``; URLB's
``icm_apt`` steps ``encoder_opt`` in its ICM update): ``s`` with gradients, ``s'`` without,
the critic on detached features. ``identity`` has no loss and leaves the encoder to the
critic.

Transfer to finetuning: the backbone's; the representation rides along unused.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import RewardModel
from agents.parts.intrinsic import ForwardInverseModel, ParticleEntropy, info_nce
from agents.parts.nets import layer_norm_trunk, optimise, orthogonal_init


class APT(RewardModel):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        representation: str = "icm",
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        rep_dim: int = 512,
        knn_k: int = 12,
        knn_average: bool = True,
        knn_normaliser: str | None = None,
        knn_clip: float = 0.0,
        temperature: float = 0.5,
        knn_distance: str = "exact",
        embed_dim: int | None = None,
    ):
        # embed_dim: the world model's embedding size, which Dreamer passes to every latent
        # reward model (Plan2Explore predicts the embedding); APT does not use it.
        super().__init__()
        if representation not in ("icm", "contrastive", "identity"):
            raise ValueError(
                f"APT representation must be 'icm', 'contrastive' or 'identity', got {representation!r}"
            )
        self.representation = representation
        self.temperature = temperature
        self.trains_encoder = representation != "identity"
        if representation == "icm":
            self.icm = ForwardInverseModel(obs_dim, action_dim, hidden_dim, rep_dim)
            parameters = list(self.icm.parameters())
        elif representation == "contrastive":
            self.encoder = nn.Sequential(
                nn.Linear(obs_dim, hidden_dim), nn.ReLU(inplace=True), layer_norm_trunk(hidden_dim, rep_dim)
            )
            self.projector = nn.Sequential(
                nn.Linear(rep_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, rep_dim)
            )
            self.encoder.apply(orthogonal_init)
            self.projector.apply(orthogonal_init)
            parameters = [*self.encoder.parameters(), *self.projector.parameters()]
        else:
            parameters = []
        self.entropy = ParticleEntropy(knn_k, knn_average, knn_normaliser, knn_clip, knn_distance)
        self.optimiser = torch.optim.Adam(parameters, lr=lr) if parameters else None

    def optimisers(self):
        return {"representation": self.optimiser} if self.optimiser is not None else {}

    def particles(self, batch: TensorDict) -> torch.Tensor:
        """The representation whose kNN entropy is the reward (see the module docstring)."""
        if self.representation == "icm":
            return self.icm.trunk(batch["observation"])
        if self.representation == "identity":
            return batch["next_observation"]
        return self.encoder(batch["next_observation"])

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            return self.entropy(self.particles(batch))

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        if self.representation == "identity":
            return {}
        if self.representation == "icm":
            forward_error, backward_error = self.icm.errors(
                batch["observation"], batch["action"], batch["next_observation"]
            )
            loss = forward_error.mean() + backward_error.mean()
            optimise(self.optimiser, loss)
            return {"apt_icm_loss": loss.detach()}
        both = self.projector(self.encoder(torch.cat([batch["observation"], batch["next_observation"]])))
        query, key = both.chunk(2)
        loss = info_nce(query, key, self.temperature).mean()
        optimise(self.optimiser, loss)
        return {"apt_contrastive_loss": loss.detach()}
