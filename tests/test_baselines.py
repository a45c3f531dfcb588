"""The URLB baseline family (ICM, Disagreement, RND, APT, ProtoRL, SMM, APS, CIC): their
rewards on tiny batches worked out by hand, what ``init_from`` transfers, and checkpoint
round trips of their running statistics. Pretrain -> finetune of every one through the real
entry points is ``tests/test_pipeline.py::test_every_agent_pretrains_then_finetunes``."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tensordict import TensorDict
from test_pipeline import BASELINES

from agents.aps import regress_task, regress_task_urlb
from agents.disagreement import disagreement_reward
from agents.icm import icm_reward
from agents.proto import ProtoRL, prototype_loss
from agents.rnd import RND, batch_normalise, rnd_reward
from agents.smm import SMM, smm_reward, vae_loss
from urlb.data.replay import ReplayBuffer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")

OBS, ACT = 24, 6


def build(agent: str, **overrides):
    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    extra = [f"agent.reward_model.{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        cfg = compose("pretrain", overrides=[f"agent={agent}", "preset=debug", *extra])
    return instantiate(cfg.agent, obs_dim=OBS, action_dim=ACT)


def batch_for(agent, size: int = 32) -> TensorDict:
    values = {
        "observation": torch.randn(size, OBS),
        "action": torch.rand(size, ACT) * 2 - 1,
        "next_observation": torch.randn(size, OBS),
        "task_reward": torch.rand(size, 4),
        "discount": torch.full((size,), 0.99**3),
    }
    if agent.skill_dim:
        values["skill"] = agent.reward_model.sample_skills(size, "cpu")
    return TensorDict(values, batch_size=[size])


# -- rewards by hand --------------------------------------------------------------------------
def test_icm_reward_is_log_one_plus_forward_error():
    assert torch.allclose(icm_reward(torch.tensor([0.0, math.e - 1]), 1.0), torch.tensor([0.0, 1.0]))
    assert torch.allclose(icm_reward(torch.tensor([1.0]), 2.0), torch.tensor([math.log(3.0)]))


def test_disagreement_is_the_variance_across_members():
    # two members predicting (0, 0) and (2, 4): unbiased variances 2 and 8, mean 5
    predictions = torch.tensor([[[0.0, 0.0]], [[2.0, 4.0]]])
    assert torch.allclose(disagreement_reward(predictions), torch.tensor([5.0]))
    agreeing = torch.ones(5, 3, 7)
    assert torch.equal(disagreement_reward(agreeing), torch.zeros(3))


def test_rnd_normalises_by_the_batch_like_urlbs_batchnorm():
    torch.manual_seed(0)
    model = RND(obs_dim=3, action_dim=1, hidden_dim=8, rep_dim=4)
    obs = torch.randn(16, 3)
    x = batch_normalise(obs * 100 + 50, clip=5.0)
    # the batch's own mean and biased variance (eps 1e-5): whitened exactly, per dimension
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.var(0, unbiased=False), torch.ones(3), atol=1e-3)
    # so the error of a transition depends on its batch: an affine change of the whole batch
    # leaves every error as it was, and nothing is kept between batches
    assert torch.allclose(model.prediction_error(obs), model.prediction_error(obs * 3 + 7), atol=1e-5)
    assert model.obs_stats is None and not any("obs_stats" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="obs_normalisation"):
        RND(obs_dim=3, action_dim=1, obs_normalisation="layer")


def test_rnd_error_with_running_normalisation():
    assert torch.allclose(rnd_reward(torch.tensor([2.0]), torch.tensor(4.0), 1.0), torch.tensor([1.0]))
    torch.manual_seed(0)
    model = RND(obs_dim=3, action_dim=1, hidden_dim=8, rep_dim=4, obs_normalisation="running")
    # a predictor equal to the target except for one output bias c: error c^2 / rep_dim everywhere
    model.predictor.load_state_dict(model.target.state_dict())
    with torch.no_grad():
        model.predictor[-1].bias[0] += 2.0
    obs = torch.randn(16, 3) * 100 + 50
    error = model.prediction_error(obs)
    assert torch.allclose(error, torch.full((16,), 4.0 / 4))
    # observations are whitened by their running statistics and clipped at 5
    model.obs_stats.update(obs)
    x = model.obs_stats.normalise(obs, clip=5.0)
    assert x.abs().max() <= 5.0 and x.mean(0).abs().max() < 1e-2
    # the reward divides by the running std of the errors (merged first)
    batch = TensorDict({"observation": torch.cat([obs[:8], obs[:8] * 0]), "action": torch.zeros(16, 1)}, [16])
    errors = model.prediction_error(batch["observation"]).detach()
    reward = model.intrinsic_reward(batch)
    assert torch.allclose(reward, errors / model.error_stats.var.sqrt(), rtol=1e-5)


def test_smm_reward_and_vae_terms():
    reward = smm_reward(torch.tensor([1.0]), torch.tensor([0.5]), skill_dim=4)
    assert torch.allclose(reward, torch.tensor([1.0 + math.log(4) + 0.5]))
    flipped = smm_reward(torch.tensor([1.0]), torch.tensor([0.5]), 4, latent_cond_ent_coef=-1.0)
    assert torch.allclose(flipped, torch.tensor([1.0 + math.log(4) - 0.5]))
    # KL(N(0, 1) || N(0, 1)) = 0; KL(N(1, 1) || N(0, 1)) = 1/2 per dimension
    error = torch.tensor([[1.0, 3.0]])
    assert torch.allclose(vae_loss(torch.zeros(1, 2), torch.zeros(1, 2), error, 0.5), torch.tensor(2.0))
    assert torch.allclose(vae_loss(torch.ones(1, 2), torch.zeros(1, 2), error, 0.5), torch.tensor(2.5))


def test_aps_task_regression_recovers_the_reward_direction():
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(500, 10), dim=1)
    w = torch.nn.functional.normalize(torch.randn(10), dim=0)
    assert torch.allclose(regress_task(features, 3.0 * features @ w), w, atol=1e-5)


def test_aps_urlb_regression_is_the_transposed_lstsq():
    # lstsq(R, phi) solves R w ~ phi: w = sum R phi / sum R^2, then normalised
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    returns = torch.tensor([1.0, 2.0, 3.0])
    expected = torch.nn.functional.normalize(torch.tensor([4.0, 5.0]), dim=0)
    assert torch.allclose(regress_task_urlb(phi, returns), expected, atol=1e-6)


def aps_finetuning(rule: str):
    """An APS agent regressing from frame 64 by ``rule``, a replay of 16 steps of 4 worlds
    whose task 2 rewards ``phi(s') . w`` (``phi``: the agent's normalised features), and ``w``."""
    torch.manual_seed(0)
    agent = build("aps", num_init_frames=64, task_regression=rule)
    model = agent.reward_model
    w = torch.nn.functional.normalize(torch.randn(model.skill_dim), dim=0)
    replay = ReplayBuffer(1000, 4, "cpu", nstep=3)
    for _ in range(16):
        next_obs = torch.randn(4, OBS)
        with torch.no_grad():
            phi = torch.nn.functional.normalize(model.features(next_obs), dim=1)
        reward = torch.zeros(4, 4)
        reward[:, 2] = phi @ w
        flags = torch.zeros(4, dtype=torch.bool)
        replay.add(torch.randn(4, OBS), torch.zeros(4, ACT), next_obs, reward, flags, flags)
    return agent, replay, w


def test_aps_regresses_every_few_frames_for_the_whole_of_finetuning():
    agent, replay, _ = aps_finetuning("urlb")
    model, state = agent.reward_model, agent.init_state(4)
    agent.set_task(None)  # pretraining: nothing happens
    assert agent.adapt(replay, 65, state) is state and not model._fixed
    agent.set_task(2)
    assert agent.adapt(replay, 64, state) is state and not model._fixed  # from after num_init_frames
    torch.manual_seed(1)
    state = agent.adapt(replay, 68, state)
    # URLB's regression on a fresh replay sample: n-step returns on phi of the first state
    torch.manual_seed(1)
    batch = replay.sample(model.lstsq_samples)
    with torch.no_grad():
        phi = torch.nn.functional.normalize(model.features(batch["observation"]), dim=1)
    expected = regress_task_urlb(phi, batch["task_reward"][:, 2])
    assert model._fixed and torch.allclose(model.fixed_skill, expected, atol=1e-6)
    assert torch.allclose(state["skill"], expected.expand(4, -1))
    # every update_skill_every_step (5) frames: 68 and 69 share a 5-frame slot, 70 opens one
    assert agent.adapt(replay, 69, state) is state
    first = model.fixed_skill.clone()
    state = agent.adapt(replay, 70, state)
    assert int(model.regressed_at) == 70 and not torch.equal(model.fixed_skill, first)  # a new sample
    # the regression's frame is saved: a restored model knows its slot
    copy = build("aps", num_init_frames=64)
    copy.load_training_state(agent.training_state())
    assert copy.reward_model._regressed_at == 70 and not copy.reward_model.regression_due(74)
    assert copy.reward_model.regression_due(75)


def test_aps_regresses_once_and_fixes_its_task_with_the_paper_rule():
    agent, replay, w = aps_finetuning("once")
    model, state = agent.reward_model, agent.init_state(4)
    agent.set_task(None)  # pretraining: nothing happens
    assert agent.adapt(replay, 64, state) is state and not model._fixed
    agent.set_task(2)
    assert agent.adapt(replay, 60, state) is state and not model._fixed  # before num_init_frames
    state = agent.adapt(replay, 64, state)
    assert model._fixed and torch.allclose(model.fixed_skill, w, atol=1e-4)
    assert torch.allclose(state["skill"], w.expand(4, -1), atol=1e-4)
    assert agent.adapt(replay, 1000, state) is state  # and never again
    # the critic's Q is the successor features dotted with that task
    inputs = agent.inputs(torch.randn(4, OBS), state)
    action = torch.zeros(4, ACT)
    q1, _ = agent.critic(inputs, action)
    psi = agent.critic.q1(agent.critic.trunk(torch.cat([inputs, action], 1)))
    assert psi.shape == (4, model.skill_dim) and torch.allclose(q1, psi @ model.fixed_skill, atol=1e-5)


def test_proto_loss_and_queue():
    # uniform online scores: the cross-entropy against any assignment is log K
    assert torch.allclose(
        prototype_loss(torch.zeros(6, 4), torch.randn(6, 4), 0.1), torch.tensor(math.log(4))
    )
    torch.manual_seed(0)
    model = ProtoRL(obs_dim=5, action_dim=2, pred_dim=8, proj_dim=16, num_protos=4, queue_size=8, topk=1)
    batch = TensorDict({"next_observation": torch.randn(10, 5)}, [10])
    first = model.intrinsic_reward(batch)
    assert int(model.queue_pointer) == 4 and (model.queue[:4].norm(dim=1) - 1).abs().max() < 1e-5
    # the queue now holds 4 of the batch's own embeddings: nearest-queue distance 0 for those
    z = torch.nn.functional.normalize(model.predictor(batch["next_observation"]), dim=1)
    assert torch.allclose(first, torch.cdist(z, model.queue).min(dim=1).values, atol=1e-5)
    model.intrinsic_reward(batch)
    model.intrinsic_reward(batch)
    assert int(model.queue_pointer) == 4  # 12 entries into 8 slots wrap around


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# -- every agent ------------------------------------------------------------------------------
# Sizes at which a reward on a 32-sample batch is informative: ProtoRL's 512 prototypes each
# enqueue one of the 32 samples, so every sample sits in the queue at least 3 times and every
# exact 3rd-nearest distance (its reward) is 0.
INFORMATIVE = {"proto": {"num_protos": 8, "queue_size": 64}}


@pytest.mark.parametrize("name", BASELINES)
def test_reward_update_and_round_trip(name):
    torch.manual_seed(0)
    agent = build(name, **INFORMATIVE.get(name, {}))
    batch = batch_for(agent)
    agent.set_task(None)
    metrics = agent.update_reward_model(batch)
    reward, reward_metrics = agent.reward(batch)
    assert reward.shape == (32,) and torch.isfinite(reward).all() and reward.std() > 0
    assert all(torch.isfinite(v).all() for v in {**metrics, **reward_metrics}.values())
    # a state_dict round trip restores everything the next reward reads (running statistics,
    # queues, targets), so both copies compute the same reward on the same batch
    copy = build(name, **INFORMATIVE.get(name, {}))
    copy.load_training_state(agent.training_state())
    torch.manual_seed(1)
    expected = agent.intrinsic_reward(batch)
    torch.manual_seed(1)
    assert torch.allclose(copy.intrinsic_reward(batch), expected)


@pytest.mark.parametrize("name", BASELINES)
def test_init_from_transfers_what_the_docstrings_say(name):
    torch.manual_seed(0)
    pretrained, fresh = build(name), build(name)
    pretrained.update_reward_model(batch_for(pretrained))
    fresh_target = copy.deepcopy(fresh.critic_target)
    fresh.init_from(pretrained)

    assert same(fresh.actor, pretrained.actor)
    assert same(fresh.critic.trunk, pretrained.critic.trunk)
    assert same(fresh.critic.q1, pretrained.critic.q1) == (name == "proto")  # ProtoRL copies the heads too
    assert same(fresh.critic_target, fresh_target)  # URLB: the target stays the fresh critic
    model = fresh.reward_model
    pretrained_state = pretrained.reward_model.state_dict()
    for key, value in model.state_dict().items():
        if key not in ("fixed_skill", "skill_is_fixed"):
            # URLB's APS has DDPG's init_from: its phi stays fresh (transfer_phi=false)
            fresh_phi = name == "aps" and key.startswith("features.")
            assert torch.equal(value, pretrained_state[key]) != fresh_phi, key
    if name == "aps":
        transferring = build(name, transfer_phi=True)
        transferring.init_from(pretrained)
        assert same(transferring.reward_model.features, pretrained.reward_model.features)
    if name == "cic":  # the released code's rule: the fixed mean skill
        assert model._fixed and torch.equal(model.fixed_skill, torch.full((64,), 0.5))
    elif fresh.skill_dim:
        assert not model._fixed


@pytest.mark.parametrize("name", ["icm", "proto"])
def test_init_critic_target_also_copies_the_transferred_critic_into_the_target(name):
    """The option keeps our pre-issue-17 transfer: whatever init_from copies into the critic
    (the trunk; ProtoRL the whole critic) goes into the target critic too."""
    torch.manual_seed(0)
    pretrained = build(name)
    fresh = instantiate_with(name, "agent.init_critic_target=true")
    fresh.init_from(pretrained)
    assert same(fresh.critic_target.trunk, pretrained.critic.trunk)
    assert same(fresh.critic_target.q1, pretrained.critic.q1) == (name == "proto")


def instantiate_with(agent: str, *overrides: str):
    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        cfg = compose("pretrain", overrides=[f"agent={agent}", "preset=debug", *overrides])
    return instantiate(cfg.agent, obs_dim=OBS, action_dim=ACT)


# -- SMM ----------------------------------------------------------------------------------------
def test_smm_rewards_the_pre_step_losses_of_its_update():
    """URLB's reward is the update's own forward pass (one VAE noise draw), before the VAE
    and discriminator steps; ``post_step`` recomputes it after them."""
    torch.manual_seed(0)
    agent = build("smm")
    model, batch = agent.reward_model, batch_for(agent)
    torch.manual_seed(1)
    with torch.no_grad():
        _, error, ce = model._terms(batch)  # the networks before the step, the update's noise
    expected = smm_reward(error, ce, model.skill_dim, *model.coefs)
    torch.manual_seed(1)
    agent.update_reward_model(batch)
    reward, _ = agent.reward(batch)
    torch.testing.assert_close(reward, expected)
    # the stored reward answers only the batch it was computed on, and only once
    other = batch_for(agent)
    assert not torch.equal(model.intrinsic_reward(other), expected)
    agent.update_reward_model(batch)
    model.intrinsic_reward(batch)
    assert model._pending is None
    post = build("smm", reward_timing="post_step")
    post.load_training_state(build("smm").training_state())
    post.update_reward_model(batch)
    assert post.reward_model._pending is None


def test_smm_finetunes_with_random_skills_unless_asked_to_search():
    generator = torch.Generator().manual_seed(0)
    assert build("smm").reward_model.finetune_candidates(4, generator) is None  # URLB: a skill per episode
    search = build("smm", finetune_skill="search").reward_model
    assert torch.equal(search.finetune_candidates(4, generator), torch.eye(4))
    with pytest.raises(ValueError, match="finetune_skill"):
        SMM(obs_dim=OBS, action_dim=ACT, finetune_skill="best")
