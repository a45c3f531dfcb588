"""The pieces intrinsic rewards share, defined once: running statistics, particle-based
(k-nearest-neighbour) entropy, model ensembles, forward/inverse dynamics models, the
Sinkhorn-Knopp assignment and contrastive losses.

The reward models under ``agents/`` (ICM, Disagreement, RND, APT, ProtoRL, SMM, APS, CIC)
are built from these; each piece is tested here once, against values worked out by hand
(``tests/test_intrinsic.py``). Running statistics are module buffers, so a checkpoint
restores them and a resumed run computes the same rewards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agents.parts.nets import layer_norm_trunk, orthogonal_init


class RunningMeanStd(nn.Module):
    """Mean and variance of everything seen so far, merged batch by batch (Chan et al.'s
    parallel update, as URLB's ``utils.RMS`` does: unbiased batch variance, starting from
    mean 0, variance 1 and a pseudo-count ``epsilon``). A batch of one row adds its mean and
    no variance (URLB's would turn every statistic NaN).

    Args:
        shape: shape of one sample (``()`` for scalars such as rewards).
        epsilon: initial pseudo-count given to the initial mean 0 and variance 1.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch ``(B, *shape)`` into the statistics (no host sync)."""
        batch = x.shape[0]
        delta = x.mean(dim=0) - self.mean
        # One row has no unbiased variance: it moves the mean and adds no spread of its own.
        spread = x.var(dim=0) if batch > 1 else torch.zeros_like(self.var)
        total = self.count + batch
        weight = (batch / total).to(x.dtype)
        old = (self.count / total).to(x.dtype)
        self.var.copy_(old * self.var + weight * spread + delta.square() * old * weight)
        self.mean.add_(delta * weight)
        self.count.copy_(total)

    def normalise(self, x: torch.Tensor, clip: float | None = None, eps: float = 1e-8) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)``, clipped to ``[-clip, clip]`` if given."""
        out = (x - self.mean) / (self.var + eps).sqrt()
        return out if clip is None else out.clamp(-clip, clip)


KNN_DISTANCES = ("exact", "cdist")


def knn_distances(source: torch.Tensor, target: torch.Tensor, k: int, method: str = "exact") -> torch.Tensor:
    """``(B, k)`` Euclidean distances from each row of ``source`` ``(B, D)`` to its ``k``
    nearest rows of ``target`` ``(M, D)``, nearest first. With ``target is source`` a particle
    is its own nearest neighbour (distance 0), as in URLB and CIC, whose rewards this
    reproduces.

    ``method``:

    * ``exact`` (default): the norms of the differences, as URLB's ``PBE``, ProtoRL's queue and
      CIC's ``compute_apt_reward`` take them (a particle's self-distance is exactly 0). They
      materialise all ``(B, M, D)`` differences; here ``torch.cdist`` shortlists the ``2k``
      nearest candidates and only their ``(B, 2k, D)`` differences are formed and measured,
      which gives the same ``k`` values (bit for bit in the tests) unless more than ``k``
      rows sit within cdist's rounding (about 1e-3) of the k-th distance. On a CPU the
      gather costs more than cdist itself (batch 256, 512 dimensions, k 12: about 40 ms
      against 8 ms on one thread).
    * ``cdist``: ``torch.cdist``'s distances themselves. Above 25 rows it computes
      ``sqrt(|x|^2 + |y|^2 - 2 x.y)``, whose rounding gives a particle a self-distance of
      order 1e-3 and moves small distances (issue 17).
    """
    if method not in KNN_DISTANCES:
        raise ValueError(f"knn distance method must be one of {KNN_DISTANCES}, got {method!r}")
    if target.shape[0] < k:
        raise ValueError(f"k={k} nearest neighbours need at least {k} particles, got {target.shape[0]}")
    approximate = torch.cdist(source, target)
    if method == "cdist":
        return approximate.topk(k, dim=1, largest=False, sorted=True).values
    shortlist = approximate.topk(min(2 * k, target.shape[0]), dim=1, largest=False).indices  # (B, 2k)
    distances = torch.norm(source[:, None, :] - target[shortlist], dim=-1, p=2)
    return distances.topk(k, dim=1, largest=False, sorted=True).values


class ParticleEntropy(nn.Module):
    """The particle-based entropy reward of APT (Liu & Abbeel 2021), as URLB's ``PBE``::

        r = log(1 + mean_j max(d_j / c - clip, 0))     (average=True, over the k nearest)
        r = log(1 + max(d_k / c - clip, 0))            (average=False, the k-th nearest)

    over the batch's own particles, where ``c`` is a running statistic of the distances:
    their running mean (``normaliser="mean"``: URLB's APT and APS), their running variance
    (``"variance"``: CIC's released code, whose ``moving_std`` is the variance) or 1
    (``None``: URLB's ICM-APT). ``distance``: how distances are computed
    (:func:`knn_distances`; ``exact`` is URLB's).
    """

    def __init__(
        self,
        k: int = 12,
        average: bool = True,
        normaliser: str | None = "mean",
        clip: float = 0.0,
        distance: str = "exact",
    ):
        super().__init__()
        if normaliser not in (None, "mean", "variance"):
            raise ValueError(f"normaliser must be None, 'mean' or 'variance'; got {normaliser!r}")
        if k < 1 or clip < 0:
            raise ValueError(f"k must be >= 1 and clip >= 0; got k={k}, clip={clip}")
        if distance not in KNN_DISTANCES:
            raise ValueError(f"distance must be one of {KNN_DISTANCES}, got {distance!r}")
        self.k, self.average, self.normaliser, self.clip = k, average, normaliser, clip
        self.distance = distance
        self.stats = RunningMeanStd(())

    @torch.no_grad()
    def forward(self, particles: torch.Tensor) -> torch.Tensor:
        distances = knn_distances(particles, particles, self.k, self.distance)
        if not self.average:
            distances = distances[:, -1:]
        if self.normaliser is not None:
            self.stats.update(distances.reshape(-1))
            scale = self.stats.mean if self.normaliser == "mean" else self.stats.var
            distances = distances / scale
        return torch.log1p((distances - self.clip).clamp_min(0.0).mean(dim=1))


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs evaluated in one batched matmul per layer.

    ``forward(x)`` maps ``(B, input_dim)`` (the same input for every member) or
    ``(members, B, input_dim)`` to ``(members, B, output_dim)``. Each member is initialised
    like its own ``nn.Linear`` stack; ``depth`` is the number of hidden ReLU layers.
    """

    def __init__(self, members: int, input_dim: int, hidden_dim: int, output_dim: int, depth: int = 1):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * depth + [output_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(members)]
            self.weights.append(nn.Parameter(torch.stack([layer.weight.T.detach() for layer in layers])))
            self.biases.append(nn.Parameter(torch.stack([layer.bias[None].detach() for layer in layers])))
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.expand(self.members, *x.shape)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = torch.relu(x)
        return x


class ForwardInverseModel(nn.Module):
    """ICM's dynamics models (Pathak et al. 2017) on an optional learned representation.

    ``trunk``: identity when ``rep_dim`` is None (URLB's ICM on states), else URLB's
    ICM-APT trunk Linear -> LayerNorm -> Tanh to ``rep_dim``. The forward model predicts
    ``trunk(s')`` from ``(trunk(s), a)``; the inverse model predicts ``a`` (tanh) from
    ``(trunk(s), trunk(s'))``. Both are one-hidden-layer ReLU MLPs.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int, rep_dim: int | None = None):
        super().__init__()
        self.trunk = nn.Identity() if rep_dim is None else layer_norm_trunk(obs_dim, rep_dim)
        rep = obs_dim if rep_dim is None else rep_dim
        self.forward_net = nn.Sequential(
            nn.Linear(rep + action_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, rep)
        )
        self.backward_net = nn.Sequential(
            nn.Linear(2 * rep, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, action_dim),
            nn.Tanh(),
        )
        self.apply(orthogonal_init)

    def errors(
        self, observation: torch.Tensor, action: torch.Tensor, next_observation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` L2 errors of the forward model (in representation space) and of the
        inverse model (in action space)."""
        rep, next_rep = self.trunk(observation), self.trunk(next_observation)
        predicted = self.forward_net(torch.cat([rep, action], dim=-1))
        predicted_action = self.backward_net(torch.cat([rep, next_rep], dim=-1))
        return (next_rep - predicted).norm(dim=-1), (action - predicted_action).norm(dim=-1)


def sinkhorn_knopp(scores: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Soft equipartitioned assignment ``(B, K)`` of ``B`` samples to ``K`` prototypes from
    ``scores`` ``(B, K)`` (SwAV's Sinkhorn-Knopp, as ProtoRL uses it): ``Q = exp(scores)``
    is scaled alternately so that every prototype receives ``1/K`` of the mass and every
    sample ``1/B``; the result is renormalised so each sample's row sums to 1."""
    q = torch.exp(scores - scores.max()).T  # (K, B)
    q = q / q.sum()
    prototypes, samples = q.shape
    for _ in range(iterations):
        q = q * ((1.0 / prototypes) / q.sum(dim=1, keepdim=True))
        q = q * ((1.0 / samples) / q.sum(dim=0, keepdim=True))
    return (q / q.sum(dim=0, keepdim=True)).T


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """Standard InfoNCE ``(B,)``: cross-entropy of picking ``key[i]`` for ``query[i]`` among
    all keys of the batch, on cosine similarities divided by ``temperature``."""
    query = nn.functional.normalize(query, dim=1)
    key = nn.functional.normalize(key, dim=1)
    logits = query @ key.T / temperature
    labels = torch.arange(len(query), device=query.device)
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def cic_contrastive_loss(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """CIC's noise-contrastive loss ``(B,)`` (Laskin et al. 2022, released code)::

        -log( exp(q_i.k_i / T) / (sum_j exp(q_i.k_j / T) - e^(1/T)) )

    on unit-normalised ``q``, ``k``: the denominator drops the positive by subtracting its
    largest possible value ``e^(1/T)`` (clamped at 1e-6 for stability)."""
    query = nn.functional.normalize(query, dim=1)
    key = nn.functional.normalize(key, dim=1)
    similarity = torch.exp(query @ key.T / temperature)
    negatives = (similarity.sum(dim=1) - math.exp(1.0 / temperature)).clamp_min(1e-6)
    positives = torch.exp((query * key).sum(dim=1) / temperature)
    return -torch.log(positives / (negatives + 1e-6))
