"""RND: "Exploration by Random Network Distillation" (Burda et al., ICLR 2019), as URLB
runs it on the DDPG backbone.

A predictor MLP is trained to match a fixed, randomly initialised target MLP (both
obs -> H -> H -> 512, ReLU) on normalised observations; the reward is the prediction
error, divided by a running standard deviation of that error::

    x = clip((s - mu_s) / sigma_s, -5, 5),   e = mean_j (g(x)_j - f(x)_j)^2,   r = scale * e / sigma_e

The error's ``sigma_e`` is a running statistic (``agents.parts.intrinsic.RunningMeanStd``,
merged from every reward computation and saved with the model). The observation
statistics ``mu_s, sigma_s`` follow ``obs_normalisation``:

* ``batch`` (default, URLB's): those of the current batch (mean and biased variance, eps
  1e-5), as URLB's ``BatchNorm1d(affine=False)`` computes them in training mode, which its
  RND never leaves: the reward of a transition depends on the rest of its batch;
* ``running``: running statistics over every batch seen, as in the RND paper (the same
  estimate with less noise), merged before each update and saved with the model;
* ``none``: the raw input, unclipped (SUPE's RND on (s, u)).

``layout``: ``urlb`` (default), the networks above with orthogonal weights; ``rlpd``, SUPE's
(its ``RND`` on RLPD's ``MLP((256,) * 3, activate_final=True)`` and a linear feature): three
ReLU hidden layers, Xavier-uniform weights, zero biases.

The reward uses the batch's first state ``s`` (URLB's choice). Scale 1, Adam 1e-4 (the
agent's).

Pixels (a departure from URLB): predictor and target are the MLPs above on the shared
encoder's features, detached (``trains_encoder`` False: the critic trains the encoder),
normalised per feature. URLB's pixel RND distils on the frames: it
batch-normalises the shifted frames per channel, its predictor runs them through the shared
encoder (so the RND loss trains it too) and its target through a frozen random copy of the
encoder. Here the target's input moves as the encoder learns.

Transfer to finetuning: the backbone's; predictor, target and statistics ride along unused.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import RewardModel
from agents.parts.intrinsic import RunningMeanStd
from agents.parts.nets import mlp, optimise, orthogonal_init, xavier_uniform_init

OBS_NORMALISATIONS = ("batch", "running", "none")
RND_LAYOUTS = ("urlb", "rlpd")


def rnd_reward(error: torch.Tensor, error_var: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * error / (sqrt(error_var) + 1e-8)``: URLB's normalised RND reward."""
    return scale * error / (error_var.sqrt() + 1e-8)


def batch_normalise(x: torch.Tensor, clip: float) -> torch.Tensor:
    """``(B, D)`` whitened by the batch's own mean and biased variance (eps 1e-5: URLB's
    ``BatchNorm1d(affine=False)`` in training mode), clipped to ``[-clip, clip]``."""
    return nn.functional.batch_norm(x, None, None, training=True, eps=1e-5).clamp(-clip, clip)


class RND(RewardModel):
    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        rep_dim: int = 512,
        scale: float = 1.0,
        obs_clip: float = 5.0,
        obs_normalisation: str = "batch",
        embed_dim: int | None = None,
        layout: str = "urlb",
    ):
        # embed_dim: the world model's embedding size, which Dreamer passes to every latent
        # reward model (Plan2Explore predicts the embedding); RND does not use it.
        super().__init__()
        if obs_normalisation not in OBS_NORMALISATIONS:
            raise ValueError(
                f"obs_normalisation must be one of {OBS_NORMALISATIONS}, got {obs_normalisation!r}"
            )
        if layout not in RND_LAYOUTS:
            raise ValueError(f"RND layout must be one of {RND_LAYOUTS}, got {layout!r}")
        self.scale, self.obs_clip, self.obs_normalisation = scale, obs_clip, obs_normalisation
        depth = 2 if layout == "urlb" else 3
        self.predictor = mlp(obs_dim, hidden_dim, rep_dim, depth)
        self.target = mlp(obs_dim, hidden_dim, rep_dim, depth).requires_grad_(False)
        for network in (self.predictor, self.target):
            network.apply(orthogonal_init if layout == "urlb" else xavier_uniform_init)
        self.obs_stats = RunningMeanStd((obs_dim,)) if obs_normalisation == "running" else None
        self.error_stats = RunningMeanStd(())
        self.optimiser = torch.optim.Adam(self.predictor.parameters(), lr=lr)

    def optimisers(self):
        return {"predictor": self.optimiser}

    def prediction_error(self, observation: torch.Tensor) -> torch.Tensor:
        """``(B,)`` mean squared distance between predictor and target on normalised input."""
        if self.obs_normalisation == "none":
            x = observation
        elif self.obs_stats is None:
            x = batch_normalise(observation, self.obs_clip)
        else:
            x = self.obs_stats.normalise(observation, clip=self.obs_clip)
        return (self.target(x) - self.predictor(x)).square().mean(dim=-1)

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            error = self.prediction_error(batch["observation"])
        self.error_stats.update(error)
        return rnd_reward(error, self.error_stats.var, self.scale)

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        if self.obs_stats is not None:
            self.obs_stats.update(batch["observation"])
        loss = self.prediction_error(batch["observation"]).mean()
        optimise(self.optimiser, loss)
        return {"rnd_loss": loss.detach(), "rnd_error_std": self.error_stats.var.sqrt()}
