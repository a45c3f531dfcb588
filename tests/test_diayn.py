"""DIAYN's reward and skill schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from agents.ddpg import DDPGAgent
from agents.diayn import DIAYN, diayn_reward, discriminator_loss


def test_reward_is_log_q_minus_log_prior():
    # K = 2: logits [ln 3, 0] -> q = [3/4, 1/4]; uniform logits -> q = 1/2 = p(z)
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    reward = diayn_reward(logits, torch.tensor([0, 1, 1]))
    torch.testing.assert_close(reward, torch.tensor([math.log(1.5), math.log(0.5), 0.0]))


def test_reward_checks_shapes():
    with pytest.raises(ValueError, match="diayn_reward"):
        diayn_reward(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_discriminator_loss_is_cross_entropy():
    logits = torch.tensor([[math.log(3.0), 0.0]])
    assert discriminator_loss(logits, torch.tensor([0])).item() == pytest.approx(-math.log(0.75))


def schedule_step(model, state, step_count, done):
    out = TensorDict({"step_count": torch.tensor(step_count), "done": torch.tensor(done)}, batch_size=[3])
    return model.observe(state, out)


def test_skills_are_one_hot_and_resampled_on_schedule():
    torch.manual_seed(0)
    model = DIAYN(obs_dim=4, action_dim=2, skill_dim=16, hidden_dim=8, update_skill_every_step=50)
    state = TensorDict(model.init_state(3, "cpu"), batch_size=[3])
    assert torch.equal(state["skill"].sum(dim=1), torch.ones(3))
    kept = state["skill"].clone()
    state = schedule_step(model, state, [49, 49, 49], [False, False, False])
    assert torch.equal(state["skill"], kept)  # not due yet
    draws = []
    for _ in range(20):  # due at step 50 in world 0, episode end in world 2: those redraw
        state = schedule_step(model, state, [50, 51, 7], [False, False, True])
        draws.append(state["skill"].clone())
    assert torch.equal(draws[-1][1], kept[1])
    assert len({tuple(d[0].tolist()) for d in draws}) > 1 and len({tuple(d[2].tolist()) for d in draws}) > 1


def test_paper_variant_keeps_a_skill_per_episode():
    model = DIAYN(obs_dim=4, action_dim=2, skill_dim=50, hidden_dim=8, update_skill_every_step=0)
    state = TensorDict(model.init_state(3, "cpu"), batch_size=[3])
    kept = state["skill"].clone()
    state = schedule_step(model, state, [50, 100, 500], [False, False, False])
    assert torch.equal(state["skill"], kept)


def test_discriminator_learns_to_tell_skills_apart():
    torch.manual_seed(0)
    model = DIAYN(obs_dim=2, action_dim=1, skill_dim=2, hidden_dim=16, lr=1e-2)
    skill = torch.nn.functional.one_hot(torch.arange(64) % 2, 2).float()
    next_obs = skill * 2 - 1 + 0.1 * torch.randn(64, 2)  # each skill lands in its own corner
    batch = TensorDict({"skill": skill, "next_observation": next_obs}, batch_size=[64])
    before = model.intrinsic_reward(batch).mean()
    for _ in range(100):
        metrics = model.update(batch)
    assert metrics["diayn_accuracy"] == 1.0
    after = model.intrinsic_reward(batch).mean()
    assert after > before and after == pytest.approx(math.log(2), abs=0.05)  # q -> 1 gives log 2


def test_runs_on_the_ddpg_backbone_with_skill_inputs():
    from functools import partial

    agent = DDPGAgent(
        4, 2, hidden_dim=8, batch_size=4, reward_model=partial(DIAYN, skill_dim=16, hidden_dim=8)
    )
    assert agent.actor.trunk[0].in_features == 4 + 16
    state = agent.init_state(3)
    assert agent.replay_extras(state)["skill"].shape == (3, 16)


def test_evaluation_holds_one_skill_for_every_episode_like_urlb():
    """URLB's eval draws one meta (init_meta) for all its episodes and never updates it;
    evaluate() starts from Agent.evaluation_state, which asks the skill model, on either
    backbone."""
    from functools import partial

    from agents.sac import SACAgent

    torch.manual_seed(0)
    agent = DDPGAgent(
        4, 2, hidden_dim=8, batch_size=4, reward_model=partial(DIAYN, skill_dim=16, hidden_dim=8)
    )
    on_sac = SACAgent(
        4, 2, hidden_dim=8, batch_size=4, reward_model=partial(DIAYN, skill_dim=16, hidden_dim=8)
    )
    sac_state = on_sac.evaluation_state(3)
    assert torch.equal(sac_state["skill"], sac_state["skill"][:1].expand(3, -1))
    state = agent.evaluation_state(3)
    assert torch.equal(state["skill"], state["skill"][:1].expand(3, -1))  # one skill, every world
    held = state["skill"].clone()
    for _ in range(5):  # neither the 50-step schedule nor an episode's end redraws it
        state = schedule_step(agent, state, [50, 100, 7], [False, False, True])
    assert torch.equal(state["skill"], held)
    # the training rule draws per world and redraws on schedule
    schedule = DDPGAgent(
        4,
        2,
        hidden_dim=8,
        batch_size=4,
        reward_model=partial(DIAYN, skill_dim=16, hidden_dim=8, evaluation_skill="schedule"),
    )
    state = schedule.evaluation_state(64)
    assert "skill_held" not in state.keys() and len({tuple(s.tolist()) for s in state["skill"]}) > 1
    with pytest.raises(ValueError, match="evaluation_skill"):
        DIAYN(obs_dim=4, action_dim=2, evaluation_skill="each")


def test_replay_pairs_a_transition_with_its_acting_skill_or_urlbs_previous_one():
    """``replay_skill="acting"`` stores the skill that chose the action; ``"previous"`` the
    skill of the step before, and on an episode's first transition URLB's reset draw (a
    skill never acted on when the schedule redraws at step 0)."""
    from functools import partial

    def run(replay_skill):
        torch.manual_seed(0)
        model = partial(DIAYN, skill_dim=64, hidden_dim=8, update_skill_every_step=2)
        agent = DDPGAgent(4, 2, hidden_dim=8, batch_size=4, reward_model=model, replay_skill=replay_skill)
        state = agent.init_state(1)
        acting, stored = [], []
        for step_count, done in [(1, False), (2, False), (3, False), (4, True), (1, False), (2, False)]:
            acting.append(state["skill"].clone())
            stored.append(agent.replay_extras(state)["skill"].clone())
            out = TensorDict({"step_count": torch.tensor([step_count]), "done": torch.tensor([done])}, [1])
            state = agent.observe(state, out)
        return acting, stored

    acting, stored = run("acting")
    assert all(torch.equal(a, s) for a, s in zip(acting, stored, strict=True))
    acting, stored = run("previous")
    assert all(torch.equal(stored[t], acting[t - 1]) for t in (1, 2, 3, 5))  # the step before
    # the run's and the next episode's first transitions carry a reset draw, not the acting skill
    assert not torch.equal(stored[0], acting[0]) and not torch.equal(stored[4], acting[4])
    with pytest.raises(ValueError, match="replay_skill"):
        DDPGAgent(4, 2, hidden_dim=8, replay_skill="next")
