"""METRA's objective, constraint penalty and dual update against hand-computed values; its
skills, their schedule and the fixed finetuning skill."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from tensordict import TensorDict

from agents.metra import METRA, constraint_penalty, dual_loss, metra_reward, representation_loss
from agents.parts.skills import unit_sphere as unit_skills
from agents.sac import SACAgent


def test_continuous_reward_is_the_skill_aligned_step():
    phi = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    next_phi = torch.tensor([[0.6, 0.8], [1.0, 3.0]])
    skill = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # (0.6, 0.8) . (0.6, 0.8) = 1;  (0, 2) . (1, 0) = 0
    torch.testing.assert_close(metra_reward(phi, next_phi, skill, discrete=False), torch.tensor([1.0, 0.0]))


def test_discrete_reward_uses_the_centred_skill():
    # d = 4, z = e_1: (z - 1/4) * 4/3 = (1, -1/3, -1/3, -1/3)
    phi = torch.zeros(1, 4)
    next_phi = torch.tensor([[2.0, 3.0, 0.0, 0.0]])
    skill = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    expected = 2.0 * 1.0 + 3.0 * (-1.0 / 3.0)
    torch.testing.assert_close(metra_reward(phi, next_phi, skill, discrete=True), torch.tensor([expected]))
    # moving along every skill equally earns nothing
    torch.testing.assert_close(
        metra_reward(phi, torch.ones(1, 4), skill, discrete=True), torch.tensor([0.0]), atol=1e-6, rtol=0
    )


def test_reward_checks_shapes():
    with pytest.raises(ValueError, match="metra_reward"):
        metra_reward(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), discrete=False)


def test_penalty_is_one_minus_mean_square_step_clipped_at_slack():
    phi = torch.zeros(3, 2)
    # mean squares: 0 -> 1 (clipped to slack), 1 -> 0, 4.5 -> -3.5
    next_phi = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    penalty = constraint_penalty(phi, next_phi, slack=1e-3)
    torch.testing.assert_close(penalty, torch.tensor([1e-3, 0.0, -3.5]))


def test_representation_loss_holds_the_multiplier_constant():
    reward = torch.tensor([1.0, 3.0])
    penalty = torch.tensor([0.001, -1.0])
    dual = torch.tensor(30.0, requires_grad=True)
    loss = representation_loss(reward, penalty, dual)
    assert loss.item() == pytest.approx(-(1.0 + 3.0 + 30 * (0.001 - 1.0)) / 2)
    assert not loss.requires_grad  # no gradient reaches lambda through phi's loss


def test_dual_loss_and_step_direction():
    log_dual = torch.tensor(math.log(30.0), requires_grad=True)
    violated = torch.tensor([-2.0, 0.0])  # mean -1: the constraint is violated
    loss = dual_loss(log_dual, violated)
    assert loss.item() == pytest.approx(-math.log(30.0))
    loss.backward()
    assert log_dual.grad.item() == pytest.approx(-1.0)  # descent raises lambda
    log_dual.grad = None
    dual_loss(log_dual, torch.tensor([1e-3, 1e-3])).backward()
    assert log_dual.grad.item() == pytest.approx(1e-3)  # slack everywhere: lambda shrinks


def test_update_enforces_the_constraint_and_learns_the_skill_direction():
    """phi on 2-D states moving along the skill: phi learns to stretch the step along z
    until the constraint binds (mean square step ~ 1, i.e. ||step|| ~ sqrt(2))."""
    torch.manual_seed(0)
    model = METRA(obs_dim=2, action_dim=1, skill_dim=2, hidden_dim=32, lr=3e-3, dual_lr=3e-3)
    skill = unit_skills(256, 2, "cpu")
    obs = torch.randn(256, 2)
    batch = TensorDict({"observation": obs, "next_observation": obs + 0.1 * skill, "skill": skill}, [256])
    for _ in range(400):
        metrics = model.update(batch)
    reward = model.intrinsic_reward(batch)
    assert reward.mean() > 1.0  # the step along z grew from ~0 towards sqrt(2)
    step = metrics["metra_step_norm"].item()
    assert step == pytest.approx(math.sqrt(2), rel=0.2)
    assert metrics["metra_dual"].item() != pytest.approx(30.0)


def test_skills_are_unit_norm_or_one_hot_and_fixed_per_episode():
    torch.manual_seed(0)
    model = METRA(obs_dim=3, action_dim=1, skill_dim=4, hidden_dim=8)
    state = TensorDict(model.init_state(5, "cpu"), batch_size=[5])
    torch.testing.assert_close(state["skill"].norm(dim=1), torch.ones(5))
    kept = state["skill"].clone()
    out = TensorDict(
        {
            "step_count": torch.tensor([50, 100, 7, 1, 999]),
            "done": torch.tensor([False, False, True, False, False]),
        },
        batch_size=[5],
    )
    state = model.observe(state, out)
    assert torch.equal(state["skill"][[0, 1, 3, 4]], kept[[0, 1, 3, 4]])  # no schedule: per episode
    assert not torch.equal(state["skill"][2], kept[2])  # a new episode in world 2
    discrete = METRA(obs_dim=3, action_dim=1, skill_dim=4, discrete=True, hidden_dim=8)
    skills = discrete.init_state(6, "cpu")["skill"]
    assert torch.equal(skills.sum(1), torch.ones(6)) and set(skills.unique().tolist()) == {0.0, 1.0}


def test_evaluation_skills():
    generator = torch.Generator().manual_seed(3)
    discrete = METRA(obs_dim=3, action_dim=1, skill_dim=16, discrete=True, hidden_dim=8)
    skills = discrete.evaluation_skills(48, generator)
    assert torch.equal(skills.sum(0), torch.full((16,), 3.0))  # 48 rollouts: 3 per skill, in order
    assert torch.equal(skills.argmax(1), torch.arange(48) // 3)
    continuous = METRA(obs_dim=3, action_dim=1, skill_dim=4, hidden_dim=8)
    a = continuous.evaluation_skills(48, torch.Generator().manual_seed(3))
    b = continuous.evaluation_skills(48, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.allclose(a.norm(dim=1), torch.ones(48))
    assert torch.equal(discrete.finetune_candidates(48, generator), torch.eye(16))


def test_fixed_skill_survives_observe_and_a_state_dict_round_trip():
    agent = SACAgent(3, 1, hidden_dim=8, reward_model=partial(METRA, skill_dim=4, hidden_dim=8))
    skill = torch.tensor([0.0, 1.0, 0.0, 0.0])
    agent.reward_model.fix_skill(skill)
    copy = SACAgent(3, 1, hidden_dim=8, reward_model=partial(METRA, skill_dim=4, hidden_dim=8))
    copy.load_state_dict(agent.state_dict())
    state = copy.init_state(3)
    assert torch.equal(state["skill"], skill.expand(3, -1))
    out = TensorDict(
        {"step_count": torch.tensor([1000] * 3), "done": torch.tensor([True] * 3)}, batch_size=[3]
    )
    assert torch.equal(copy.observe(state, out)["skill"], skill.expand(3, -1))


def test_sac_agent_trains_on_the_metra_reward():
    torch.manual_seed(0)
    agent = SACAgent(
        3,
        2,
        hidden_dim=16,
        batch_size=8,
        reward_model=partial(METRA, skill_dim=2, hidden_dim=16),
    )
    skill = unit_skills(8, 2, "cpu")
    batch = TensorDict(
        {
            "observation": torch.randn(8, 3),
            "next_observation": torch.randn(8, 3),
            "action": torch.rand(8, 2),
            "position": torch.randn(8, 2),
            "next_position": torch.randn(8, 2),
            "skill": skill,
            "discount": torch.full((8,), 0.99),
            "task_reward": torch.zeros(8, 4),
        },
        [8],
    )

    class Replay:
        def sample(self, n):
            return batch

    agent.set_task(None)
    metrics = agent.update(Replay(), 0)
    assert {"metra_loss", "metra_dual", "intrinsic_reward", "critic_loss", "actor_loss"} <= set(metrics)
    # the SAC reward is the METRA reward of the phi just updated
    torch.testing.assert_close(metrics["intrinsic_reward"], agent.reward_model.intrinsic_reward(batch).mean())
    assert agent.actor.net[0].in_features == 3 + 2  # the policy reads observation + skill


# -- METRA's SAC (agents/sac.py options; parity with the authors' code: tests/reference) -----------
def metra_sac(**kwargs) -> SACAgent:
    options = dict(actor_layout="garage", shared_critic_trunk=False, critic_loss_weight=0.5)
    return SACAgent(3, 2, hidden_dim=8, batch_size=4, **(options | kwargs))


def test_garage_log_prob_is_the_gaussians_minus_an_epsilon_tanh_correction():
    from agents.parts.nets import gaussian_log_prob_tanh
    from agents.sac import garage_log_prob_tanh

    mean, log_std, raw = torch.tensor([[0.1, -0.3]]), torch.tensor([[-0.5, 0.2]]), torch.tensor([[1.5, -8.0]])
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(raw)
    expected = (gaussian - torch.log(1 - torch.tanh(raw) ** 2 + 1e-6)).sum(-1)
    torch.testing.assert_close(garage_log_prob_tanh(mean, log_std, raw), expected)
    # where tanh saturates (u = -8) the epsilon bounds the correction: below the exact density
    exact = gaussian_log_prob_tanh(mean, log_std, raw)
    assert garage_log_prob_tanh(mean, log_std, raw) < exact - 0.5


def test_metras_sac_has_garages_policy_and_two_independent_q_networks():
    agent = metra_sac()
    assert isinstance(agent.critic.trunk, torch.nn.Identity) and isinstance(
        agent.actor.trunk, torch.nn.Identity
    )
    for q in (agent.critic.q1, agent.critic.q2):  # (s, a) -> 2 hidden ReLU layers -> 1, no LayerNorm
        assert [type(m).__name__ for m in q] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
        assert q[0].in_features == 3 + 2
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in agent.critic.modules())
    assert [type(m).__name__ for m in agent.actor.net] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    # the log std is clamped hard into [log 1e-6, 2]: no gradient beyond the bounds
    head = agent.actor.net[-1]
    with torch.no_grad():
        head.bias[2:] = 5.0
    log_std = agent.actor(torch.zeros(1, 3))[1]
    assert torch.allclose(log_std, torch.tensor(2.0))
    log_std.sum().backward()
    assert head.bias.grad[2:].abs().max() == 0


def test_critic_loss_weight_halves_each_heads_mse():
    agent = metra_sac()
    observation, action, target = torch.randn(4, 3), torch.rand(4, 2), torch.randn(4)
    q1, q2 = agent.critic(observation, action)
    expected = 0.5 * ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean())
    torch.testing.assert_close(
        agent.critic_step(observation, action, target)["critic_loss"], expected.detach()
    )


def test_time_limits_bootstrap_unless_told_to_end_the_return():
    batch = TensorDict(
        {
            "observation": torch.zeros(3, 3),
            "next_observation": torch.zeros(3, 3),
            "discount": torch.full((3,), 0.99),
            "truncated": torch.tensor([False, True, False]),
        },
        [3],
    )
    assert torch.equal(metra_sac().encode_batch(batch)["discount"], batch["discount"])  # URLB: bootstrap
    ended = metra_sac(bootstrap_time_limits=False).encode_batch(batch)["discount"]
    assert torch.equal(ended, torch.tensor([0.99, 0.0, 0.99])) and batch["discount"][1] == 0.99
    with pytest.raises(KeyError, match="truncated"):
        metra_sac(bootstrap_time_limits=False).encode_batch(batch.exclude("truncated"))


def test_update_ratio_is_the_configs_or_the_protocols():
    assert SACAgent.own_update_ratio({"updates_per_frame": 0.03125}) == 0.03125
    assert SACAgent.own_update_ratio({}) is None  # plain SAC and DIAYN keep the protocol's


def test_the_dual_metric_is_the_multiplier_the_update_used():
    model = METRA(obs_dim=3, action_dim=1, skill_dim=2, hidden_dim=8, init_dual=30.0)
    batch = TensorDict(
        {
            "observation": torch.randn(4, 3),
            "next_observation": torch.randn(4, 3),
            "skill": unit_skills(4, 2, "cpu"),
        },
        [4],
    )
    metrics = model.update(batch)
    assert metrics["metra_dual"] == pytest.approx(30.0) and float(
        model.log_dual.detach().exp()
    ) != pytest.approx(30.0)
