"""The shared pieces of the intrinsic rewards (agents/parts/intrinsic.py), against values worked
out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.parts.intrinsic import (
    EnsembleMLP,
    ForwardInverseModel,
    ParticleEntropy,
    RunningMeanStd,
    cic_contrastive_loss,
    info_nce,
    knn_distances,
    sinkhorn_knopp,
)


def test_running_mean_std_merges_batches_like_urlb():
    stats = RunningMeanStd((), epsilon=1e-4)
    stats.update(torch.tensor([1.0, 2.0, 3.0]))
    n = 1e-4 + 3
    # mean 0 + (2 - 0) * 3 / n; var (1 * 1e-4 + var([1,2,3]) * 3 + 2^2 * 1e-4 * 3 / n) / n
    assert float(stats.mean) == pytest.approx(2 * 3 / n, rel=1e-6)
    assert float(stats.var) == pytest.approx((1e-4 + 1.0 * 3 + 4 * 1e-4 * 3 / n) / n, rel=1e-6)
    # many batches: the pooled mean and variance of everything seen
    torch.manual_seed(0)
    data = torch.randn(50, 64, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([5.0, -1.0, 0.0])
    stats = RunningMeanStd((3,))
    for batch in data:
        stats.update(batch)
    flat = data.reshape(-1, 3)
    assert torch.allclose(stats.mean, flat.mean(0), atol=1e-4)
    # URLB weights each batch's unbiased variance by its size: B/(B-1) above the pooled one
    assert torch.allclose(stats.var, flat.var(0) * 64 / 63, rtol=2e-3)
    assert set(stats.state_dict()) == {"mean", "var", "count"}  # checkpointed


def test_normalise_whitens_and_clips():
    stats = RunningMeanStd((2,))
    stats.mean.copy_(torch.tensor([1.0, -2.0]))
    stats.var.copy_(torch.tensor([4.0, 0.25]))
    x = torch.tensor([[3.0, -2.0], [101.0, -100.0]])
    out = stats.normalise(x, clip=5.0, eps=0.0)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [5.0, -5.0]]))


def test_knn_distances_count_a_particle_as_its_own_neighbour():
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    distances = knn_distances(points, points, 2)
    assert torch.allclose(
        distances, torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]), atol=1e-5
    )
    with pytest.raises(ValueError, match="at least 3 particles"):
        knn_distances(points[:2], points[:2], 3)
    with pytest.raises(ValueError, match="knn distance method"):
        knn_distances(points, points, 2, "manhattan")


def test_exact_knn_distances_are_urlbs_norms_of_differences():
    """URLB's PBE (and ProtoRL, CIC) take ``torch.norm`` of every difference: a particle's
    self-distance is exactly 0. The default reproduces those values bit for bit; ``cdist``
    (its matrix-product form above 25 rows) does not."""
    torch.manual_seed(0)
    particles = torch.randn(64, 16) * 3
    urlb = torch.norm(particles[:, None, :] - particles[None, :, :], dim=-1, p=2)
    urlb = urlb.topk(12, dim=1, largest=False, sorted=True).values
    exact = knn_distances(particles, particles, 12)
    assert torch.equal(exact, urlb) and torch.equal(exact[:, 0], torch.zeros(64))
    approximate = knn_distances(particles, particles, 12, "cdist")
    assert approximate[:, 0].abs().max() > 0 and torch.allclose(approximate, urlb, atol=0.05)


def test_particle_entropy_by_hand():
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    # average over the 2 nearest, no normalisation, no clip: log(1 + mean(d))
    plain = ParticleEntropy(k=2, average=True, normaliser=None, clip=0.0)
    expected = torch.log1p(torch.tensor([0.5, 0.5, 1.0, 1.5]))
    assert torch.allclose(plain(points), expected, atol=1e-5)
    # the k-th neighbour alone
    kth = ParticleEntropy(k=2, average=False, normaliser=None)
    assert torch.allclose(kth(points), torch.log1p(torch.tensor([1.0, 1.0, 2.0, 3.0])), atol=1e-5)
    # divided by the running mean of the 8 distances (0,1,0,1,0,2,0,3: 7/8 after one merge), clip 0.1
    scaled = ParticleEntropy(k=2, average=True, normaliser="mean", clip=0.1)
    mean = 7 / 8 * 8 / (8 + 1e-4)
    d = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]) / mean
    expected = torch.log1p((d - 0.1).clamp_min(0).mean(1))
    assert torch.allclose(scaled(points), expected, atol=1e-5)
    # CIC divides by the running variance instead
    by_var = ParticleEntropy(k=2, average=True, normaliser="variance", clip=0.0)
    reward = by_var(points)
    var = float(by_var.stats.var)
    expected = torch.log1p((torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]) / var).mean(1))
    assert torch.allclose(reward, expected, atol=1e-5)
    with pytest.raises(ValueError, match="normaliser"):
        ParticleEntropy(normaliser="std")


def test_sinkhorn_by_hand_and_marginals():
    # scores ln3, 0 / 0, 0: one iteration worked out by hand gives rows (3/5, 2/5), (1/3, 2/3)
    scores = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    assert torch.allclose(sinkhorn_knopp(scores, iterations=1), torch.tensor([[0.6, 0.4], [1 / 3, 2 / 3]]))
    torch.manual_seed(0)
    q = sinkhorn_knopp(torch.randn(64, 8) * 3, iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)  # each sample's assignment sums to 1
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), atol=1e-3)  # prototypes equipartitioned


def test_ensemble_members_are_independent_mlps():
    torch.manual_seed(0)
    ensemble = EnsembleMLP(3, 4, 8, 2, depth=1)
    x = torch.randn(5, 4)
    out = ensemble(x)
    assert out.shape == (3, 5, 2)
    for i in range(3):
        hidden = torch.relu(x @ ensemble.weights[0][i] + ensemble.biases[0][i])
        assert torch.allclose(out[i], hidden @ ensemble.weights[1][i] + ensemble.biases[1][i], atol=1e-6)
    assert not torch.allclose(out[0], out[1])  # members start different


def test_forward_inverse_model_errors():
    model = ForwardInverseModel(obs_dim=3, action_dim=2, hidden_dim=16)
    obs, action, next_obs = torch.randn(4, 3), torch.rand(4, 2) * 2 - 1, torch.randn(4, 3)
    forward_error, inverse_error = model.errors(obs, action, next_obs)
    predicted = model.forward_net(torch.cat([obs, action], 1))
    assert torch.allclose(forward_error, (next_obs - predicted).norm(dim=1))
    assert forward_error.shape == inverse_error.shape == (4,)
    trunk = ForwardInverseModel(obs_dim=3, action_dim=2, hidden_dim=16, rep_dim=5)
    assert trunk.trunk(obs).abs().max() <= 1  # LayerNorm -> Tanh


def test_contrastive_losses_by_hand():
    identity = torch.eye(2)
    # InfoNCE with orthogonal pairs at temperature 0.5: logits [[2, 0], [0, 2]]
    assert torch.allclose(info_nce(identity, identity, 0.5), torch.full((2,), math.log1p(math.exp(-2))))
    # CIC: negatives sum_j exp(q.k_j / T) - e^(1/T) = 1; positive e^2 -> -log(e^2 / (1 + 1e-6))
    expected = -(2.0 - math.log1p(1e-6))
    assert torch.allclose(
        cic_contrastive_loss(identity, identity, 0.5), torch.full((2,), expected), atol=1e-5
    )
    # a mismatched pairing costs more than the right one
    swapped = identity.flip(0)
    assert (
        cic_contrastive_loss(identity, swapped, 0.5) > cic_contrastive_loss(identity, identity, 0.5)
    ).all()


def test_running_statistics_take_a_batch_of_one_row():
    """Regression (issue 19): URLB's unbiased batch variance is NaN for one row, which turned
    SUPE's RND statistics NaN with one world; a single row moves the mean and adds no spread."""
    stats = RunningMeanStd((2,), epsilon=1.0)
    stats.update(torch.tensor([[3.0, -1.0]]))
    # count 1 + 1: mean (0 + 3) / 2; var = 1/2 * 1 + 1/2 * 0 + delta^2 * 1/4
    torch.testing.assert_close(stats.mean, torch.tensor([1.5, -0.5]))
    torch.testing.assert_close(stats.var, torch.tensor([0.5 + 9 / 4, 0.5 + 1 / 4]))
