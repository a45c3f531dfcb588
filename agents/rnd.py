"""RND: "Exploration by Random Network Distillation" (Burda et al., ICLR 2019), as URLB
runs it on the DDPG backbone.

A predictor MLP is trained to match a fixed, randomly initialised target MLP (both
obs -> H -> H -> 512, ReLU) on normalised observations; the reward is the prediction
error, divided by a running standard deviation of that error::

    x = clip((s - mu_s) / sigma_s, -5, 5),   e = mean_j (g(x)_j - f(x)_j)^2,   r = scale * e / sigma_e

Observation statistics ``mu_s, sigma_s`` and the error's ``sigma_e`` are running
statistics (``agents.parts.intrinsic.RunningMeanStd``), merged from every update's batch and saved
with the model. URLB normalises observations with a BatchNorm layer without affine terms,
i.e. by the statistics of the current batch; running statistics over all batches seen, as
in the RND paper, are the same estimate with less noise, and do not make the reward of a
transition depend on the rest of its batch. The reward uses the batch's first state ``s``
(URLB's choice). Scale 1, Adam 1e-4 (the agent's).

Pixels (a departure from URLB): predictor and target are the MLPs above on the shared
encoder's features, detached (``trains_encoder`` False: the critic trains the encoder), with
running statistics over the features. URLB's pixel RND distils on the frames: it
batch-normalises the shifted frames per channel, its predictor runs them through the shared
encoder (so the RND loss trains it too) and its target through a frozen random copy of the
encoder. Here the target's input moves as the encoder learns.

Transfer to finetuning: the backbone's; predictor, target and statistics ride along unused.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import RewardModel
from agents.parts.intrinsic import RunningMeanStd
from agents.parts.nets import mlp, optimise, orthogonal_init


def rnd_reward(error: torch.Tensor, error_var: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * error / (sqrt(error_var) + 1e-8)``: URLB's normalised RND reward."""
    return scale * error / (error_var.sqrt() + 1e-8)


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
    ):
        super().__init__()
        self.scale, self.obs_clip = scale, obs_clip
        self.predictor = mlp(obs_dim, hidden_dim, rep_dim)
        self.target = mlp(obs_dim, hidden_dim, rep_dim).requires_grad_(False)
        self.predictor.apply(orthogonal_init)
        self.target.apply(orthogonal_init)
        self.obs_stats = RunningMeanStd((obs_dim,))
        self.error_stats = RunningMeanStd(())
        self.optimiser = torch.optim.Adam(self.predictor.parameters(), lr=lr)

    def optimisers(self):
        return {"predictor": self.optimiser}

    def prediction_error(self, observation: torch.Tensor) -> torch.Tensor:
        """``(B,)`` mean squared distance between predictor and target on normalised input."""
        x = self.obs_stats.normalise(observation, clip=self.obs_clip)
        return (self.target(x) - self.predictor(x)).square().mean(dim=-1)

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            error = self.prediction_error(batch["observation"])
        self.error_stats.update(error)
        return rnd_reward(error, self.error_stats.var, self.scale)

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        self.obs_stats.update(batch["observation"])
        loss = self.prediction_error(batch["observation"]).mean()
        optimise(self.optimiser, loss)
        return {"rnd_loss": loss.detach(), "rnd_error_std": self.error_stats.var.sqrt()}
