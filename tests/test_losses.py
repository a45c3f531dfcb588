"""Backbone losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agents.actor_critic import critic_loss
from agents.base import RewardModel
from agents.ddpg import td_target
from agents.parts.nets import Randomness, TruncatedNormal, gaussian_log_prob_tanh, soft_update
from agents.sac import SACAgent, random_heads, soft_td_target, temperature_loss


def test_td_target_takes_the_smaller_head():
    reward = torch.tensor([1.0, 0.0])
    discount = torch.tensor([0.5, 0.9**3])
    q1, q2 = torch.tensor([4.0, 10.0]), torch.tensor([2.0, 20.0])
    # 1 + 0.5 * min(4, 2) = 2;  0 + 0.729 * 10 = 7.29
    torch.testing.assert_close(td_target(reward, discount, q1, q2), torch.tensor([2.0, 7.29]))


def test_td_target_checks_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        td_target(torch.zeros(2), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2))


def test_critic_loss_sums_both_heads():
    q1, q2, target = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0]), torch.tensor([2.0, 2.0])
    # head 1: ((1-2)^2 + (3-2)^2)/2 = 1; head 2: ((0-2)^2 + 0)/2 = 2
    loss, metrics = critic_loss((q1, q2), target)
    assert loss.item() == pytest.approx(3.0) and metrics["critic_q1"].item() == pytest.approx(2.0)


def test_critic_loss_sums_every_ensemble_head():
    qs = torch.tensor([[1.0, 3.0], [0.0, 2.0], [2.0, 5.0]])  # (N=3, B=2)
    # heads: 1, 2 as above; head 3: (0 + 3^2)/2 = 4.5; summed 7.5
    loss, metrics = critic_loss(qs, torch.tensor([2.0, 2.0]))
    assert loss.item() == pytest.approx(7.5) and metrics["critic_q1"].item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shapes differ"):
        critic_loss(qs, torch.zeros(3))


def test_soft_td_target_subtracts_entropy_term():
    # 1 + 0.99 * (min(5, 6) - 0.1 * (-2)) = 1 + 0.99 * 5.2 = 6.148
    out = soft_td_target(
        torch.tensor([1.0]),
        torch.tensor([0.99]),
        (torch.tensor([5.0]), torch.tensor([6.0])),
        torch.tensor([-2.0]),
        0.1,
    )
    torch.testing.assert_close(out, torch.tensor([6.148]))


def test_soft_td_target_without_entropy_backup_is_r_plus_g_min():
    reward, discount = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.9])
    next_qs = torch.tensor([[4.0, 10.0], [2.0, 30.0], [3.0, 20.0]])  # (K=3, B=2)
    log_prob = torch.tensor([-2.0, 5.0])
    # alpha None: 1 + 0.5 * min(4, 2, 3) = 2;  0 + 0.9 * 10 = 9 (log pi plays no part)
    torch.testing.assert_close(
        soft_td_target(reward, discount, next_qs, log_prob, None), torch.tensor([2.0, 9.0])
    )
    # alpha 0.5: 1 + 0.5 * (2 + 1) = 2.5;  0.9 * (10 - 2.5) = 6.75
    torch.testing.assert_close(
        soft_td_target(reward, discount, next_qs, log_prob, 0.5), torch.tensor([2.5, 6.75])
    )
    with pytest.raises(ValueError, match="shapes differ"):
        soft_td_target(reward, discount, torch.zeros(3, 3), log_prob, None)


def test_random_heads_draws_exactly_that_many_distinct_heads():
    qs = torch.arange(10.0)[:, None].expand(10, 4)  # head i outputs i
    drawn = random_heads(qs, 2, torch.Generator().manual_seed(3))
    index = torch.randperm(10, generator=torch.Generator().manual_seed(3))[:2]
    assert drawn.shape == (2, 4) and torch.equal(drawn[:, 0], index.float())
    generator = torch.Generator().manual_seed(0)
    subsets = [random_heads(qs, 2, generator)[:, 0] for _ in range(200)]
    assert all(len(set(s.tolist())) == 2 for s in subsets)  # without replacement
    assert len({tuple(sorted(s.tolist())) for s in subsets}) > 20  # a fresh subset per call
    # the target's min over 2 heads is never the largest head, often not the smallest
    minima = torch.stack([s.min() for s in subsets])
    assert minima.max() < 9 and 0.1 < (minima == 0).float().mean() < 0.3  # P(min = 0) = 2/10
    assert torch.equal(random_heads((qs[0], qs[1]), 2, torch.Generator().manual_seed(0)).amin(0), qs[0])
    with pytest.raises(ValueError, match="cannot draw 11 of 10"):
        random_heads(qs, 11)


def test_default_sac_keeps_its_two_head_critic_and_soft_target(monkeypatch):
    """Two heads on URLB's trunk, the min of both with entropy in the target, min in the actor:
    the layout and target SAC had before the RLPD options (``num_critics`` 2, no subset)."""
    torch.manual_seed(0)
    agent = SACAgent(5, 2, hidden_dim=8, batch_size=4)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # actor: 5*8+8 + 8*8+8 + 8*4+4 = 156; critic: trunk 7*8+8 + LayerNorm 16, heads 2 * (8*8+8 + 8+1)
    assert count(agent.actor) == 156 and count(agent.critic) == 80 + 2 * 81
    assert type(agent.critic).__name__ == "DoubleQCritic" and agent.backup_entropy
    observation, next_observation = torch.randn(4, 5), torch.randn(4, 5)
    action, reward, discount = torch.rand(4, 2) * 2 - 1, torch.randn(4), torch.full((4,), 0.99)
    torch.manual_seed(1)
    next_action, log_prob = agent.actor.sample(next_observation)
    with torch.no_grad():
        q1, q2 = agent.critic_target(next_observation, next_action)
    alpha = agent.log_alpha.exp().detach()  # 0.1, up to rounding
    expected = reward + discount * (torch.min(q1, q2) - alpha * log_prob.detach())
    monkeypatch.setattr(SACAgent, "critic_step", lambda agent, o, a, target: {"target": target})
    torch.manual_seed(1)
    target = agent.update_critic(observation, action, reward, discount, next_observation)["target"]
    torch.testing.assert_close(target, expected, rtol=0, atol=0)


def test_temperature_loss_gradient_pushes_entropy_to_target():
    log_alpha = torch.tensor(0.0, requires_grad=True)
    log_prob = torch.tensor([1.0, 3.0])  # entropy estimate -2, below the target -1
    loss = temperature_loss(log_alpha, log_prob, target_entropy=-1.0)
    loss.backward()
    # loss = -log_alpha * mean(log_prob - 1) = -log_alpha; gradient -1, so descent raises alpha
    assert loss.item() == pytest.approx(0.0) and log_alpha.grad.item() == pytest.approx(-1.0)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = torch.tensor([[0.3, -0.2]]), torch.tensor([[-0.5, 0.1]])
    raw = torch.tensor([[0.7, -1.4]])
    base = torch.distributions.Normal(mean, log_std.exp())
    expected = (base.log_prob(raw) - torch.log(1 - torch.tanh(raw) ** 2)).sum(-1)
    torch.testing.assert_close(gaussian_log_prob_tanh(mean, log_std, raw), expected)


def test_truncated_normal_clips_noise_and_actions():
    torch.manual_seed(0)
    dist = TruncatedNormal(torch.tensor([[0.99, 0.0]]).expand(4096, 2), 1.0)
    clipped = dist.sample(clip=0.3)
    assert clipped[:, 1].abs().max() <= 0.3 + 1e-6  # noise clipped at 0.3 around 0
    assert clipped[:, 0].max() < 1.0  # actions stay inside (-1, 1)
    assert dist.sample()[:, 1].abs().max() > 1.0 - 1e-3  # unclipped noise reaches the bounds


def test_truncated_normal_draws_its_noise_from_the_randomness_hook():
    """The reference-parity tests feed URLB's recorded noise through ``randomness``."""

    class Ones(Randomness):
        def normal(self, shape, like):
            return torch.ones(shape, dtype=like.dtype, device=like.device)

    dist = TruncatedNormal(torch.zeros(2, 3), 0.2)
    torch.testing.assert_close(dist.sample(randomness=Ones()), torch.full((2, 3), 0.2))
    torch.testing.assert_close(dist.sample(clip=0.1, randomness=Ones()), torch.full((2, 3), 0.1))
    torch.manual_seed(0)
    expected = torch.randn(2, 3) * 0.2
    torch.manual_seed(0)
    torch.testing.assert_close(dist.sample(), expected)  # default: torch's generator, as before


def test_soft_update_is_polyak():
    target, source = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    target.weight.data.fill_(1.0)
    source.weight.data.fill_(3.0)
    soft_update(target, source, 0.01)
    assert target.weight.item() == pytest.approx(1.02)


def test_log_prob_is_finite_at_saturation():
    value = gaussian_log_prob_tanh(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([[30.0]]))
    assert math.isfinite(value.item())


class CountingSkills(RewardModel):
    """A minimal skill reward model: a fixed skill per world, reward = skill[0]."""

    skill_dim = 2

    def __init__(self, obs_dim, action_dim):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.opt = torch.optim.SGD([self.scale], lr=0.1)
        self.finetuning = False

    def init_state(self, num_envs, device):
        return {"skill": torch.tensor([[1.0, 0.0]]).repeat(num_envs, 1)}

    def intrinsic_reward(self, batch):
        return batch["skill"][:, 0] * self.scale.detach()

    def optimisers(self):
        return {"scale": self.opt}

    def finetune(self):
        self.finetuning = True


def test_reward_model_composes_with_both_backbones():
    from tensordict import TensorDict

    from agents.ddpg import DDPGAgent
    from agents.sac import SACAgent

    for backbone in (DDPGAgent, SACAgent):
        agent = backbone(5, 2, hidden_dim=8, batch_size=4, reward_model=CountingSkills)
        state = agent.init_state(3)
        assert agent.act(torch.zeros(3, 5), state, explore=False).shape == (3, 2)  # 5 + 2 skill inputs
        assert agent.replay_extras(state)["skill"].shape == (3, 2)
        batch = TensorDict({"skill": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}, batch_size=[2])
        torch.testing.assert_close(agent.intrinsic_reward(batch), torch.tensor([1.0, 0.0]))
        assert "reward_model.scale" in agent.all_optimisers()
        fresh = backbone(5, 2, hidden_dim=8, batch_size=4, reward_model=CountingSkills)
        fresh.init_from(agent)
        assert fresh.reward_model.finetuning
