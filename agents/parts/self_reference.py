"""Self-Reference (SR): an add-on that shows an actor-critic agent its own history.

Zhao, Zhu, Lu, Lin, Liu, Huang, "Self-Referencing Agents for Unsupervised Reinforcement
Learning", Neural Networks 188 (2025) 107448; preprint "Augmenting Unsupervised Reinforcement
Learning with Self-Reference", arXiv 2311.09692. No code was released ("data will be made
available on request"); this follows the journal text, equation by equation:

* Eq. (1), the query module: a Gaussian query actor ``pi_query(q | s)`` over the state space
  and a value ``V_query(s)``, trained with PPO on the reward the actor trains on (intrinsic
  while pretraining, the task's while finetuning) plus ``L_identity = ||E[q] - s||^2``:
  :class:`QueryModule`, :func:`query_loss`. Half of the pretraining episodes query with the
  state itself and do not train it (``state_query_share``).
* Eq. (2), retrieval: top-``k`` cosine neighbours of the query among the last ``context_size``
  states of ended episodes, each with its ``D`` following states:
  ``agents.parts.reference_bank`` (:meth:`ReferenceBank.retrieve`).
* Eqs. (3)-(7), aggregation: ``Q = QEncoder(s)``, ``K = KEncoder(E)``, ``V = VEncoder(E)``,
  ``T = TimeEmbed(0..D-1)``, ``u = MultiHeadAttention(Q, K + T, V + T)``:
  :class:`ReferenceAggregator`. The reference vector ``u`` (``dim`` = U) is appended to the
  actor's and the critic's input (``agents/actor_critic.py``), so the critic's loss trains it.
* Algorithm 1: the reference set grows by each finished episode, in pretraining and in
  finetuning; finetuning starts from the pretraining's (the snapshot carries the bank).
* Table 1's "Freeze SR": ``pretrain=false`` / ``finetune=false`` make ``u`` zeros in that phase
  (the query module then neither acts nor trains); Fig. 5's hand-made references are
  ``query=state`` (neighbours of ``s``), ``query=uniform`` (uniformly drawn states) and
  ``query=noise`` (``u ~ N(0, 1)``).

What the paper leaves open is an assumption named in docs/fidelity.md (U, heads, the encoders,
the advantage estimator of PPO on replay minibatches, the identity loss squared).

Imports torch, tensordict and agents.parts only.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict
from torch import nn

from agents.parts.reference_bank import ReferenceBank

QUERIES = ("learned", "state", "uniform", "noise")


def query_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantage: torch.Tensor,
    value: torch.Tensor,
    value_target: torch.Tensor,
    mean_query: torch.Tensor,
    state: torch.Tensor,
    weight: torch.Tensor,
    clip: float = 0.2,
    value_coef: float = 0.5,
    identity_coef: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Eq. (1): ``L = L_PPO + L_identity`` over the rows of ``weight`` (1: the query module chose
    that transition's query, 0: not), CleanRL's PPO terms (no entropy bonus, its default):

        ratio = exp(log_prob - old_log_prob)
        L_clip = mean(max(-A ratio, -A clip(ratio, 1 - clip, 1 + clip)))
        L_value = mean((V - V_target)^2) / 2        (CleanRL's 0.5 * mean, times value_coef)
        L_identity = mean(||E[q] - s||^2)

    Shapes: ``(B,)`` for the first five and ``weight``; ``(B, d)`` for ``mean_query`` and ``state``.
    ``advantage`` is used as given (normalise it before)."""
    rows = log_prob.shape
    if not (
        old_log_prob.shape == advantage.shape == value.shape == value_target.shape == weight.shape == rows
    ):
        raise ValueError(f"query_loss: per-row shapes differ from {tuple(rows)}")
    if mean_query.shape != state.shape or mean_query.shape[0] != rows[0]:
        raise ValueError(f"query_loss: mean_query {tuple(mean_query.shape)}, state {tuple(state.shape)}")
    count = weight.sum().clamp(min=1.0)
    ratio = (log_prob - old_log_prob).exp()
    clipped = -advantage * ratio.clamp(1.0 - clip, 1.0 + clip)
    policy = (torch.max(-advantage * ratio, clipped) * weight).sum() / count
    value_loss = 0.5 * ((value - value_target).pow(2) * weight).sum() / count
    identity = ((mean_query - state).pow(2).sum(-1) * weight).sum() / count
    loss = policy + value_coef * value_loss + identity_coef * identity
    return loss, {
        "sr_query_policy_loss": policy.detach(),
        "sr_query_value_loss": value_loss.detach(),
        "sr_query_identity_loss": identity.detach(),
        "sr_query_ratio": ((ratio * weight).sum() / count).detach(),
    }


def normalised(advantage: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CleanRL's advantage normalisation ``(A - mean) / (std + 1e-8)`` over the weighted rows."""
    count = weight.sum().clamp(min=1.0)
    mean = (advantage * weight).sum() / count
    var = ((advantage - mean).pow(2) * weight).sum() / (count - 1.0).clamp(min=1.0)
    return (advantage - mean) / (var.sqrt() + 1e-8)


def tanh_mlp(input_dim: int, hidden: int, output: int, last_std: float) -> nn.Sequential:
    """CleanRL's PPO network: two tanh layers, orthogonal weights (gain sqrt 2, last ``last_std``)."""
    layers = [
        nn.Linear(input_dim, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, output),
    ]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, last_std if layer is layers[-1] else math.sqrt(2))
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class QueryModule(nn.Module):
    """``pi_query(q | s) = N(mu(s), exp(log_std))`` over the state space, and ``V_query(s)``
    (CleanRL's continuous PPO: 64-wide tanh networks, state-independent log std at 0)."""

    def __init__(self, obs_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.mean = tanh_mlp(obs_dim, hidden_dim, obs_dim, 0.01)
        self.log_std = nn.Parameter(torch.zeros(obs_dim))
        self.value = tanh_mlp(obs_dim, hidden_dim, 1, 1.0)

    def distribution(self, state: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mean(state), self.log_std.exp())


class ReferenceAggregator(nn.Module):
    """Eqs. (3)-(7): multi-head cross-attention from the state to the retrieved windows.

    ``Q``, ``K`` and ``V`` encoders are linear maps of a state to ``dim`` (one token per
    retrieved state, ``k * D`` tokens); ``TimeEmbed`` is a learned ``(D, dim)`` table added to
    keys and values by position in the window."""

    def __init__(self, obs_dim: int, dim: int, heads: int, length: int):
        super().__init__()
        self.q_encoder = nn.Linear(obs_dim, dim)
        self.k_encoder = nn.Linear(obs_dim, dim)
        self.v_encoder = nn.Linear(obs_dim, dim)
        self.time = nn.Embedding(length, dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, state: torch.Tensor, windows: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        """``u (B, dim)`` from ``state (B, d)``, ``windows (B, k, D, d)``, ``found (B, k)``;
        zeros for a state with nothing retrieved (an empty bank)."""
        batch, k, length, _ = windows.shape
        time = self.time.weight[:length]
        keys = (self.k_encoder(windows) + time).reshape(batch, k * length, -1)
        values = (self.v_encoder(windows) + time).reshape(batch, k * length, -1)
        missing = (~found).repeat_interleave(length, dim=1)
        none = missing.all(dim=1, keepdim=True)
        query = self.q_encoder(state).unsqueeze(1)
        out = self.attention(query, keys, values, key_padding_mask=missing & ~none, need_weights=False)[0]
        return out.squeeze(1) * (~none).to(out.dtype)


class SelfReference(nn.Module):
    """The SR add-on of one actor-critic agent: bank, query module, aggregator.

    Args (defaults: the paper's, where it gives them):
        obs_dim: size of a state (SR keys, queries and retrieved states are states).
        neighbours: ``k``, neighbours retrieved per query (10).
        length: ``D``, states per retrieved window (5).
        context_size: retrievable states, the latest of ended episodes (1e5).
        dim: ``U``, the attention's width and the reference vector's size (not in the paper).
        heads: attention heads (not in the paper).
        query: ``learned`` (the query module, the paper's), ``state`` (neighbours of ``s``),
            ``uniform`` (uniformly drawn states), ``noise`` (``u ~ N(0, 1)``): Fig. 5.
        state_query_share: share of pretraining episodes that query with the state itself and
            do not train the query module (0.5).
        pretrain, finetune: use SR in that phase; false: ``u = 0`` there (Table 1's freeze).
        lr: Adam rate of the attention and its encoders, which the critic's loss trains (the
            backbone's lr: "updated through the RL learning objective").
        query_lr, query_hidden_dim, clip, value_coef, identity_coef, max_grad_norm: the query
            module's PPO (CleanRL's: 3e-4, 64, 0.2, 0.5, Eq. (1)'s 1, 0.5).
        knn_chunk: queries per similarity product (memory, not results).
    """

    def __init__(
        self,
        obs_dim: int,
        neighbours: int = 10,
        length: int = 5,
        context_size: int = 100_000,
        dim: int = 64,
        heads: int = 4,
        query: str = "learned",
        state_query_share: float = 0.5,
        pretrain: bool = True,
        finetune: bool = True,
        lr: float = 1e-4,
        query_lr: float = 3e-4,
        query_hidden_dim: int = 64,
        clip: float = 0.2,
        value_coef: float = 0.5,
        identity_coef: float = 1.0,
        max_grad_norm: float = 0.5,
        knn_chunk: int = 256,
    ):
        super().__init__()
        if not isinstance(obs_dim, int):
            raise ValueError("self_reference: SR keys are state vectors; use obs=states (or drop addon=sr)")
        if query not in QUERIES:
            raise ValueError(f"self_reference.query={query!r}; known: {', '.join(QUERIES)}")
        if neighbours < 1 or length < 1 or dim % heads or not 0.0 <= state_query_share <= 1.0:
            raise ValueError(
                f"self_reference: neighbours ({neighbours}) and length ({length}) must be >= 1, dim "
                f"({dim}) a multiple of heads ({heads}), state_query_share ({state_query_share}) in [0, 1]"
            )
        self.obs_dim, self.neighbours, self.length, self.dim = obs_dim, neighbours, length, dim
        self.query, self.state_query_share = query, state_query_share
        self.phases = {"pretrain": pretrain, "finetune": finetune}
        self.clip, self.value_coef, self.identity_coef = clip, value_coef, identity_coef
        self.max_grad_norm, self.knn_chunk = max_grad_norm, knn_chunk
        self.bank = ReferenceBank(obs_dim, context_size)
        self.aggregator = ReferenceAggregator(obs_dim, dim, heads, length)
        self.query_module = QueryModule(obs_dim, query_hidden_dim)
        self.aggregator_opt = torch.optim.Adam(self.aggregator.parameters(), lr=lr)
        self.query_opt = torch.optim.Adam(self.query_module.parameters(), lr=query_lr, eps=1e-5)

    def active(self, pretraining: bool) -> bool:
        return self.phases["pretrain" if pretraining else "finetune"]

    # -- carried state (per world) --------------------------------------------------------------
    def init_state(self, num_envs: int, device, pretraining: bool) -> dict[str, torch.Tensor]:
        """``sr_episode``/``sr_row``: each world's episode id and last bank row; ``sr_learned``:
        the query module chooses this episode's queries; ``sr_query``/``sr_log_prob``/``sr_acted``:
        the last act's query, its log-probability, and that ``act`` chose it."""
        return {
            "sr_episode": self.bank.new_episodes(num_envs).to(device),
            "sr_row": torch.full((num_envs,), -1, dtype=torch.long, device=device),
            "sr_learned": self.draw_learned(num_envs, device, pretraining),
            "sr_query": torch.zeros(num_envs, self.obs_dim, device=device),
            "sr_log_prob": torch.zeros(num_envs, 1, device=device),
            "sr_acted": torch.zeros(num_envs, 1, device=device),
        }

    def draw_learned(self, num: int, device, pretraining: bool) -> torch.Tensor:
        """Which of ``num`` new episodes the query module serves (all when finetuning; none
        where SR is off or the queries are hand-made)."""
        if self.query != "learned" or not self.active(pretraining):
            return torch.zeros(num, dtype=torch.bool, device=device)
        if not pretraining:
            return torch.ones(num, dtype=torch.bool, device=device)
        return torch.rand(num, device=device) >= self.state_query_share

    def replay_extras(self, state: TensorDict) -> dict[str, torch.Tensor]:
        flags = torch.cat([state["sr_acted"], state["sr_learned"][:, None].float()], dim=-1)
        return {"sr_query": state["sr_query"], "sr_log_prob": state["sr_log_prob"], "sr_flags": flags}

    def record(self, state: TensorDict, step_output: TensorDict, pretraining: bool) -> TensorDict:
        """Algorithm 1's ``D_reference <- D_reference U {o}``: store each world's new state and
        end the finished episodes (training worlds only: the online loop's ``adapt``)."""
        done = step_output["done"]
        bank = self.bank
        state["sr_row"] = bank.write(step_output["next_observation"], state["sr_episode"], state["sr_row"])
        bank.end_episodes(state["sr_episode"], done)
        state["sr_episode"] = bank.renew(state["sr_episode"], done)
        state["sr_row"] = torch.where(done, torch.full_like(state["sr_row"], -1), state["sr_row"])
        fresh = self.draw_learned(done.shape[0], done.device, pretraining)
        state["sr_learned"] = torch.where(done, fresh, state["sr_learned"])
        state["sr_acted"] = torch.zeros_like(state["sr_acted"])
        return state

    # -- the reference vector -------------------------------------------------------------------
    def choose_queries(self, observation: torch.Tensor, state: TensorDict, explore: bool) -> None:
        """At ``act``: each world's query (a draw from ``pi_query`` in its learned episodes, its
        mean when not exploring, else the state), stored in ``state`` for the replay."""
        learned = state["sr_learned"][:, None]
        dist = self.query_module.distribution(observation)
        drawn = dist.sample() if explore else dist.mean
        state["sr_query"] = torch.where(learned, drawn, observation)
        state["sr_log_prob"] = dist.log_prob(drawn).sum(-1, keepdim=True) * learned
        state["sr_acted"] = torch.ones_like(state["sr_acted"])

    def vector(self, observation: torch.Tensor, queries: torch.Tensor, pretraining: bool) -> torch.Tensor:
        """Eqs. (2)-(7): the reference vector ``u (B, dim)`` of states ``(B, d)`` queried with
        ``queries (B, d)``; zeros in a phase SR is off."""
        if not self.active(pretraining):
            return observation.new_zeros(observation.shape[0], self.dim)
        if self.query == "noise":
            return torch.randn(observation.shape[0], self.dim, device=observation.device)
        if self.query == "uniform":
            windows, found = self.bank.uniform(observation.shape[0], self.neighbours, self.length)
        else:
            windows, found = self.bank.retrieve(queries, self.neighbours, self.length, self.knn_chunk)
        return self.aggregator(observation, windows, found)

    def batch_queries(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries of a replay batch's states: the one its ``act`` used (the state where the
        transition was not acted on, e.g. seed frames), and for next states the query
        module's mean in learned episodes, else the state."""
        observation, next_observation = batch["observation"], batch["next_observation"]
        acted = batch["sr_flags"][:, :1] > 0
        learned = batch["sr_flags"][:, 1:] > 0
        queries = torch.where(acted, batch["sr_query"], observation)
        with torch.no_grad():
            next_mean = self.query_module.mean(next_observation)
        return queries, torch.where(learned, next_mean, next_observation)

    # -- the query module's update ----------------------------------------------------------------
    def update(self, batch: TensorDict, reward: torch.Tensor, pretraining: bool) -> dict[str, torch.Tensor]:
        """One step of Eq. (1) on a replay batch with the reward the critic trained on: the
        advantage is the one-step TD error ``r + discount * V(s') - V(s)`` (``discount``:
        the batch's n-step discount), normalised over the module's own transitions."""
        if self.query != "learned" or not self.active(pretraining):
            return {}
        observation = batch["observation"]
        weight = ((batch["sr_flags"][:, 0] > 0) & (batch["sr_flags"][:, 1] > 0)).float()
        module = self.query_module
        value = module.value(observation).squeeze(-1)
        with torch.no_grad():
            target = reward.reshape(-1) + batch["discount"].reshape(-1) * module.value(
                batch["next_observation"]
            ).squeeze(-1)
            advantage = normalised(target - value, weight)
        dist = module.distribution(observation)
        log_prob = dist.log_prob(batch["sr_query"]).sum(-1)
        loss, metrics = query_loss(
            log_prob,
            batch["sr_log_prob"].reshape(-1),
            advantage,
            value,
            target,
            dist.mean,
            observation,
            weight,
            self.clip,
            self.value_coef,
            self.identity_coef,
        )
        self.query_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), self.max_grad_norm)
        self.query_opt.step()
        return metrics | {"sr_query_share": weight.mean()}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"aggregator": self.aggregator_opt, "query": self.query_opt}

    def bank_bytes(self) -> int:
        """Bytes of the bank's buffers (a snapshot carries them)."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.bank.buffers())


def reference_bytes(obs_dim: int, context_size: int) -> int:
    """Bytes of a bank of ``context_size`` states of ``obs_dim`` floats: the states, the episode
    ids and successor rows (int64) and the ended flags (what a snapshot carries)."""
    return context_size * (4 * obs_dim + 8 + 8 + 1)


def reference_row_bytes(obs_dim: int, knn_chunk: int) -> int:
    """Device bytes per reference row while SR runs: the row itself, its normalised copy in the
    search, and one float of the score matrix per query of a chunk (masked in place)."""
    return reference_bytes(obs_dim, 1) + 4 * obs_dim + 4 * knn_chunk


def replay_extra_bytes(obs_dim: int) -> int:
    """Bytes SR adds to each replay transition: the query, its log-probability, two flags."""
    return 4 * obs_dim + 4 + 8
