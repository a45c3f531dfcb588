"""Frame stacks of a pixel replay: one frame stored per step, ``k``-frame stacks rebuilt on read.

The env hands over ``(N, C*k, H, W)`` stacks, the last ``k`` frames oldest first; at a reset the
stack holds the reset frame ``k`` times (DrQ-v2's FrameStack). Storing stacks would keep every
frame ``2k`` times, so the replay keeps only the newest frame of ``observation`` and of
``next_observation`` (:meth:`FrameStacks.newest_frame`), with each world's position in its
episode (0 at the first add and after any ``terminated | truncated``). For ``3x84x84`` uint8
frames that is 2 frames = 42 kB per transition, ~42 GB for 1M transitions, against ~127 GB for
two stacks of 3. Reads rebuild the stacks on the device with index ops: the observation at step
``t`` is the stored frames of ``t-(k-1) .. t``, each step clamped to the episode's first (which
the env's stack repeats) and to the oldest step still in the ring; the next observation at ``s``
is that stack at ``s`` less its oldest frame, then the stored next frame of ``s``. The clamp to
the oldest step means that the at most ``k-1`` oldest stored steps of an episode whose start was
overwritten show the oldest stored frame repeated where the env showed an overwritten one.

Imports torch; reads a :class:`urlb.data.ring.Ring` handed to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from urlb.data.ring import Ring


class FrameStacks:
    """Each stored step's position in its episode, and the stacks rebuilt from stored frames.

    Args:
        frame_stack: frames ``k`` per observation (above 1).
        capacity_steps, num_envs: the ring's rows and worlds.
        device: the ring's device.
    """

    def __init__(self, frame_stack: int, capacity_steps: int, num_envs: int, device: torch.device):
        self.frame_stack = frame_stack
        self.capacity_steps = capacity_steps
        self.num_envs = num_envs
        # Lags of a stack's frames behind its newest, oldest first.
        self._lags = torch.arange(frame_stack - 1, -1, -1, device=device)
        # Each stored step's position in its episode, and each world's at the next add.
        self.episode_step = torch.zeros(capacity_steps, num_envs, dtype=torch.long, device=device)
        self.episode_position = torch.zeros(num_envs, dtype=torch.long, device=device)

    def newest_frame(self, key: str, stack: torch.Tensor, stored: torch.Tensor | None) -> torch.Tensor:
        """``(N, C, ...)``: the last ``C`` channels of a ``(N, C*k, ...)`` stack (a view), checked
        against the ``stored`` frames ``(S, N, C, ...)`` of field ``key`` (None before the first)."""
        k = self.frame_stack
        if stored is None:
            valid = stack.dim() >= 2 and stack.shape[1] % k == 0
        else:
            valid = stack.shape[1:] == (stored.shape[2] * k, *stored.shape[3:])
        if not valid:
            expected = "(N, C*k, ...)" if stored is None else f"(N, {stored.shape[2] * k}, ...)"
            raise ValueError(
                f"{key}: got {tuple(stack.shape)}; frame_stack={k} expects {expected} stacked frames"
            )
        return stack[:, stack.shape[1] - stack.shape[1] // k :]

    def record(self, row: int, ended: torch.Tensor) -> None:
        """Ring row ``row`` was just written: note each world's episode step there; ``ended``
        ``(N,)`` bool marks the worlds whose episode ended at it."""
        self.episode_step[row] = self.episode_position
        # The step after an episode's end is the next episode's first.
        self.episode_position.add_(1).masked_fill_(ended, 0)

    def stacks(
        self, ring: Ring, first: torch.Tensor, last: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``P + (C*k, ...)`` each: the observation stack at flat ring positions ``first`` and
        the next-observation stack at ``last`` (same shape ``P``; pass the same tensor twice
        to read both at one step from one gather of its frames), from ``ring``'s frames."""
        dim = first.dim()
        frames = self._frames(ring, first, self._lags)
        # The next stack drops the observation stack's oldest frame: read only the k-1 newer.
        kept = (
            frames.narrow(dim, 1, self.frame_stack - 1)
            if last is first
            else self._frames(ring, last, self._lags[1:])
        )
        newest = ring.take("next_observation", last).unsqueeze(dim)
        return frames.flatten(dim, dim + 1), torch.cat([kept, newest], dim).flatten(dim, dim + 1)

    def _frames(self, ring: Ring, position: torch.Tensor, lags: torch.Tensor) -> torch.Tensor:
        """``P + (L, C, ...)``: frames of the observation stack at flat ring positions
        ``position`` ``P``, ``lags`` ``(L,)`` steps behind its newest. The frame ``lag`` steps
        back is read from step ``t - min(lag, episode step, steps since the oldest stored)``:
        the episode's first frame repeats as in the env's stack, and a frame already
        overwritten is replaced by the oldest one stored (module docstring)."""
        row, world = position // self.num_envs, position % self.num_envs
        episode_step = self.episode_step.view(-1).index_select(0, position.reshape(-1)).view(position.shape)
        since_oldest = (row - ring.oldest_row) % self.capacity_steps
        back = torch.minimum(lags, torch.minimum(episode_step, since_oldest).unsqueeze(-1))
        frame_row = (row.unsqueeze(-1) - back) % self.capacity_steps
        return ring.take("observation", frame_row * self.num_envs + world.unsqueeze(-1))

    def state_dict(self, ring: Ring) -> dict[str, torch.Tensor]:
        """Each stored step's episode step (``ring``'s stored rows) and each world's current one."""
        return {
            "episode_step": ring.stored_rows(self.episode_step),
            "episode_position": self.episode_position.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved (the keys of a replay's state)."""
        self.episode_step.zero_()
        self.episode_step[: len(state["episode_step"])] = state["episode_step"].to(self.episode_step.device)
        self.episode_position.copy_(state["episode_position"])
