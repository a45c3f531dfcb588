"""Replay for ``N`` parallel worlds on the env's device, with URLB's n-step returns.

The loop that fills and reads it::

    replay = ReplayBuffer(capacity=1_000_000, num_envs=env.num_envs, device=env.device, nstep=3)
    observation = env.reset()["observation"]
    while training:
        action = agent.act(observation, meta)
        out = env.step(action)
        replay.add(observation, action, out["next_observation"], out["task_reward"],
                   out["terminated"], out["truncated"], extras={"skill": meta["skill"]})
        observation = out["observation"]
        metrics = agent.update(replay.sample(batch_size=1024, generator=generator))

Storage is one :class:`tensordict.TensorDict` of batch size ``(capacity_steps, N)``: a ring
over env steps, time-major, one column per world (:class:`urlb.data.ring.Ring`). Neither
:meth:`add` nor :meth:`sample` reads device memory back to the host: the count of steps
written is a host integer, and sampling draws its indices on the device.

**Which starts are valid.** Number the stored steps chronologically ``0 .. S-1`` (``0`` is the
oldest still in the ring, ``S = min(steps written, capacity_steps)``). A start ``(t, world)``
may be sampled iff

1. ``t + n - 1 <= S - 1``: the ``n`` steps ``t .. t+n-1`` are all stored (none overwritten,
   none still to come), and
2. no episode ended (``terminated | truncated``) at any of the steps ``t .. t+n-2`` in that
   world. An episode may end at step ``t+n-1``: the return then stops there, as in URLB.

Starts are drawn uniformly over the valid ``(t, world)`` pairs, without rejection, from a
device-side FIFO of ring positions (:class:`urlb.data.starts.StartIndex`); :meth:`valid_starts`
recomputes the same set from scratch (checkpoint loading, tests).

**Pixel observations** (``frame_stack = k > 1``): only the newest frame of each stack is
stored, with each step's position in its episode, and reads rebuild the ``k``-frame stacks
on the device (:mod:`urlb.data.frames` says what that keeps and how it reads).

The parts: :mod:`urlb.data.ring` (storage; :mod:`urlb.data.memory` checks that it fits),
:mod:`urlb.data.starts` (the FIFO of starts), :mod:`urlb.data.frames` (frame stacks),
:mod:`urlb.data.datasets` (the format :meth:`ReplayBuffer.save_dataset` writes). This module
imports those, torch and tensordict: no agent, no env.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tensordict import TensorDict

from urlb.data.datasets import write_dataset
from urlb.data.frames import FrameStacks
from urlb.data.memory import Need, check_needs
from urlb.data.ring import Ring
from urlb.data.starts import StartIndex

# Fields every step carries; anything else arrives through ``extras``.
STEP_FIELDS = ("observation", "action", "next_observation", "task_reward", "terminated", "truncated")
# The stacked fields when frame_stack > 1: one frame stored, k frames read.
FRAME_FIELDS = ("observation", "next_observation")


class ReplayBuffer:
    """A ring of ``ceil(capacity / num_envs)`` env steps of ``num_envs`` worlds.

    Args:
        capacity: transitions to keep (rounded up to a whole number of env steps).
        num_envs: worlds written per :meth:`add`.
        device: where the storage lives (the env's device).
        nstep: steps summed into one sampled return (URLB uses 3).
        discount: per-step discount of the n-step return.
        frame_stack: frames ``k`` in each pixel observation ``(N, C*k, H, W)`` (URLB uses 3);
            1 for state vectors. Above 1 only the newest frame is stored and reads rebuild the
            stacks (module docstring).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        device: torch.device | str,
        nstep: int = 1,
        discount: float = 0.99,
        frame_stack: int = 1,
    ):
        if capacity < 1 or num_envs < 1 or nstep < 1 or frame_stack < 1:
            raise ValueError(
                f"capacity, num_envs, nstep, frame_stack must be >= 1; "
                f"got {capacity}, {num_envs}, {nstep}, {frame_stack}"
            )
        self.capacity_steps = math.ceil(capacity / num_envs)
        if nstep > self.capacity_steps:
            raise ValueError(f"nstep={nstep} exceeds the ring's {self.capacity_steps} steps")
        self.num_envs = num_envs
        # Resolve "cuda" to "cuda:0" so that device checks compare like with like.
        self.device = torch.empty(0, device=device).device
        # The index (and the frame stacks' episode steps) are allocated here, the ring at the
        # first add (checked then against its fields): refuse a capacity whose index alone does
        # not fit before allocating it (replay.capacity=1e12 died in the allocator).
        index = Need(
            "replay index",
            self.device,
            self.capacity_steps * num_envs,
            self.bytes_per_transition(0, frame_stack),
            "transitions",
            "replay.capacity",
        )
        check_needs([index])
        self.nstep = nstep
        self.discount = discount
        # discount**k for k < n, in float64 before rounding once to the rewards' float32.
        self._powers = (discount ** torch.arange(nstep, dtype=torch.float64, device=self.device)).float()
        self._offsets = torch.arange(nstep, device=self.device)
        self.frame_stack = frame_stack
        self._ring = Ring(self.capacity_steps, num_envs, self.device)
        self._starts = StartIndex(self.capacity_steps, num_envs, self.device)
        self._frame_stacks = (
            FrameStacks(frame_stack, self.capacity_steps, num_envs, self.device) if frame_stack > 1 else None
        )

    @staticmethod
    def bytes_per_transition(step_bytes: int, frame_stack: int = 1) -> int:
        """Bytes a buffer holds per transition whose fields take ``step_bytes`` (one world's
        step; stacked observations count one frame each): the fields, the index of valid
        starts and, with stacked frames, each step's position in its episode."""
        return step_bytes + 8 + (8 if frame_stack > 1 else 0)

    # -- writing --------------------------------------------------------------------------
    def add(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        task_reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Store one env step of every world.

        Args:
            observation: ``(N, obs_dim)`` what the agent acted on at step ``t``; with
                ``frame_stack = k > 1``, ``(N, C*k, ...)`` stacked frames, oldest first.
            action: ``(N, action_dim)``.
            next_observation: ``(N, obs_dim)`` where the transition ended (before any reset);
                ``(N, C*k, ...)`` like ``observation`` when frames are stacked.
            task_reward: ``(N, T)`` every task's reward.
            terminated, truncated: ``(N,)`` bool.
            extras: ``(N, ...)`` values at step ``t`` (skills, physics state, position); the
                same keys, shapes and dtypes at every call. A key named ``next_<name>`` holds
                a value where the transition ended, like ``next_observation``, and is sampled
                at step ``t+n-1``.
        """
        ring = self._ring
        if self._frame_stacks is not None:
            newest_frame, columns = self._frame_stacks.newest_frame, ring.columns
            observation = newest_frame("observation", observation, columns.get("observation"))
            next_observation = newest_frame(
                "next_observation", next_observation, columns.get("next_observation")
            )
        fields = {
            "observation": observation,
            "action": action,
            "next_observation": next_observation,
            "task_reward": task_reward,
            "terminated": terminated,
            "truncated": truncated,
        }
        extras = extras or {}
        clash = set(extras) & set(STEP_FIELDS)
        if clash:
            raise ValueError(f"extras may not reuse the step fields {sorted(clash)}")
        fields.update(extras)
        if ring.storage is None:
            self._allocate(fields)
        else:
            ring.check(fields)
        step = ring.steps_written
        row = step % self.capacity_steps
        if step >= self.capacity_steps:
            self._starts.retire(row)
        for key, value in fields.items():
            ring.columns[key][row] = value
        if self._frame_stacks is not None:
            self._frame_stacks.record(row, terminated | truncated)
        if step + 1 >= self.nstep:
            self._admit(step + 1 - self.nstep)
        ring.steps_written += 1

    def _allocate(self, fields: dict[str, torch.Tensor]) -> None:
        """Allocate the ring shaped like one step's ``(N, ...)`` fields, and settle which
        fields a sample reads where."""
        self._ring.allocate(fields)
        # Which fields a sample reads at its first step and which at its last (next_*),
        # settled once here rather than on every sample. Stacked observations are not among
        # them: they are rebuilt from frames (_stacks).
        extras = [key for key in self._ring.columns if key not in STEP_FIELDS]
        self._start_keys = ("observation", "action", *(k for k in extras if not k.startswith("next_")))
        self._end_keys = ("next_observation", *(k for k in extras if k.startswith("next_")))
        self._step_keys = tuple(self._ring.columns)
        if self.frame_stack > 1:
            self._start_keys, self._end_keys, self._step_keys = (
                tuple(key for key in keys if key not in FRAME_FIELDS)
                for keys in (self._start_keys, self._end_keys, self._step_keys)
            )

    def _admit(self, start_step: int) -> None:
        """Env step ``start_step + n - 1`` was just written: append the worlds whose n-step
        window from ``start_step`` holds no episode end at its first n-1 steps."""
        row = start_step % self.capacity_steps
        if row + self.nstep - 1 <= self.capacity_steps:
            window = slice(row, row + self.nstep - 1)  # a view: no index kernel
        else:
            window = (row + self._offsets[:-1]) % self.capacity_steps
        columns = self._ring.columns
        ended = columns["terminated"][window] | columns["truncated"][window]  # (n-1, N)
        self._starts.admit(row, ~ended.any(0))

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        """Transitions stored."""
        return len(self._ring)

    def valid_starts(self) -> torch.Tensor:
        """``(S - n + 1, N)`` bool, recomputed from the stored flags: which chronological starts
        ``(t, world)`` may be sampled (condition 2 of the module docstring; every ``t`` here
        meets condition 1 by construction)."""
        ring = self._ring
        num_starts = max(ring.stored_steps - self.nstep + 1, 0)
        ended_inside = torch.zeros(num_starts, self.num_envs, dtype=torch.bool, device=self.device)
        if ring.storage is None:
            return ~ended_inside
        ended = ring.columns["terminated"] | ring.columns["truncated"]
        ended = ended.roll(-ring.oldest_row, dims=0)  # chronological order
        for k in range(self.nstep - 1):
            ended_inside |= ended[k : k + num_starts]
        return ~ended_inside

    def _indexed_starts(self) -> torch.Tensor:
        """``(K, 2)`` chronological ``(t, world)`` of the FIFO's entries, oldest first (reads
        the count back to the host: for tests, never on a hot path)."""
        position = self._starts.entries()
        step = (position // self.num_envs - self._ring.oldest_row) % self.capacity_steps
        return torch.stack([step, position % self.num_envs], dim=1)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TensorDict:
        """``batch_size`` n-step transitions, uniform over the valid starts.

        Returns a TensorDict of batch size ``(B,)``: ``observation``, ``action`` and every extra
        at ``t``; ``next_observation`` and every ``next_*`` extra of step ``t+n-1``;
        ``task_reward`` ``(B, T)`` =
        ``sum_k discount**k * task_reward[t+k]``; ``discount`` ``(B,)`` = ``discount**n``, or 0
        where step ``t+n-1`` terminated (a truncation keeps it: URLB bootstraps through the
        time limit). ``generator`` must live on the buffer's device. Stacked observations
        come back as ``(B, C*k, ...)`` stacks.
        """
        position = self._draw_starts(batch_size, generator)
        return self._gather_rows(position // self.num_envs, position % self.num_envs)

    def sample_sequences(self, batch_size: int, generator: torch.Generator | None = None) -> TensorDict:
        """``batch_size`` windows of ``n`` consecutive steps of one world, uniform over the
        same valid starts as :meth:`sample`: within one episode, which may end at the last
        step (sequence models: world models, decision transformers, skill segments).

        Returns a TensorDict of batch size ``(B, n)`` holding every stored field at each
        step of the window, rewards undiscounted, observations stacked."""
        position = self._draw_starts(batch_size, generator)
        row, world = position // self.num_envs, position % self.num_envs
        window = ((row[:, None] + self._offsets) % self.capacity_steps) * self.num_envs + world[:, None]
        return self._read_steps(window)

    def sample_transitions(self, batch_size: int, generator: torch.Generator | None = None) -> TensorDict:
        """``batch_size`` one-step transitions, uniform over every stored ``(step, world)``
        whatever ``nstep`` (regressions on single steps, such as APS's task vector).

        Returns a TensorDict of batch size ``(B,)`` holding every stored field of the drawn
        step: ``task_reward`` is that step's own, ``next_*`` where that step ended, and
        observations stacked."""
        if len(self) == 0:
            raise ValueError("sample_transitions needs a stored step; the buffer is empty")
        # Stored steps fill the whole ring or, before it wraps, its first rows: positions
        # 0 .. len-1 either way.
        position = torch.randint(0, len(self), (batch_size,), generator=generator, device=self.device)
        return self._read_steps(position)

    def _read_steps(self, position: torch.Tensor) -> TensorDict:
        """Every stored field at flat ring positions ``position`` (any shape), observations
        stacked; batch size ``position.shape``."""
        out = {key: self._ring.take(key, position) for key in self._step_keys}
        if self.frame_stack > 1:
            out["observation"], out["next_observation"] = self._stacks(position, position)
        return TensorDict(out, batch_size=position.shape, device=self.device)

    def _draw_starts(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """``(B,)`` flat ring positions of valid starts, drawn uniformly on the device."""
        stored = self._ring.stored_steps
        if stored < self.nstep:
            raise ValueError(f"sampling needs {self.nstep} stored steps, the buffer holds {stored}")
        return self._starts.draw(batch_size, generator)

    def _gather(self, step: torch.Tensor, world: torch.Tensor) -> TensorDict:
        """The n-step transitions starting at chronological steps ``step`` ``(B,)`` (0 = the
        oldest stored) of worlds ``world`` ``(B,)``; no validity check. Keys as in :meth:`sample`."""
        return self._gather_rows((self._ring.oldest_row + step) % self.capacity_steps, world)

    def _gather_rows(self, row: torch.Tensor, world: torch.Tensor) -> TensorDict:
        """As :meth:`_gather`, with starts given as ring rows ``(B,)``."""
        rows = (row[:, None] + self._offsets) % self.capacity_steps  # (B, n)
        window = rows * self.num_envs + world[:, None]  # (B, n) flat positions
        first, last = window[:, 0], window[:, -1]
        take = self._ring.take
        out = {key: take(key, first) for key in self._start_keys}
        out |= {key: take(key, last) for key in self._end_keys}
        if self.frame_stack > 1:
            out["observation"], out["next_observation"] = self._stacks(
                first, first if self.nstep == 1 else last
            )
        out["task_reward"] = (self._powers[:, None] * take("task_reward", window)).sum(1)
        out["discount"] = (~take("terminated", last)).float() * self.discount**self.nstep
        # The window's last step hit a time limit (agents that mark time limits done read it:
        # METRA's ``bootstrap_time_limits=false``).
        out["truncated"] = take("truncated", last)
        return TensorDict(out, batch_size=[len(row)], device=self.device)

    def _stacks(self, first: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The observation stack at flat ring positions ``first`` and the next-observation
        stack at ``last`` (:meth:`urlb.data.frames.FrameStacks.stacks`)."""
        return self._frame_stacks.stacks(self._ring, first, last)

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Settings and the count of steps written as ints, the stored rows as tensors (ring
        order); loads with ``torch.load(weights_only=True)``. The FIFO is rebuilt on load.
        With stacked frames, also each stored step's and each world's current episode step."""
        ring = self._ring
        state = {
            "capacity_steps": self.capacity_steps,
            "num_envs": self.num_envs,
            "nstep": self.nstep,
            "frame_stack": self.frame_stack,
            "discount": torch.tensor(self.discount, dtype=torch.float64),
            "steps_written": ring.steps_written,
            "storage": {key: ring.stored_rows(value) for key, value in ring.columns.items()},
        }
        if self._frame_stacks is not None:
            state |= self._frame_stacks.state_dict(ring)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore exactly what :meth:`state_dict` saved; the constructor arguments must match.
        Sampling afterwards draws the same batches from the same generator state: the FIFO is
        rebuilt in the order it always holds (chronological, then by world)."""
        expected = {
            "capacity_steps": self.capacity_steps,
            "num_envs": self.num_envs,
            "nstep": self.nstep,
            "frame_stack": self.frame_stack,
        }
        for key, value in expected.items():
            # Checkpoints from before frame stacks hold state vectors.
            if state.get(key, 1) != value:
                raise ValueError(f"replay state has {key}={state.get(key, 1)}, this buffer {value}")
        if float(state["discount"]) != self.discount:
            raise ValueError(
                f"replay state has discount={float(state['discount'])}, this buffer {self.discount}"
            )
        self._ring.clear()
        self._ring.steps_written = int(state["steps_written"])
        self._starts.clear()
        storage = state["storage"]
        if storage:
            self._allocate({key: value[0].to(self.device) for key, value in storage.items()})
            self._ring.load_rows(storage)
        if self._frame_stacks is not None:
            self._frame_stacks.load_state_dict(state)
        self._rebuild_index()

    def _rebuild_index(self) -> None:
        """Fill the empty FIFO with :meth:`valid_starts`, oldest first."""
        valid = self.valid_starts()  # (L, N)
        self._starts.fill(self._ring.chronological_rows(len(valid)), valid)

    # -- datasets -------------------------------------------------------------------------
    def to_dataset(self) -> dict[str, torch.Tensor]:
        """Every stored transition, world by world, chronological within a world.

        Returns ``(M, ...)`` tensors with ``M = len(self)``: the step fields, every extra,
        ``world`` (int64) and ``step`` (int64, the index of the :meth:`add` call that wrote it).
        A trajectory ends where ``terminated | truncated``, and where ``world`` changes.
        State observations only: a frame-stacked buffer raises (use :meth:`sample_transitions`).
        """
        if self.frame_stack > 1:
            raise ValueError("datasets hold state observations: a frame-stacked replay cannot be exported")
        return self._ring.to_dataset()

    def save_dataset(self, path: str | Path, meta: dict) -> Path:
        """Write :meth:`to_dataset` as a dataset directory (see :func:`urlb.data.datasets.write_dataset`)."""
        meta = {"num_envs": self.num_envs, "transitions": len(self), **meta}
        return write_dataset(path, self.to_dataset(), meta)
