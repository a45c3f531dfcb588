"""APS: "Active Pretraining with Successor Features" (Liu & Abbeel, ICML 2021), on the DDPG
backbone as URLB runs it.

A state feature ``phi(s')`` (obs -> H -> H -> 10) and a task vector ``w`` on the unit
sphere (the skill, a new random one every 5 env steps) define a successor-feature agent:
the Q heads output 10 successor features ``psi(s, a)`` and ``Q = psi . w``
(``DoubleQCritic`` with ``task_dim``, switched on by ``successor_features``). ``phi`` is
trained to maximise ``w . phi(s') / ||phi(s')||`` for the skill that reached ``s'``, and
the reward is that exploitation term plus APT's particle entropy of the raw features::

    r = log(1 + mean_{j<=12} max(||phi(s') - phi_j|| / c - 1e-4, 0))  +  w . phi(s') / ||phi(s')||

with ``c`` the running mean of the kNN distances (``agents.parts.intrinsic.ParticleEntropy``).

Finetuning (the task-vector regression, ``task_regression``): skills keep being drawn at
random for the first ``num_init_frames`` frames (4096; they fall inside the 4000 seed
frames of random actions), then:

* ``urlb`` (default, URLB's ``regress_meta``): every ``update_skill_every_step`` frames for
  the rest of finetuning, ``lstsq_samples`` fresh transitions are sampled from the replay
  (URLB's n-step batches: the n-step return ``R`` and the first state ``s``) and ``w`` is
  ``lstsq(R, phi(s))`` (normalised features), the transposed problem: a ``(1, D)`` solution
  proportional to ``sum R phi(s)``, normalised. Every world pursues the latest ``w``, and
  evaluation uses it. Frames count every world's steps, so with several worlds the
  regression runs at most once per loop iteration (URLB: one world, every 5 env steps).
* ``once`` (the regression the paper states): at frame ``num_init_frames`` only, ``w`` is
  the least-squares solution of ``phi(s') w ~ r`` on up to ``lstsq_samples`` distinct
  one-step transitions of the finetuning replay (normalised features of the next state),
  normalised, and fixed for the rest of finetuning.

``w`` is saved with the weights (with the frame of its regression), so resume keeps it.

Pixels: ``phi`` reads the shared encoder's features, detached (``trains_encoder`` False:
the critic's loss trains the encoder). A departure: URLB's APS encodes ``s'`` with
gradients, lets its ``phi`` loss step the encoder (``update_aps`` steps ``encoder_opt``) and
detaches the critic's features. The regression encodes one-step transitions drawn by
``replay.sample_transitions`` (a pixel replay stores no flat dataset) with the backbone's
encoder, unshifted.

Transfer to finetuning (``transfer_phi``): the backbone's (encoder, actor, critic trunk; the
successor-feature heads start fresh). ``false`` (default, URLB's: its APSAgent has DDPG's
``init_from``) leaves the whole model fresh, so the task regression reads a random ``phi``;
``true`` also transfers the pretrained ``phi`` (and the kNN statistics), which is what the
regression is meant to read.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from agents.base import SkillModel
from agents.parts.intrinsic import ParticleEntropy
from agents.parts.nets import mlp, optimise, orthogonal_init
from agents.parts.skills import UNIT_SPHERE

TASK_REGRESSIONS = ("urlb", "once")


def regress_task(features: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """The unit vector along the least-squares ``w`` of ``features @ w ~ rewards``
    (``(M, D)``, ``(M,)``)."""
    w = torch.linalg.lstsq(features, rewards[:, None]).solution.squeeze(1)
    return w / w.norm().clamp_min(1e-12)


def regress_task_urlb(features: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """URLB's ``regress_meta``: ``torch.linalg.lstsq(returns, features)``, the ``(1, D)`` ``w``
    of ``returns w ~ features`` (``(M,)``, ``(M, D)``), i.e. ``sum R phi / sum R^2``,
    normalised to a unit vector."""
    w = torch.linalg.lstsq(returns[:, None], features).solution[0]
    return w / torch.norm(w)


class APS(SkillModel):
    successor_features = True
    prior = UNIT_SPHERE

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        skill_dim: int = 10,
        hidden_dim: int = 1024,
        lr: float = 1e-4,
        update_skill_every_step: int = 5,
        knn_k: int = 12,
        knn_average: bool = True,
        knn_normaliser: str | None = "mean",
        knn_clip: float = 1e-4,
        knn_distance: str = "exact",
        num_init_frames: int = 4096,
        lstsq_samples: int = 4096,
        task_regression: str = "urlb",
        transfer_phi: bool = False,
    ):
        super().__init__(skill_dim, update_skill_every_step)
        if task_regression not in TASK_REGRESSIONS:
            raise ValueError(
                f"APS task_regression must be one of {TASK_REGRESSIONS}, got {task_regression!r}"
            )
        self.num_init_frames, self.lstsq_samples = num_init_frames, lstsq_samples
        self.task_regression, self.transfer_phi = task_regression, transfer_phi
        # The frame of the last regression (-1: none), and its host mirror: adapt() runs
        # every env step and must not read the device to decide it has nothing to do.
        self.register_buffer("regressed_at", torch.tensor(-1, dtype=torch.long))
        self._regressed_at = -1
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_regressed_at())
        self.features = mlp(obs_dim, hidden_dim, skill_dim)
        self.features.apply(orthogonal_init)
        self.entropy = ParticleEntropy(knn_k, knn_average, knn_normaliser, knn_clip, knn_distance)
        self.optimiser = torch.optim.Adam(self.features.parameters(), lr=lr)

    def transfer_from(self, pretrained: SkillModel) -> None:
        """``transfer_phi``: the pretrained model; else none of it (URLB)."""
        if self.transfer_phi:
            super().transfer_from(pretrained)

    def optimisers(self):
        return {"features": self.optimiser}

    def intrinsic_reward(self, batch: TensorDict) -> torch.Tensor:
        with torch.no_grad():
            phi = self.features(batch["next_observation"])
            exploit = (batch["skill"] * nn.functional.normalize(phi, dim=1)).sum(dim=1)
            return self.entropy(phi) + exploit

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        phi = nn.functional.normalize(self.features(batch["next_observation"]), dim=1)
        loss = -(batch["skill"] * phi).sum(dim=1).mean()
        optimise(self.optimiser, loss)
        return {"aps_loss": loss.detach()}

    def _sync_regressed_at(self) -> None:
        self._regressed_at = int(self.regressed_at)

    def regression_due(self, frame: int) -> bool:
        """Whether finetuning frame ``frame`` regresses the task vector (module docstring)."""
        if self.task_regression == "once":
            return self._regressed_at < 0 and frame >= self.num_init_frames
        every = max(self.update_skill_every_step, 1)
        return frame > self.num_init_frames and frame // every != max(self._regressed_at, 0) // every

    def adapt(self, replay, frame: int, state: TensorDict, task_index: int | None, encode=None) -> TensorDict:
        """While finetuning, regress the task vector when it is due (``task_regression``)
        and give every world the result."""
        if task_index is None or not self.regression_due(frame):
            return state
        if self.task_regression == "urlb":
            task = self.regress_urlb(replay, task_index, encode)
        else:
            task = self.regress_once(replay, task_index, encode)
        self.fix_skill(task)
        self.regressed_at.fill_(frame)
        self._regressed_at = frame
        state["skill"] = self.draw(state.batch_size[0], state["skill"].device)
        return state

    def regress_urlb(self, replay, task_index: int, encode=None) -> torch.Tensor:
        """URLB's ``regress_meta`` on ``replay.sample(lstsq_samples)``: n-step returns on the
        normalised features of the first state."""
        batch = replay.sample(self.lstsq_samples)
        observation = batch["observation"] if encode is None else encode(batch["observation"])
        with torch.no_grad():
            phi = nn.functional.normalize(self.features(observation), dim=1)
        return regress_task_urlb(phi, batch["task_reward"][:, task_index])

    def regress_once(self, replay, task_index: int, encode=None) -> torch.Tensor:
        """The paper's regression on one-step rewards and the next state's features. States:
        ``lstsq_samples`` distinct transitions of ``replay.to_dataset()``; pixels (``encode``
        given): ``replay.sample_transitions(lstsq_samples)`` encoded by ``encode``."""
        if encode is None:
            data = replay.to_dataset()
            rows = torch.randperm(len(data["task_reward"]), device=data["task_reward"].device)[
                : self.lstsq_samples
            ]
            next_observation, reward = data["next_observation"][rows], data["task_reward"][rows, task_index]
        else:
            if not hasattr(replay, "sample_transitions"):
                raise TypeError("APS's task regression on pixels needs replay.sample_transitions(batch_size)")
            data = replay.sample_transitions(self.lstsq_samples)
            next_observation, reward = encode(data["next_observation"]), data["task_reward"][:, task_index]
        with torch.no_grad():
            phi = nn.functional.normalize(self.features(next_observation), dim=1)
        return regress_task(phi, reward)
