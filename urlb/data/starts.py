"""The valid n-step starts of a replay ring, as a device-side FIFO of flat ring positions
``row * N + world``: what :meth:`urlb.data.replay.ReplayBuffer.sample` draws from.

Whether a start is valid (:mod:`urlb.data.replay`'s docstring) is settled the moment its last
step ``t+n-1`` is written, and it stays valid until step ``t`` is overwritten; starts are
therefore admitted and retired in chronological order, and the valid ones live in a FIFO
(``O(N)`` work per admitted row, ``O(B)`` per draw). Nothing here reads device memory back to
the host on the hot path.

Imports torch only.
"""

from __future__ import annotations

import torch

# Upper bound of the integer draw reduced modulo the number of valid starts: the modulo bias
# is at most (valid starts) / 2**62, far below anything a batch could show.
_DRAW_HIGH = 2**62


class StartIndex:
    """The valid starts of a ring of ``capacity_steps`` rows of ``num_envs`` worlds: flat ring
    positions between the logical counters ``head`` and ``tail`` (device scalars), plus one
    dump slot at the end that absorbs the writes of invalid starts.

    Args:
        capacity_steps: rows of the ring.
        num_envs: worlds per row.
        device: where the FIFO lives (the ring's device).
    """

    def __init__(self, capacity_steps: int, num_envs: int, device: torch.device):
        self.capacity_steps = capacity_steps
        self.num_envs = num_envs
        self.device = device
        self._worlds = torch.arange(num_envs, device=device)
        self.clear()

    def clear(self) -> None:
        """Empty the FIFO."""
        slots = self.capacity_steps * self.num_envs
        self._positions = torch.zeros(slots + 1, dtype=torch.long, device=self.device)
        self._head = torch.zeros((), dtype=torch.long, device=self.device)
        self._tail = torch.zeros((), dtype=torch.long, device=self.device)
        # How many FIFO entries start in each ring row: retired when the row is overwritten.
        self._starts_in_row = torch.zeros(self.capacity_steps, dtype=torch.long, device=self.device)

    @property
    def _slots(self) -> int:
        return len(self._positions) - 1

    def retire(self, row: int) -> None:
        """Row ``row`` is about to be overwritten: its starts, the oldest in the FIFO, leave it."""
        self._head += self._starts_in_row[row]
        self._starts_in_row[row] = 0

    def admit(self, row: int, valid: torch.Tensor) -> None:
        """Append the starts at ring row ``row`` of the worlds where ``valid`` ``(N,)`` bool."""
        rank = valid.cumsum(0)
        slots = self._slots
        # Valid worlds go to the FIFO's next free slots in world order, the rest to the dump slot.
        position = torch.where(valid, (self._tail + rank - 1) % slots, slots)
        self._positions[position] = row * self.num_envs + self._worlds
        self._tail += rank[-1]
        self._starts_in_row[row] = rank[-1]

    def fill(self, rows: torch.Tensor, valid: torch.Tensor) -> None:
        """Fill the empty FIFO with the starts at ring rows ``rows`` ``(L,)``, oldest first, of
        the worlds where ``valid`` ``(L, N)`` bool."""
        positions = (rows[:, None] * self.num_envs + self._worlds)[valid]
        self._positions[: len(positions)] = positions
        self._tail.fill_(len(positions))
        self._starts_in_row[rows] = valid.sum(1)

    def draw(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """``(B,)`` flat ring positions of valid starts, drawn uniformly on the device."""
        num_valid = self._tail - self._head
        torch._assert_async(num_valid > 0, "no valid n-step start: every window crosses an episode end")
        draw = torch.randint(0, _DRAW_HIGH, (batch_size,), generator=generator, device=self.device)
        return self._positions[(self._head + draw % num_valid) % self._slots]

    def entries(self) -> torch.Tensor:
        """``(K,)`` flat ring positions of the FIFO's entries, oldest first (reads the count back
        to the host: for tests, never on a hot path)."""
        logical = self._head + torch.arange(int(self._tail - self._head), device=self.device)
        return self._positions[logical % self._slots]
