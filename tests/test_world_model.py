"""The Dreamer family (agents/dreamer.py, agents/plan2explore.py, agents/parts/world_model.py): the
lambda-return, KL balancing and free nats, reward scaling and the behaviour losses against
hand-worked values; imagination shapes and which parameters each loss trains; sequence
replay; acting with carried latents; transfer; a checkpoint round trip of a run with its
recurrent state. Pretrain -> finetune through the entry points is in test_pipeline.py."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from tensordict import TensorDict

from agents.dreamer import DreamerAgent, actor_loss, critic_loss
from agents.parts.nets import clipped_step
from agents.parts.world_model import (
    RSSM,
    RewardScale,
    kl_balance_loss,
    lambda_return,
    latent_kl,
    observation_decoder,
    observation_encoder,
)
from envs import make_env
from urlb.data.replay import ReplayBuffer
from urlb.loop.online import OnlineLoop, Schedule
from urlb.measure.logging import Logger

ROOT = Path(__file__).resolve().parents[1]
OBS, ACT = 5, 2
TINY = dict(hidden_dim=16, batch_size=24, batch_length=6, imagination_horizon=3, deter_dim=8)
TINY |= dict(stoch_dim=4, classes=4, rssm_hidden_dim=8)


# -- pure functions by hand -------------------------------------------------------------------
def test_lambda_return_by_hand():
    reward = torch.tensor([1.0, 2.0, 3.0])
    value = torch.tensor([10.0, 20.0, 30.0])
    discount = torch.full((3,), 0.5)
    bootstrap = torch.tensor(40.0)
    # R_2 = 3 + .5 (.5 * 40 + .5 * 40) = 23; R_1 = 2 + .5 (.5 * 30 + .5 * 23) = 15.25;
    # R_0 = 1 + .5 (.5 * 20 + .5 * 15.25) = 9.8125
    torch.testing.assert_close(
        lambda_return(reward, value, discount, bootstrap, 0.5), torch.tensor([9.8125, 15.25, 23.0])
    )
    # lambda = 1: discounted Monte Carlo plus the discounted bootstrap; lambda = 0: one step
    monte_carlo = 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 40
    assert lambda_return(reward, value, discount, bootstrap, 1.0)[0].item() == pytest.approx(monte_carlo)
    torch.testing.assert_close(
        lambda_return(reward, value, discount, bootstrap, 0.0), torch.tensor([11.0, 17.0, 23.0])
    )
    with pytest.raises(ValueError, match="lambda_return shapes"):
        lambda_return(reward, value[:2], discount, bootstrap, 0.5)


def test_latent_kl_on_known_distributions():
    p = {"logits": torch.tensor([0.5, 0.5]).log().view(1, 2)}  # one categorical, two classes
    q = {"logits": torch.tensor([0.25, 0.75]).log().view(1, 2)}
    assert latent_kl(p, q).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert latent_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)
    # KL(N(0, 1) || N(1, 2)) = ln 2 + (1 + 1) / 8 - 1/2, summed over two equal dimensions
    a = {"mean": torch.zeros(2), "std": torch.ones(2)}
    b = {"mean": torch.ones(2), "std": torch.full((2,), 2.0)}
    assert latent_kl(a, b).item() == pytest.approx(2 * (math.log(2) - 0.25), abs=1e-6)


def test_kl_balancing_splits_the_gradient_and_free_nats_clip():
    posterior = {"logits": torch.tensor([[2.0, -1.0, 0.0]], requires_grad=True)}
    prior = {"logits": torch.tensor([[-1.0, 1.0, 0.5]], requires_grad=True)}
    kl = latent_kl(posterior, prior)
    assert kl.item() > 0.5
    grad_post, grad_prior = torch.autograd.grad(kl.sum(), [posterior["logits"], prior["logits"]])
    loss, value = kl_balance_loss(posterior, prior, balance=0.8, free_nats=0.0)
    assert loss.item() == pytest.approx(kl.item(), rel=1e-6) and value.item() == pytest.approx(kl.item())
    got_post, got_prior = torch.autograd.grad(loss, [posterior["logits"], prior["logits"]])
    torch.testing.assert_close(got_prior, 0.8 * grad_prior)  # the prior learns 4x faster
    torch.testing.assert_close(got_post, 0.2 * grad_post)
    # below the free nats: a constant loss and no gradient
    loss, _ = kl_balance_loss(posterior, prior, balance=0.8, free_nats=10.0)
    assert loss.item() == pytest.approx(10.0)
    assert all(g.abs().sum() == 0 for g in torch.autograd.grad(loss, [posterior["logits"], prior["logits"]]))
    # free_average clips the batch mean, else each element: [0.1, 3] with 1 free nat
    two = {"mean": torch.zeros(2, 1), "std": torch.ones(2, 1)}
    other = {"mean": torch.tensor([[math.sqrt(0.2)], [math.sqrt(6.0)]]), "std": torch.ones(2, 1)}
    assert kl_balance_loss(two, other, 0.5, 1.0, free_average=True)[0].item() == pytest.approx(1.55)
    assert kl_balance_loss(two, other, 0.5, 1.0, free_average=False)[0].item() == pytest.approx(2.0)


def test_reward_scale_divides_by_a_running_magnitude():
    scale = RewardScale(momentum=0.5)
    # magnitude 0.5 * 1 + 0.5 * mean(|2|, |-4|) = 2
    torch.testing.assert_close(scale(torch.tensor([2.0, -4.0])), torch.tensor([1.0, -2.0]))
    assert scale.magnitude.item() == pytest.approx(2.0)
    identity = RewardScale(momentum=1.0)
    torch.testing.assert_close(identity(torch.tensor([2.0, -4.0])), torch.tensor([2.0, -4.0]))


def test_behaviour_losses_by_hand():
    target = torch.tensor([[3.0], [5.0]])  # H = 2 imagined states with targets, N = 1
    entropy = torch.tensor([[2.0]])
    weight = torch.tensor([[1.0], [0.5], [0.25]])
    # only state 0's action leads somewhere with a target: -(1 * (5 + 0.1 * 2))
    assert actor_loss(target, entropy, weight, 0.1).item() == pytest.approx(-5.2)
    value = torch.tensor([[1.0], [2.0]])
    # mean(0.5 * 1 * (1 - 3)^2, 0.5 * 0.5 * (2 - 5)^2) = mean(2, 2.25)
    assert critic_loss(value, target, weight).item() == pytest.approx(2.125)
    with pytest.raises(ValueError, match="actor_loss shapes"):
        actor_loss(target, entropy, weight[:2], 0.1)


# -- the model and the agent --------------------------------------------------------------------
def tiny_agent(**overrides) -> DreamerAgent:
    torch.manual_seed(0)
    return DreamerAgent(OBS, ACT, **(TINY | overrides))


def test_rssm_filters_sequences_with_straight_through_latents():
    rssm = RSSM(ACT, 7, deter_dim=8, stoch_dim=3, classes=4, hidden_dim=8)
    posterior, prior = rssm.observe(torch.randn(2, 5, 7), torch.zeros(2, 5, ACT))
    assert posterior["stoch"].shape == (2, 5, 12) and prior["logits"].shape == (2, 5, 3, 4)
    one_hot = posterior["stoch"].detach().view(2, 5, 3, 4)  # one-hot up to rounding
    torch.testing.assert_close(one_hot.sum(-1), torch.ones(2, 5, 3))
    torch.testing.assert_close(one_hot, one_hot.round())
    weights = torch.randn(12)
    (grad,) = torch.autograd.grad((posterior["stoch"] * weights).sum(), [rssm.obs_out[0].weight])
    assert grad.abs().sum() > 0  # samples carry gradients to the posterior's parameters
    gaussian = RSSM(ACT, 7, deter_dim=8, stoch_dim=3, classes=0, hidden_dim=8)
    posterior, _ = gaussian.observe(torch.randn(2, 5, 7), torch.zeros(2, 5, ACT))
    assert posterior["stoch"].shape == (2, 5, 3) and (posterior["std"] > 0.1).all()


def test_imagination_shapes_and_which_parameters_each_loss_trains():
    agent = tiny_agent(actor_entropy=0.0)
    agent.set_task(0)
    start = {key: value.detach() for key, value in agent.rssm.initial(6, "cpu").items()}
    start["deter"] = torch.randn(6, 8)
    features, actions, entropy = agent.imagine(start)
    assert features.shape == (4, 6, agent.rssm.feature_dim) and actions.shape == (4, 6, ACT)
    assert entropy.shape == (3, 6) and torch.equal(actions[0], torch.zeros(6, ACT))
    metrics = agent.update_behaviour(start)
    world_model = [agent.encoder, agent.rssm, agent.decoder, agent.reward_head, agent.slow_critic]
    # the actor's loss passes through the dynamics and reward head but trains neither
    assert all(p.grad is None for module in world_model for p in module.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert metrics["actor_grad_norm"] > 0  # with no entropy bonus, only through the dynamics
    assert all(p.grad is not None for p in agent.critic.parameters())
    # and the model's loss trains the model alone
    batch = TensorDict(
        {
            "observation": torch.randn(2, 6, OBS),
            "next_observation": torch.randn(2, 6, OBS),
            "action": torch.rand(2, 6, ACT) * 2 - 1,
            "task_reward": torch.rand(2, 6, 3),
        },
        batch_size=[2, 6],
    )
    actor_before = copy.deepcopy(agent.actor.state_dict())
    loss, metrics, posterior, embed = agent.world_model_loss(batch)
    clipped_step(agent.model_opt, loss, agent.grad_clip)
    assert posterior["deter"].shape == (2, 7, 8) and embed.shape == (2, 7, 16)
    assert {"model_kl", "reconstruction_mse", "reward_mse"} <= set(metrics)
    assert all(p.grad is not None for p in agent.reward_head.parameters())  # finetuning: reward learns
    assert all(torch.equal(v, actor_before[k]) for k, v in agent.actor.state_dict().items())


def test_imagined_intrinsic_reward_takes_actions_as_data_and_is_normalised_over_every_row():
    """mastering-urlb's Plan2Explore: ``compute_intr_reward`` stops the actions' gradient, and
    its StreamNorm's magnitude is the mean |r| over the whole (H+1, N) sequence, the zero
    reward of the start states included (issue 18)."""
    from agents.plan2explore import Plan2Explore

    agent = tiny_agent(intrinsic_reward_momentum=0.5, reward_model=Plan2Explore)
    agent.set_task(None)
    features = torch.randn(4, 6, agent.rssm.feature_dim, requires_grad=True)
    actions = torch.randn(4, 6, ACT, requires_grad=True)
    reward = agent.imagined_reward(features, actions)
    with torch.no_grad():
        raw = agent.reward_model.intrinsic_reward(
            TensorDict(
                {"observation": features[:-1].flatten(0, 1), "action": actions[1:].flatten(0, 1)},
                batch_size=[18],
            )
        ).view(3, 6)
    magnitude = 0.5 * 1.0 + 0.5 * torch.cat([torch.zeros(1, 6), raw]).abs().mean()  # 4 rows, not 3
    torch.testing.assert_close(agent.intrinsic_scale.magnitude, magnitude)
    torch.testing.assert_close(reward, torch.cat([torch.zeros(1, 6), raw]) / magnitude)
    features_grad, actions_grad = torch.autograd.grad(reward.sum(), [features, actions], allow_unused=True)
    assert actions_grad is None and features_grad.abs().sum() > 0


def test_plan2explore_is_as_wide_as_the_embedding_and_steps_like_the_model():
    """The reference's ensemble has one hidden layer as wide as the embedding and trains with
    the world model's optimiser settings (eps, clipping, decoupled decay)."""
    from agents.plan2explore import Plan2Explore

    model = Plan2Explore(
        obs_dim=10, action_dim=2, embed_dim=24, adam_eps=1e-5, grad_clip=0.1, weight_decay=1e-6
    )
    assert model.ensemble.weights[0].shape == (5, 12, 24) and model.ensemble.weights[1].shape == (5, 24, 24)
    (group,) = model.optimiser.param_groups
    assert isinstance(model.optimiser, torch.optim.AdamW) and group["eps"] == 1e-5
    assert group["lr"] * group["weight_decay"] == pytest.approx(1e-6)  # (1 - 1e-6) per step
    batch = TensorDict(
        {
            "observation": torch.randn(8, 10),
            "action": torch.rand(8, 2),
            "next_embed": torch.randn(8, 24),
        },
        batch_size=[8],
    )
    metrics = model.update(batch)
    grad_norm = torch.cat([p.grad.flatten() for p in model.ensemble.parameters()]).norm()
    assert metrics["disagreement_grad_norm"] > 0.1 and grad_norm == pytest.approx(0.1, rel=1e-4)  # clipped


def test_frame_decoder_ends_on_an_elu_as_mastering_urlbs():
    decoder = observation_decoder((3, 64, 64), 10, 32, cnn_depth=2, output_elu=True)
    assert isinstance(decoder.net[-1], torch.nn.ELU)
    with torch.no_grad():
        decoder.net[-2].bias.fill_(-50.0)
    assert decoder(torch.randn(2, 10)).min() >= -1.0
    assert not isinstance(observation_decoder((3, 64, 64), 10, 32, cnn_depth=2).net[-1], torch.nn.ELU)


def test_update_ratio_is_one_update_per_ten_frames_on_pixels():
    """mastering-urlb trains every ``train_every_actions // action_repeat`` = 5 agent steps;
    the run plan divides the agent's ratio by the repeat: 0.1 updates per frame."""
    assert DreamerAgent.own_update_ratio({}) == pytest.approx(0.2)
    assert DreamerAgent.own_update_ratio({}) / 2 == pytest.approx(1 / 10)


def sequence_replay(nstep: int) -> ReplayBuffer:
    """Two worlds, episodes of 7 steps; observation = [step, world]."""
    replay = ReplayBuffer(200, 2, "cpu", nstep=nstep)
    for step in range(40):
        world = torch.arange(2.0)
        observation = torch.stack([torch.full((2,), float(step)), world], 1)
        ended = torch.full((2,), step % 7 == 6)
        replay.add(
            observation,
            torch.zeros(2, 1),
            observation + torch.tensor([1.0, 0.0]),
            torch.full((2, 1), float(step)),
            torch.zeros(2, dtype=torch.bool),
            ended,
        )
    return replay


def test_sequence_replay_windows_stay_inside_one_episode_and_one_world():
    replay = sequence_replay(nstep=4)
    batch = replay.sample_sequences(400, generator=torch.Generator().manual_seed(0))
    assert batch.batch_size == (400, 4)
    steps = batch["observation"][..., 0]
    assert torch.equal(steps[:, 1:] - steps[:, :-1], torch.ones(400, 3))  # consecutive steps
    assert (batch["observation"][..., 1] == batch["observation"][:, :1, 1]).all()  # one world
    assert not (batch["truncated"][:, :-1]).any()  # an episode may end only at the last step
    assert torch.equal(batch["task_reward"][..., 0], steps)  # rewards as stored, undiscounted
    starts = {int(s) % 7 for s in steps[:, 0]}
    assert starts == {0, 1, 2, 3}  # every valid start within an episode is drawn


def test_act_filters_into_the_carried_latent_and_observe_resets_ended_worlds():
    agent = tiny_agent()
    state = agent.init_state(3)
    assert state["deter"].abs().sum() == 0
    action = agent.act(torch.randn(3, OBS), state, explore=True)
    assert action.shape == (3, ACT) and action.abs().max() <= 1
    assert state["deter"].abs().sum() > 0 and torch.equal(state["action"], action)
    step = TensorDict({"done": torch.tensor([True, False, False])}, batch_size=[3])
    state = agent.observe(state, step)
    assert state["deter"][0].abs().sum() == 0 and state["action"][0].abs().sum() == 0
    assert state["deter"][1:].abs().sum() > 0


def test_init_from_transfers_the_world_model_and_actor_only():
    pretrained, fresh = tiny_agent(), tiny_agent()
    for module in (
        pretrained.encoder,
        pretrained.rssm,
        pretrained.decoder,
        pretrained.actor,
        pretrained.critic,
        pretrained.slow_critic,
        pretrained.reward_head,
    ):
        for p in module.parameters():
            p.data.add_(1.0)
    fresh.init_from(pretrained)
    for name in ("encoder", "rssm", "decoder", "actor"):
        assert all(
            torch.equal(a, b)
            for a, b in zip(
                getattr(fresh, name).parameters(), getattr(pretrained, name).parameters(), strict=True
            )
        ), name
    for name in ("critic", "slow_critic", "reward_head"):
        assert not any(
            torch.equal(a, b)
            for a, b in zip(
                getattr(fresh, name).parameters(), getattr(pretrained, name).parameters(), strict=True
            )
        ), name
    with_critic = tiny_agent(init_critic=True)
    with_critic.init_from(pretrained)
    assert torch.equal(with_critic.slow_critic[0].weight, pretrained.critic[0].weight)


def test_encoder_follows_the_observation_spec():
    encoder, size = observation_encoder((24,), 32)
    assert size == 32 and encoder(torch.randn(3, 24)).shape == (3, 32)
    frames = torch.randint(0, 256, (2, 4, 3, 64, 64), dtype=torch.uint8)
    encoder, size = observation_encoder((3, 64, 64), 32)
    assert size == 1536 and encoder(frames).shape == (2, 4, 1536)  # DreamerV2's 48-deep CNN
    decoder = observation_decoder((3, 64, 64), 10, 32)
    assert decoder(torch.randn(2, 4, 10)).shape == (2, 4, 3, 64, 64)
    with pytest.raises(ValueError, match="64x64"):
        observation_decoder((3, 84, 84), 10, 32)


@pytest.mark.parametrize("name", ["plan2explore", "dreamer_rnd", "dreamer_apt"])
def test_latent_reward_models_train_and_reward_imagined_transitions(name):
    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("pretrain", overrides=[f"agent={name}", "preset=debug"])
    torch.manual_seed(0)
    agent = instantiate(
        cfg.agent, obs_dim=OBS, action_dim=ACT, **{k: v for k, v in TINY.items() if k != "hidden_dim"}
    )
    replay = ReplayBuffer(200, 2, "cpu", nstep=agent.batch_length)
    for _ in range(20):
        no = torch.zeros(2, dtype=torch.bool)
        replay.add(
            torch.randn(2, OBS), torch.rand(2, ACT) * 2 - 1, torch.randn(2, OBS), torch.zeros(2, 3), no, no
        )
    metrics = agent.update(replay, 0)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert metrics["imagined_reward_std"] > 0, f"{name}: constant intrinsic reward"
    trained = {"plan2explore": "disagreement_loss", "dreamer_rnd": "rnd_loss"}.get(name)
    assert trained is None or trained in metrics, sorted(metrics)


# -- a run with carried latents -------------------------------------------------------------------
def dreamer_runner(run_dir: Path, total: int) -> OnlineLoop:
    torch.manual_seed(0)
    env = make_env("walker_stand", 2, backend="cpu", seed=0)
    eval_env = make_env("walker_stand", 2, backend="cpu", seed=0)
    env.episode_steps = eval_env.episode_steps = 30  # short episodes: latents reset mid-run
    agent = DreamerAgent(env.obs_dim, env.action_dim, **TINY)
    replay = ReplayBuffer(2000, 2, "cpu", nstep=agent.batch_length)
    schedule = Schedule(
        total_frames=total,
        seed_frames=40,
        updates_per_frame=DreamerAgent.own_update_ratio(TINY),
        eval_every_frames=100_000,
        log_every_frames=100,
        checkpoint_every_frames=0,
    )
    logger = Logger(run_dir, total, use_tensorboard=False, console=False)
    return OnlineLoop(
        env, eval_env, agent, replay, logger, schedule, run_dir, seed=0, record={}, task="walker_stand"
    )


def test_checkpoint_round_trip_continues_with_the_same_latents(tmp_path):
    """A run checkpointed mid-way and resumed in a fresh process-like runner acts and learns
    exactly as the uninterrupted one: the carried latents, replay and counters come back."""
    first = dreamer_runner(tmp_path / "a", total=200)
    first.schedule.total_frames = 130
    first.run()
    assert first.agent_state["deter"].abs().sum() > 0  # latents are live mid-episode
    state = first.state_dict()
    torch.save(state, tmp_path / "checkpoint.pt")
    first.schedule.total_frames = 200
    uninterrupted = first.run()

    second = dreamer_runner(tmp_path / "b", total=200)
    second.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    torch.testing.assert_close(second.agent_state["deter"], state["agent_state"]["deter"])
    assert second.agent._behaviour_updates == first.agent._behaviour_updates - (
        first.updates - state["updates"]
    )
    resumed = second.run()
    assert resumed == uninterrupted
    torch.testing.assert_close(second.agent_state["stoch"], first.agent_state["stoch"])


@pytest.mark.gpu
def test_dreamer_acts_and_learns_on_cuda_from_a_cuda_replay():
    agent = tiny_agent().to("cuda")
    replay = ReplayBuffer(200, 2, "cuda", nstep=agent.batch_length)
    state = agent.init_state(2, "cuda")
    for _ in range(20):
        no = torch.zeros(2, dtype=torch.bool, device="cuda")
        observation = torch.randn(2, OBS, device="cuda")
        action = agent.act(observation, state, explore=True)
        replay.add(
            observation, action, torch.randn(2, OBS, device="cuda"), torch.zeros(2, 3, device="cuda"), no, no
        )
    agent.set_task(0)
    metrics = agent.update(replay, 0)
    assert all(v.device.type == "cuda" for v in metrics.values())  # no host copies on the way
    assert all(math.isfinite(float(v)) for v in metrics.values())


def test_dreamer_learns_from_rendered_frames(tmp_path):
    """obs=pixels for the world model: single 64x64 frames at action repeat 2 through the
    conv encoder and decoder, sequences from the shared replay, driven by the runner's own
    collect and train steps; a CNN 4 channels deep keeps it to CPU seconds."""
    torch.manual_seed(0)
    env = make_env("walker_stand", 2, backend="cpu", seed=0, pixels=DreamerAgent.pixel_format)
    assert env.obs_dim == (3, 64, 64) and env.action_repeat == 2
    agent = DreamerAgent(env.obs_dim, env.action_dim, **(TINY | {"cnn_depth": 4}))
    replay = ReplayBuffer(2000, 2, "cpu", nstep=agent.batch_length, frame_stack=1)
    schedule = Schedule(
        total_frames=10_000,
        seed_frames=40,
        updates_per_frame=DreamerAgent.own_update_ratio(TINY) / env.action_repeat,
        eval_every_frames=100_000,
        log_every_frames=100_000,
        checkpoint_every_frames=0,
    )
    logger = Logger(tmp_path, 10_000, use_tensorboard=False, console=False)
    runner = OnlineLoop(
        env, env, agent, replay, logger, schedule, tmp_path, seed=0, record={}, task="walker_stand"
    )
    runner.start()
    before = copy.deepcopy(agent.encoder.state_dict())
    while runner.updates < 3:
        runner.collect()
        runner.train()
    assert runner.frame == 4 * len(replay) // 2  # two frames per agent step per world
    batch = replay.sample_sequences(4)
    assert batch["observation"].shape == (4, TINY["batch_length"], 3, 64, 64)
    assert batch["observation"].dtype == torch.uint8
    metrics = runner.last_metrics
    assert all(math.isfinite(float(v)) for v in metrics.values())
    after = agent.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the model loss trains the CNN
    assert agent.act(runner.observation, runner.agent_state, explore=False).shape == (2, env.action_dim)
