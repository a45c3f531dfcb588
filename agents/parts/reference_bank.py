"""Self-Reference's history: the reference set of past states and its k-NN retrieval.

Zhao et al., "Self-Referencing Agents for Unsupervised Reinforcement Learning", Neural Networks
188 (2025) 107448 (arXiv 2311.09692), Sec. 4.1: the retrievable states are the latest
``|D_reference| = 1e5`` states of the agent's own experience, restricted to episodes that have
ended ("capped at the agent's last episode's experiences"); a query retrieves its top ``k``
neighbours by cosine similarity and, for each, the ``D`` states that follow it in its episode,
Eq. (2): ``E = {(s_t1 : s_t1+D-1), ..., (s_tk : s_tk+D-1)}``.

:class:`ReferenceBank` keeps that set as module buffers (a snapshot carries it into finetuning,
Algorithm 1's ``D_reference <- D_reference^PT``; a checkpoint restores it exactly): a ring of
``capacity`` states, each with its episode's id, the row of its successor in the episode and
whether its episode has ended. :func:`cosine_knn` is the search (Faiss in the paper, an exact
matrix product here, in chunks), :meth:`ReferenceBank.windows` Eq. (2)'s ``D``-state lists.

Imports torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NOT_ENDED = -2  # an episode id no row carries (empty rows carry -1)


def cosine_knn(
    queries: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor, k: int, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``keys`` most cosine-similar to each query, among ``valid`` rows.

    Args:
        queries: ``(B, d)``; keys: ``(C, d)``; valid: ``(C,)`` bool.
        k: neighbours per query (``k <= C``).
        chunk: queries per matrix product (bounds the ``(chunk, C)`` score matrix).

    Returns:
        ``(indices (B, k) int64, found (B, k) bool)``: ``found`` is false where fewer than
        ``k`` rows are valid (those indices point at invalid rows and must be masked).
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"cosine_knn shapes: queries {tuple(queries.shape)}, keys {tuple(keys.shape)}")
    if valid.shape != keys.shape[:1] or not 1 <= k <= keys.shape[0]:
        raise ValueError(f"cosine_knn: valid {tuple(valid.shape)} for {keys.shape[0]} keys, k={k}")
    keys = F.normalize(keys, dim=-1)
    indices, found = [], []
    for part in F.normalize(queries, dim=-1).split(chunk):
        scores = (part @ keys.T).masked_fill_(~valid, float("-inf"))  # in place: no (chunk, C) copy
        top = scores.topk(k, dim=-1)
        indices.append(top.indices)
        found.append(torch.isfinite(top.values))
    return torch.cat(indices), torch.cat(found)


class ReferenceBank(nn.Module):
    """The last ``capacity`` states the agent saw in training, in episodes.

    Rows are written one env step at a time (:meth:`write`, one row per world); a row becomes
    retrievable when its episode ends (:meth:`end_episodes`), so a query never retrieves the
    current episode (Sec. 4.1). Each row links to the next row of its episode; a link whose
    target was overwritten or belongs to another episode ends the window there (the last
    state repeats), as does the end of an episode.

    Args:
        obs_dim: size of a state.
        capacity: rows kept (the paper's context window, 1e5).
    """

    def __init__(self, obs_dim: int, capacity: int):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.register_buffer("states", torch.zeros(capacity, obs_dim))
        self.register_buffer("episode", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("successor", torch.arange(capacity))
        self.register_buffer("ended", torch.zeros(capacity, dtype=torch.bool))
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))
        self.register_buffer("next_episode", torch.zeros((), dtype=torch.long))

    def new_episodes(self, count: int) -> torch.Tensor:
        """``count`` fresh episode ids ``(count,)``."""
        ids = self.next_episode + torch.arange(count, device=self.next_episode.device)
        self.next_episode += count
        return ids

    def renew(self, episode: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Episode ids after a step: a fresh id where ``done`` (``(N,)`` bool), else the same."""
        order = torch.cumsum(done.long(), 0) - 1
        fresh = self.next_episode + order
        self.next_episode += done.long().sum()
        return torch.where(done, fresh, episode)

    @torch.no_grad()
    def write(self, states: torch.Tensor, episode: torch.Tensor, last_row: torch.Tensor) -> torch.Tensor:
        """Store one step of ``N`` worlds: ``states (N, d)`` of episodes ``episode (N,)``, whose
        previous rows are ``last_row (N,)`` (-1: none). Returns the rows written ``(N,)``."""
        count = states.shape[0]
        if count > self.capacity:
            raise ValueError(f"a step of {count} worlds does not fit a bank of {self.capacity} rows")
        rows = (self.cursor + torch.arange(count, device=states.device)) % self.capacity
        self.states[rows] = states.to(self.states.dtype)
        self.episode[rows] = episode
        self.ended[rows] = False
        self.successor[rows] = rows
        linked = (last_row >= 0) & (self.episode[last_row.clamp(min=0)] == episode)
        self.successor[torch.where(linked, last_row, rows)] = rows
        self.cursor.copy_((self.cursor + count) % self.capacity)
        return rows

    @torch.no_grad()
    def end_episodes(self, episode: torch.Tensor, done: torch.Tensor) -> None:
        """Make the rows of the episodes ``episode[done]`` retrievable."""
        ended = torch.where(done, episode, torch.full_like(episode, NOT_ENDED))
        self.ended |= torch.isin(self.episode, ended)

    def retrievable(self) -> torch.Tensor:
        """``(C,)`` bool: rows of ended episodes."""
        return self.ended & (self.episode >= 0)

    def windows(self, rows: torch.Tensor, length: int) -> torch.Tensor:
        """Eq. (2): each row's state and the ``length - 1`` states after it in its episode,
        ``(*rows.shape, length, d)``; the last state repeats where the episode (or what the
        bank still holds of it) ends first."""
        current, steps = rows, [self.states[rows]]
        for _ in range(length - 1):
            following = self.successor[current]
            current = torch.where(self.episode[following] == self.episode[current], following, current)
            steps.append(self.states[current])
        return torch.stack(steps, dim=-2)

    def retrieve(
        self, queries: torch.Tensor, k: int, length: int, chunk: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (2) for each query ``(B, d)``: windows ``(B, k, length, d)`` of its ``k`` cosine
        neighbours and ``found (B, k)`` (false where the bank holds fewer retrievable rows)."""
        rows, found = cosine_knn(queries, self.states, self.retrievable(), min(k, self.capacity), chunk)
        return self.windows(rows, length), found

    def uniform(self, count: int, k: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fig. 5's hand-made reference: ``k`` windows from uniformly drawn retrievable rows for
        each of ``count`` states, ``(count, k, length, d)`` and ``found (count, k)``."""
        valid = self.retrievable()
        if not bool(valid.any()):
            rows = torch.zeros(count, k, dtype=torch.long, device=valid.device)
            return self.windows(rows, length), torch.zeros(count, k, dtype=torch.bool, device=valid.device)
        rows = torch.multinomial(valid.float(), count * k, replacement=True).reshape(count, k)
        return self.windows(rows, length), torch.ones(count, k, dtype=torch.bool, device=valid.device)
