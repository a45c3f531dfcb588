"""The batched environment: ``num_envs`` worlds of one URLB domain, torch in and out.

Each ``step`` takes ``(N, action_dim)`` float32 actions in [-1, 1] on the env's device
and returns a :class:`tensordict.TensorDict` with batch size ``(N,)``:

===================  =====================================================================
``observation``      what the agent acts on next: the reset observation for worlds
                     whose episode just ended, otherwise ``next_observation``
``next_observation`` the observation this transition ended in (the final one at a
                     time limit: bootstrap from it, the episode was truncated)
``reward``           the env's own task reward (zeros for a reward-free domain env)
``task_reward``      every task of the domain, ``(N, len(task_names))`` float32
``terminated``       always False: URLB tasks never terminate
``truncated``        True where the time limit was reached
``done``             ``terminated | truncated``
``step_count``       env steps taken in the episode the transition belongs to
``position``         ``(N, 2)`` where the agent is (``Domain.position``: torso x-y, hand
                     x-y...), matching ``observation``: for skill metrics and skill
                     representations that see the global position; not observed
``next_position``    the same, matching ``next_observation``
===================  =====================================================================

Worlds whose episode ended are reset inside that same ``step``. Seeding is per world:
world ``i``'s resets draw from ``SeedSequence(seed).spawn(num_envs)[i]``, so with the
cpu backend a fixed seed reproduces the same trajectories.
"""

from __future__ import annotations

import contextlib

import mujoco
import numpy as np
import torch
from tensordict import TensorDict

from envs.backends import Backend
from envs.domains.base import Domain


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch CPU threads, then restore the caller's count
    (None: leave it as it is)."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BatchedEnv:
    def __init__(
        self, domain: Domain, backend: Backend, num_envs: int, seed: int = 0, observe_pose: bool = False
    ):
        self.domain = domain.to(backend.device)
        self.backend = backend
        self.num_envs = num_envs
        self.device = backend.device
        self.task = domain.task
        self.task_names = domain.tasks
        # The global pose (Domain.pose) after URLB's observation, if asked (make_env).
        self.observe_pose = observe_pose
        self.obs_dim = domain.obs_dim + (domain.pose_dim if observe_pose else 0)
        self.action_dim = domain.action_dim
        self.episode_steps = domain.episode_steps
        self.control_timestep = domain.control_timestep
        self.action_repeat = 1  # control steps per env step (envs.pixels.PixelEnv: URLB's 2)
        self.frame_stack = 1  # observations per stack (envs.pixels.PixelEnv: URLB's 3)
        self._task_index = domain.tasks.index(domain.task) if domain.task is not None else None
        self._low = domain.action_low.to(self.device)
        self._half_range = ((domain.action_high - domain.action_low) / 2).to(self.device)
        self._scratch = mujoco.MjData(domain.model)
        # torch threads for the env's own torch work in a step (observation, rewards, resets):
        # one while MuJoCo's pool steps on several threads, so that torch's spinning OpenMP
        # workers stay off the pool's cores whatever the caller set (issue 23: 0.48-0.55 of the
        # physics-only rate at 256 quadruped worlds under torch's default, 0.78 with one thread).
        # None leaves the caller's setting.
        self.torch_threads = 1 if getattr(backend, "nthread", 1) > 1 else None
        self._step_count = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        # Host mirror of the step counters: deciding which worlds hit the time limit
        # must not read GPU memory every step.
        self._host_step_count = np.zeros(num_envs, dtype=np.int64)
        self.seed(seed)
        self._needs_reset = True

    # -- seeding and resets -------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Reseed every world: world ``i`` draws from ``SeedSequence(seed).spawn(N)[i]``."""
        self._seed = seed
        children = np.random.SeedSequence(seed).spawn(self.num_envs)
        self._rngs = [self.domain.make_rng(child) for child in children]
        self._needs_reset = True

    def _initial_states(self, ids: list[int]) -> dict[str, torch.Tensor]:
        m, d = self.domain.model, self._scratch
        rows = {"qpos": [], "qvel": [], "act": [], "qacc_warmstart": [], "time": []}
        for i in ids:
            mujoco.mj_resetData(m, d)
            self.domain.initialize_episode(d, self._rngs[i])
            for key, value in rows.items():
                value.append(np.array(getattr(d, key), dtype=np.float64).reshape(-1))
        return {key: torch.as_tensor(np.stack(value)).to(self.device) for key, value in rows.items()}

    def _reset_worlds(self, ids: torch.Tensor) -> None:
        ids_list = ids.tolist()
        self.backend.set_state(ids, self._initial_states(ids_list))
        self._step_count[ids] = 0
        self._host_step_count[ids_list] = 0

    def reset(self, seed: int | None = None, ids: torch.Tensor | None = None) -> TensorDict:
        """Start a new episode in worlds ``ids`` (default: every world; reseeding with
        ``seed`` needs all of them). Returns every world's ``observation`` and
        ``position`` and ``step_count``; rows outside ``ids`` are unchanged."""
        if seed is not None:
            if ids is not None:
                raise ValueError("reset(seed=...) reseeds every world; call it without ids")
            self.seed(seed)
        if ids is None:
            ids = torch.arange(self.num_envs, device=self.device)
        elif self._needs_reset:
            raise RuntimeError("the first reset must reset every world: call env.reset() without ids")
        self._reset_worlds(torch.as_tensor(ids, device=self.device).reshape(-1))
        self._needs_reset = False
        return TensorDict(
            {
                "observation": self.observe(self.backend.view),
                "position": self.domain.position(self.backend.view),
                "step_count": self._step_count.clone(),
            },
            batch_size=[self.num_envs],
            device=self.device,
        )

    # -- stepping -----------------------------------------------------------------------
    def _check_action(self, action: torch.Tensor) -> None:
        if not isinstance(action, torch.Tensor):
            raise TypeError(f"action must be a torch.Tensor, got {type(action).__name__}")
        if action.shape != (self.num_envs, self.action_dim):
            raise ValueError(
                f"action has shape {tuple(action.shape)}; expected ({self.num_envs}, {self.action_dim})"
            )
        if action.dtype != torch.float32:
            raise TypeError(f"action has dtype {action.dtype}; expected torch.float32 (use action.float())")
        if action.device != self.device:
            raise ValueError(
                f"action is on {action.device}; the env runs on {self.device} (use action.to(env.device))"
            )
        # No host sync on a GPU: an asynchronous assert fails the next synchronising call.
        torch._assert_async(torch.isfinite(action).all(), "action contains NaN or inf")

    def observe(self, view) -> torch.Tensor:
        """The observation: URLB's, then the global pose when ``observe_pose``."""
        observation = self.domain.observation(view)
        if not self.observe_pose:
            return observation
        return torch.cat([observation, self.domain.pose(view)], dim=1)

    def action_to_ctrl(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> native actuator units, in float32 as URLB does. Out-of-range actions
        are clipped to the native bounds, which is what MuJoCo's ctrl clamping does to
        dm_control's unclipped ones."""
        return self._low + self._half_range * (action.clamp(-1.0, 1.0) + 1)

    def step(self, action: torch.Tensor, auto_reset: bool = True, render: bool = False) -> TensorDict:
        """One control step of every world. With ``auto_reset`` (the default) worlds whose
        episode ended are reset inside the step; without it they stay at their final state
        until :meth:`reset_ended` (the pixel env renders the final frame first).
        ``render``: the warp backend runs its render hook inside the step's graph."""
        with torch_threads(self.torch_threads):
            return self._step(action, auto_reset, render)

    def _step(self, action: torch.Tensor, auto_reset: bool, render: bool) -> TensorDict:
        if self._needs_reset:
            raise RuntimeError("call env.reset() before env.step()")
        self._check_action(action)
        self.backend.step(self.action_to_ctrl(action), render=render)
        view = self.backend.view
        self._step_count += 1
        self._host_step_count += 1
        next_obs = self.observe(view)
        next_position = self.domain.position(view)
        rewards = self.domain.rewards(view)
        task_reward = torch.stack([rewards[t] for t in self.task_names], dim=1)
        reward = (
            task_reward[:, self._task_index]
            if self._task_index is not None
            else torch.zeros_like(task_reward[:, 0])
        )
        truncated = self._step_count >= self.episode_steps
        step_count = self._step_count.clone()
        obs, position = next_obs, next_position
        if auto_reset and self.episodes_ended().size:
            reset = self.reset_ended()
            obs = torch.where(truncated[:, None], reset["observation"], next_obs)
            position = torch.where(truncated[:, None], reset["position"], next_position)
        return TensorDict(
            {
                "observation": obs,
                "next_observation": next_obs,
                "position": position,
                "next_position": next_position,
                "reward": reward,
                "task_reward": task_reward,
                "terminated": torch.zeros_like(truncated),
                "truncated": truncated,
                "done": truncated.clone(),
                "step_count": step_count,
            },
            batch_size=[self.num_envs],
            device=self.device,
        )

    def episodes_ended(self) -> np.ndarray:
        """Worlds at their time limit (host counters: no device read)."""
        return np.flatnonzero(self._host_step_count >= self.episode_steps)

    def reset_ended(self) -> TensorDict:
        """Reset the worlds whose episode ended; every world's ``observation`` and ``position``
        (the others' unchanged)."""
        ended = self.episodes_ended()
        if len(ended):
            self._reset_worlds(torch.as_tensor(ended, device=self.device))
        view = self.backend.view
        return TensorDict(
            {"observation": self.observe(view), "position": self.domain.position(view)},
            batch_size=[self.num_envs],
            device=self.device,
        )

    # -- physics state ------------------------------------------------------------------
    def physics_state(self) -> dict[str, torch.Tensor]:
        """Every world's ``qpos``, ``qvel``, ``act`` (plus ``qacc_warmstart``, ``time``)."""
        return self.backend.get_state()

    def set_physics_state(
        self, state: dict[str, torch.Tensor], ids: torch.Tensor | None = None
    ) -> TensorDict:
        """Put worlds ``ids`` (default all) into ``state`` (``qpos``, ``qvel``, ``act``
        required; ``qacc_warmstart``, ``time`` optional) and return their observation and
        task rewards as computed by a forward pass, as dm_control's ``set_state`` +
        ``forward`` would."""
        ids = torch.arange(self.num_envs, device=self.device) if ids is None else ids.to(self.device)
        missing = {"qpos", "qvel", "act"} - set(state)
        if missing:
            raise KeyError(f"set_physics_state needs {sorted(missing)}")
        self.backend.set_state(ids, {k: torch.as_tensor(v, device=self.device) for k, v in state.items()})
        self._needs_reset = False
        view = self.backend.view
        rewards = self.domain.rewards(view)
        return TensorDict(
            {
                "observation": self.observe(view)[ids],
                "position": self.domain.position(view)[ids],
                "task_reward": torch.stack([rewards[t] for t in self.task_names], dim=1)[ids],
            },
            batch_size=[len(ids)],
            device=self.device,
        )

    def set_step_count(self, step_count: torch.Tensor) -> None:
        """Restore per-world episode step counters (resume from a checkpoint)."""
        if step_count.shape != (self.num_envs,) or bool((step_count < 0).any()):
            raise ValueError(f"step_count must be ({self.num_envs},) non-negative integers")
        self._step_count.copy_(step_count.to(self._step_count))
        self._host_step_count[:] = step_count.cpu().numpy()

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue these worlds exactly: physics state,
        episode step counters and every world's reset RNG (tensors and ints only)."""
        rngs = [rng.get_state() for rng in self._rngs]
        return {
            "physics": self.physics_state(),
            "step_count": self._step_count.clone(),
            "rng_keys": torch.as_tensor(np.stack([r[1] for r in rngs]).astype(np.int64)),
            "rng_pos": torch.as_tensor([r[2] for r in rngs]),
            "rng_has_gauss": torch.as_tensor([r[3] for r in rngs]),
            "rng_cached_gaussian": torch.as_tensor([r[4] for r in rngs], dtype=torch.float64),
            "needs_reset": self._needs_reset,
        }

    def load_state_dict(self, state: dict) -> None:
        keys = state["rng_keys"].numpy().astype(np.uint32)
        for i, rng in enumerate(self._rngs):
            rng.set_state(
                (
                    "MT19937",
                    keys[i],
                    int(state["rng_pos"][i]),
                    int(state["rng_has_gauss"][i]),
                    float(state["rng_cached_gaussian"][i]),
                )
            )
        self.set_physics_state(state["physics"])
        self.set_step_count(state["step_count"])
        self._needs_reset = bool(state["needs_reset"])

    def close(self) -> None:
        pass
