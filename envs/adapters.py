"""Gymnasium and TorchRL views of a :class:`~envs.env.BatchedEnv` (or of its pixel env,
:class:`~envs.pixels.PixelEnv`: observations are then ``uint8`` frame stacks in [0, 255]).

Both adapters wrap an existing env (they do not build a second simulator), so the env
and its views share worlds, step counters and seeds: step through one view at a time.
``GymVectorEnv.close()`` closes the wrapped env; ``TorchRLEnv.close()`` does not (torchrl
calls ``close`` when an env object is garbage collected, which must not close an env that
other views still use): close the ``BatchedEnv`` yourself.

``GymVectorEnv``
    A ``gymnasium.vector.VectorEnv`` (gymnasium 1.x API) with same-step autoreset
    (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``), laid out the way
    ``SyncVectorEnv`` lays out its same-step results: ``obs`` is what to act on next
    (the reset observation in worlds whose episode just ended), and for those worlds
    ``infos["final_obs"]`` is an object array of length ``num_envs`` holding the true
    last observation (``None`` elsewhere) with the bool mask ``infos["_final_obs"]``,
    plus ``infos["final_info"]`` / ``infos["_final_info"]``. ``infos["task_reward"]``
    (``(num_envs, len(task_names))`` float32, mask ``"_task_reward"``) holds every
    task's reward for the transition in every world, ended or not; ``final_info`` repeats
    it for the ended worlds. Rewards are float64, terminations and truncations bool,
    as ``SyncVectorEnv`` returns them.

``TorchRLEnv``
    A ``torchrl.envs.EnvBase`` with batch size ``[num_envs]``. ``("next",
    "observation")`` is the true next observation (the final one at a time limit), as
    torchrl expects; ``task_reward`` is part of the observation spec, so it lands under
    ``"next"`` (it is zeros in the output of ``reset``).

    Resets: the wrapped env resets worlds whose episode ended inside that same
    ``step``. ``_reset`` without ``"_reset"`` or with an all-true mask resets every world;
    a partial mask (what torchrl's ``step_and_maybe_reset`` /
    ``rollout(break_when_any_done=False)`` send after a ``done``) returns, for worlds
    that ended in the last step, the reset observation the env already computed in that
    step, and resets any other world it names (e.g. for a ``StepCounter`` transform with
    a shorter horizon) with ``BatchedEnv.reset(ids=...)``. After a ``done`` the next
    ``step`` acts on the reset observation: the world has been reset whether or not
    ``reset`` is called.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from envs.env import BatchedEnv

__all__ = ["GymVectorEnv", "TorchRLEnv"]


def frame_shape(env) -> tuple[int, ...] | None:
    """``(C, H, W)`` of a pixel env's observations, None for state vectors."""
    return tuple(env.obs_dim) if isinstance(env.obs_dim, tuple) else None


class GymVectorEnv(VectorEnv):
    """``gymnasium.vector.VectorEnv`` view of a :class:`BatchedEnv` (same-step autoreset)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: BatchedEnv):
        self.env = env
        self.num_envs = env.num_envs
        frames = frame_shape(env)
        self.single_observation_space = (
            gym.spaces.Box(-np.inf, np.inf, (env.obs_dim,), np.float32)
            if frames is None
            else gym.spaces.Box(0, 255, frames, np.uint8)
        )
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (env.action_dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # An instance attribute, so that changing it does not leak into other instances.
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode in every world (reseeding every world first if ``seed`` is given)."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise TypeError(
                f"seed must be an int or None, got {type(seed).__name__}: worlds are seeded from one "
                "SeedSequence(seed)"
            )
        mask = (options or {}).get("reset_mask")
        if mask is not None and not np.all(mask):
            if seed is not None:
                raise ValueError("reset(seed=...) reseeds every world: it cannot take a partial reset_mask")
            ids = torch.as_tensor(np.flatnonzero(mask), device=self.env.device)
            return self.env.reset(ids=ids)["observation"].cpu().numpy(), {}
        super().reset(seed=None if seed is None else int(seed))
        td = self.env.reset(seed=None if seed is None else int(seed))
        return td["observation"].cpu().numpy(), {}

    def _to_action(self, actions) -> torch.Tensor:
        if isinstance(actions, torch.Tensor):
            return actions.to(device=self.env.device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.env.device)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        out = self.env.step(self._to_action(actions)).to("cpu")
        obs = out["observation"].numpy()
        rewards = out["reward"].numpy().astype(np.float64)
        terminations = out["terminated"].numpy().copy()
        truncations = out["truncated"].numpy().copy()
        task_reward = out["task_reward"].numpy()
        infos: dict[str, Any] = {
            "task_reward": task_reward,
            "_task_reward": np.ones(self.num_envs, dtype=np.bool_),
        }
        done = out["done"].numpy()
        if done.any():
            next_obs = out["next_observation"].numpy()
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = next_obs[i].copy()
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done.copy()
            infos["final_info"] = {
                "task_reward": np.where(done[:, None], task_reward, 0).astype(np.float32),
                "_task_reward": done.copy(),
            }
            infos["_final_info"] = done.copy()
        return obs, rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()

    def __repr__(self) -> str:
        return f"GymVectorEnv({type(self.env).__name__}, num_envs={self.num_envs})"


class TorchRLEnv(EnvBase):
    """``torchrl.envs.EnvBase`` view of a :class:`BatchedEnv`; see the module docstring for resets."""

    def __init__(self, env: BatchedEnv):
        super().__init__(device=env.device, batch_size=torch.Size([env.num_envs]))
        self.env = env
        n, dev = env.num_envs, env.device
        frames = frame_shape(env)
        observation = (
            Unbounded((n, env.obs_dim), dtype=torch.float32, device=dev)
            if frames is None
            else Bounded(0, 255, (n, *frames), dtype=torch.uint8, device=dev)
        )
        self.observation_spec = Composite(
            observation=observation,
            task_reward=Unbounded((n, len(env.task_names)), dtype=torch.float32, device=dev),
            shape=(n,),
            device=dev,
        )
        self.action_spec = Bounded(-1.0, 1.0, (n, env.action_dim), dtype=torch.float32, device=dev)
        self.reward_spec = Unbounded((n, 1), dtype=torch.float32, device=dev)
        self.done_spec = Composite(
            done=Categorical(2, (n, 1), dtype=torch.bool, device=dev),
            terminated=Categorical(2, (n, 1), dtype=torch.bool, device=dev),
            truncated=Categorical(2, (n, 1), dtype=torch.bool, device=dev),
            shape=(n,),
            device=dev,
        )
        # What the env will act on next (reset observation in worlds that just ended)
        # and which worlds ended, from the last step: partial resets read them.
        self._next_obs: torch.Tensor | None = None
        self._last_done: torch.Tensor | None = None

    def _reset_output(self, obs: torch.Tensor) -> TensorDictBase:
        n = self.env.num_envs
        false = torch.zeros(n, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                "observation": obs,
                "task_reward": torch.zeros(n, len(self.env.task_names), device=self.device),
                "done": false,
                "terminated": false.clone(),
                "truncated": false.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        if mask is not None:
            mask = mask.reshape(self.env.num_envs).to(self.device)
        if mask is None or bool(mask.all()) or self._next_obs is None:
            obs = self.env.reset()["observation"]
        else:
            # Worlds that ended in the last step were already reset inside it; others named
            # by the mask (e.g. a StepCounter with a shorter horizon) are reset now.
            not_ended = mask & ~self._last_done
            obs = self._next_obs
            if bool(not_ended.any()):
                obs = self.env.reset(ids=not_ended.nonzero().squeeze(1))["observation"]
        self._next_obs = obs
        self._last_done = torch.zeros(self.env.num_envs, dtype=torch.bool, device=self.device)
        return self._reset_output(obs.clone())

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").to(device=self.device, dtype=torch.float32)
        out = self.env.step(action)
        self._next_obs = out["observation"]
        self._last_done = out["done"]
        return TensorDict(
            {
                "observation": out["next_observation"],
                "task_reward": out["task_reward"],
                "reward": out["reward"].unsqueeze(-1),
                "done": out["done"].unsqueeze(-1),
                "terminated": out["terminated"].unsqueeze(-1),
                "truncated": out["truncated"].unsqueeze(-1),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        self.env.seed(seed)
        # The env now needs a full reset: a stale observation must not serve a partial one.
        self._next_obs = None
        self._last_done = None
