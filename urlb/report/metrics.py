"""Aggregate metrics over runs x tasks with stratified-bootstrap confidence intervals.

The conventions of Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" (the ``rliable`` package), which URLB papers report. A score matrix has
shape ``(runs, tasks)``: one expert-normalised score per run (seed) and task. Every aggregate
also accepts a batch ``(..., runs, tasks)`` and returns shape ``(...)``, which is how the
bootstrap evaluates all its resamples at once.

* **mean**: mean over tasks of the per-task mean score;
* **median**: median over tasks of the per-task mean score;
* **IQM**: the 25% trimmed mean of all ``runs x tasks`` scores pooled (drop the lowest and
  highest ``floor(N/4)`` of the ``N`` scores, average the rest: ``scipy.stats.trim_mean``);
* **optimality gap**: ``gamma - mean(min(score, gamma))`` over all scores, ``gamma = 1``: how
  far below expert level the runs fall (lower is better);
* **probability of improvement** ``P(X > Y)``: for each task, the probability that a run of X
  scores above a run of Y (ties count one half, the Mann-Whitney U statistic over ``m n``),
  averaged over tasks;
* **performance profile**: the fraction of all ``runs x tasks`` scores above ``tau``.

Confidence intervals are percentile intervals of a **stratified bootstrap**: each resample
draws, for every task independently, ``runs`` runs with replacement from that task's runs
(the uncertainty of repeating the experiment with new seeds on the same tasks). Resampling
indices are drawn exactly as rliable's ``StratifiedBootstrap`` draws them (one
``choice(runs, (runs, tasks))`` per resample from a legacy ``numpy.random.RandomState``), so
with the same seed the intervals equal rliable's to floating-point precision; the tests check
that against rliable itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AGGREGATES",
    "Interval",
    "aggregate_intervals",
    "iqm",
    "mean",
    "median",
    "optimality_gap",
    "performance_profile",
    "performance_profile_intervals",
    "probability_of_improvement",
    "probability_of_improvement_interval",
    "stratified_bootstrap",
]

# Resamples evaluated per block, bounding memory at reps x runs x tasks floats per block.
_BLOCK = 4096


def _matrix(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim < 2 or scores.shape[-1] == 0 or scores.shape[-2] == 0:
        raise ValueError(
            f"{name} must have shape (..., runs, tasks) with runs, tasks >= 1; got {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or inf")
    return scores


# -- aggregates ---------------------------------------------------------------------------------
def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of the per-task mean: ``(..., runs, tasks) -> (...)``."""
    scores = _matrix(scores)
    return scores.mean(axis=-2).mean(axis=-1)


def median(scores: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean: ``(..., runs, tasks) -> (...)``."""
    scores = _matrix(scores)
    return np.median(scores.mean(axis=-2), axis=-1)


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean of all runs x tasks scores pooled: ``(..., runs, tasks) -> (...)``.

    With ``N`` pooled scores, the ``floor(N / 4)`` lowest and highest are dropped (as
    ``scipy.stats.trim_mean(x, 0.25)``); for ``N < 4`` nothing is dropped.
    """
    scores = _matrix(scores)
    pooled = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    cut = int(0.25 * pooled.shape[-1])
    return pooled[..., cut : pooled.shape[-1] - cut].mean(axis=-1)


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """``gamma - mean(min(score, gamma))`` over all runs x tasks: ``(..., runs, tasks) -> (...)``."""
    scores = _matrix(scores)
    return gamma - np.minimum(scores, gamma).mean(axis=(-2, -1))


# Display names and functions, in the order of the four-panel figure (rliable's order).
AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Median": median,
    "IQM": iqm,
    "Mean": mean,
    "Optimality Gap": optimality_gap,
}


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    """``P(X > Y)`` averaged over tasks: ``(..., m, tasks), (..., n, tasks) -> (...)``.

    Per task, the fraction of the ``m n`` run pairs in which X's run scores higher, ties
    counting one half (the Mann-Whitney U statistic of X divided by ``m n``).
    """
    x, y = _matrix(scores_x, "scores_x"), _matrix(scores_y, "scores_y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"X has {x.shape[-1]} tasks and Y {y.shape[-1]}; compare them on the same tasks")
    # (..., m, 1, tasks) against (..., 1, n, tasks)
    difference = x[..., :, None, :] - y[..., None, :, :]
    wins = (difference > 0).astype(np.float64) + 0.5 * (difference == 0)
    return wins.mean(axis=(-3, -2)).mean(axis=-1)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all runs x tasks scores strictly above each ``tau``: ``(..., runs, tasks),
    (T,) -> (..., T)`` (rliable's run-score distribution)."""
    scores = _matrix(scores)
    taus = np.asarray(taus, dtype=np.float64)
    pooled = scores.reshape(*scores.shape[:-2], -1)
    return (pooled[..., None, :] > taus[:, None]).mean(axis=-1)


# -- the stratified bootstrap -------------------------------------------------------------------
def _random_state(seed: int | np.random.RandomState | None) -> np.random.RandomState:
    if isinstance(seed, np.random.RandomState):
        return seed
    return np.random.RandomState(seed)


def stratified_bootstrap(
    scores: np.ndarray, reps: int, rng: np.random.RandomState, block: int = _BLOCK
) -> Iterator[np.ndarray]:
    """Yield resampled score matrices, ``(block, runs, tasks)`` at a time, ``reps`` in all.

    Resample ``r`` takes, for each task ``t``, the runs ``indices[r, :, t]`` of that task
    (drawn with replacement, independently per task).
    """
    scores = _matrix(scores)
    runs, tasks = scores.shape
    task_index = np.arange(tasks)
    done = 0
    while done < reps:
        count = min(block, reps - done)
        indices = rng.choice(runs, (count, runs, tasks), replace=True)
        yield scores[indices, task_index]
        done += count


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval over axis 0 (the bootstrap's own arithmetic: arch's
    ``conf_int(method="percentile")``, linear interpolation between order statistics)."""
    alpha = (1.0 - confidence) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1.0 - alpha)], axis=0)
    return low, high


def aggregate_intervals(
    score_dict: Mapping[str, np.ndarray],
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: int | np.random.RandomState | None = 0,
    aggregates: Mapping[str, Callable[[np.ndarray], np.ndarray]] = AGGREGATES,
) -> dict[str, dict[str, Interval]]:
    """Point estimates and stratified-bootstrap intervals of every aggregate, per method.

    Args:
        score_dict: method name -> score matrix ``(runs, tasks)``; methods may differ in runs.
        reps: bootstrap resamples (rliable's default, 50,000).
        confidence: interval coverage.
        seed: seed of one legacy RandomState drawn from in ``score_dict``'s order (rliable's
            ``np.random.seed(seed)`` then ``get_interval_estimates`` with one function returning
            all ``aggregates`` gives the same intervals).
        aggregates: name -> aggregate function (batched over leading axes).

    Returns:
        ``{method: {aggregate name: Interval}}``.
    """
    rng = _random_state(seed)
    out = {}
    for method, scores in score_dict.items():
        scores = _matrix(scores, method)
        blocks = [
            np.stack([aggregate(resampled) for aggregate in aggregates.values()], axis=-1)
            for resampled in stratified_bootstrap(scores, reps, rng)
        ]
        low, high = _percentile_interval(np.concatenate(blocks), confidence)
        out[method] = {
            name: Interval(float(aggregate(scores)), float(lo), float(hi))
            for (name, aggregate), lo, hi in zip(aggregates.items(), low, high, strict=True)
        }
    return out


def probability_of_improvement_interval(
    scores_x: np.ndarray,
    scores_y: np.ndarray,
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: int | np.random.RandomState | None = 0,
) -> Interval:
    """``P(X > Y)`` with a stratified bootstrap interval: X's and Y's runs are resampled
    independently within each task (rliable's ``StratifiedIndependentBootstrap``, which draws
    X's indices, then Y's, for each resample)."""
    x, y = _matrix(scores_x, "scores_x"), _matrix(scores_y, "scores_y")
    rng = _random_state(seed)
    (m, tasks), n = x.shape, y.shape[0]
    x_indices = np.empty((reps, m, tasks), dtype=np.int64)
    y_indices = np.empty((reps, n, tasks), dtype=np.int64)
    for rep in range(reps):
        x_indices[rep] = rng.choice(m, (m, tasks), replace=True)
        y_indices[rep] = rng.choice(n, (n, tasks), replace=True)
    task_index = np.arange(tasks)
    values = np.concatenate(
        [
            probability_of_improvement(
                x[x_indices[i : i + _BLOCK], task_index], y[y_indices[i : i + _BLOCK], task_index]
            )
            for i in range(0, reps, _BLOCK)
        ]
    )
    low, high = _percentile_interval(values, confidence)
    return Interval(float(probability_of_improvement(x, y)), float(low), float(high))


def performance_profile_intervals(
    score_dict: Mapping[str, np.ndarray],
    taus: np.ndarray,
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: int | np.random.RandomState | None = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per method, the performance profile at ``taus`` and its pointwise bootstrap interval:
    ``{method: (profile, low, high)}``, each of shape ``(T,)`` (rliable's
    ``create_performance_profile`` with its defaults: run-score distribution, 2,000 resamples)."""
    rng = _random_state(seed)
    out = {}
    for method, scores in score_dict.items():
        scores = _matrix(scores, method)
        values = np.concatenate(
            [performance_profile(resampled, taus) for resampled in stratified_bootstrap(scores, reps, rng)]
        )
        low, high = _percentile_interval(values, confidence)
        out[method] = (performance_profile(scores, taus), low, high)
    return out
