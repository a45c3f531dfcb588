"""SUPE (agents/supe.py): the VAE's ELBO terms and the high-level labels against hand-worked
values; when skills are drawn; the half-and-half minibatches; learning offline and online;
transfer; state_dict round trips. Pretrain -> finetune through the entry points is in
test_pipeline.py."""

from __future__ import annotations

import io
import math

import pytest
import torch
from tensordict import TensorDict

from agents.supe import (
    SUPEAgent,
    gaussian_log_prob,
    optimistic_reward,
    segment_offset,
    segment_return,
    vae_loss,
)
from envs import make_env
from urlb.data.datasets import DatasetSampler
from urlb.run.collect import RandomPolicy, collect_dataset

OBS, ACT, H, Z = 24, 6, 3, 2  # walker's sizes, 3-step skills
TINY = dict(hidden_dim=16, batch_size=8, horizon=H, skill_dim=Z, utd_ratio=2)


def tiny_agent(**overrides) -> SUPEAgent:
    torch.manual_seed(0)
    return SUPEAgent(OBS, ACT, **(TINY | overrides))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A random walker dataset: 2 worlds, 20-step episodes, 80 transitions."""
    env = make_env("walker", 2, backend="cpu", device="cpu", seed=0)
    env.episode_steps = 20
    path = tmp_path_factory.mktemp("supe") / "walker_random"
    policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(0))
    return collect_dataset(env, policy, 80, path, {"domain": "walker", "agent": "random"})


@pytest.fixture(scope="module")
def sampler(dataset) -> DatasetSampler:
    return DatasetSampler.load(dataset)


class Replay:
    """Replay windows of 2H - 1 steps: online observations are all +1 (prior ones are data)."""

    def __init__(self):
        self.sizes = []

    def sample_sequences(self, batch_size, generator=None):
        self.sizes.append(batch_size)
        return windows(batch_size, 2 * H - 1, segment_step=torch.arange(batch_size) % H, fill=1.0)


def windows(batch, length, segment_step, fill=None, seed=0) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    observation = torch.randn(batch, length, OBS, generator=generator)
    values = {
        "observation": observation if fill is None else torch.full_like(observation, fill),
        "action": torch.rand(batch, length, ACT, generator=generator) * 2 - 1,
        "next_observation": torch.randn(batch, length, OBS, generator=generator),
        "task_reward": torch.rand(batch, length, 3, generator=generator),
        "terminated": torch.zeros(batch, length, dtype=torch.bool),
        "truncated": torch.zeros(batch, length, dtype=torch.bool),
        "skill": torch.rand(batch, length, Z, generator=generator) * 2 - 1,
        "segment_step": (segment_step[:, None] + torch.arange(length)) % H,
        "chosen": torch.ones(batch, length, dtype=torch.bool),
    }
    return TensorDict(values, batch_size=[batch, length])


# -- pure functions by hand -------------------------------------------------------------------
def test_elbo_terms_by_hand_and_their_gradients():
    # log N(1; 0, 1) + log N(0; 0, e^log 2) = -1/2 - log 2pi / 2 - log 2 - log 2pi / 2
    value, mean = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)
    log_std = torch.tensor([[0.0, math.log(2.0)]])
    expected = -0.5 - math.log(2.0) - math.log(2 * math.pi)
    assert float(gaussian_log_prob(value, mean, log_std)) == pytest.approx(expected)

    action_log_prob = torch.tensor([[-1.0, -3.0]])  # (B=1, H=2): reconstruction nll 2
    posterior_mean = torch.tensor([[1.0, 0.0]], requires_grad=True)
    prior_mean = torch.zeros(1, 2, requires_grad=True)
    posterior = (posterior_mean, torch.tensor([[0.0, math.log(2.0)]]))
    # KL(N(1, 1) || N(0, 1)) + KL(N(0, 2^2) || N(0, 1)) = 1/2 + (-log 2 + 4/2 - 1/2), summed over z
    loss, metrics = vae_loss(action_log_prob, posterior, (prior_mean, torch.zeros(1, 2)), 0.1)
    kl = 2.0 - math.log(2.0)
    assert float(metrics["reconstruction_nll"]) == 2.0 and float(metrics["kl"]) == pytest.approx(kl)
    assert float(loss.detach()) == pytest.approx(2.0 + 0.1 * kl)
    loss.backward()
    # the state prior is trained through the KL too: d beta KL / d mu_p = -beta (mu_q - mu_p)
    torch.testing.assert_close(prior_mean.grad, torch.tensor([[-0.1, 0.0]]))
    torch.testing.assert_close(posterior_mean.grad, torch.tensor([[0.1, 0.0]]))
    with pytest.raises(ValueError, match="vae_loss shapes"):
        vae_loss(action_log_prob, posterior, (torch.zeros(1, 3), torch.zeros(1, 3)), 0.1)


def test_segment_return_offset_and_optimistic_reward_by_hand():
    reward = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(segment_return(reward, 0.5), torch.tensor([3.0, 0.25]))  # 1 + 1 + 1
    # a window starting 0, 1 or 2 steps into its segment reaches the next segment 0, 2 or 1 steps on
    assert segment_offset(torch.tensor([0, 1, 2]), 3).tolist() == [0, 2, 1]
    optimistic = optimistic_reward(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.25]), 8.0)
    torch.testing.assert_close(optimistic, torch.tensor([5.0, 1.0]))
    with pytest.raises(ValueError, match="optimistic_reward shapes"):
        optimistic_reward(torch.zeros(2), torch.zeros(3), 8.0)


# -- labels -------------------------------------------------------------------------------------
def test_relabelling_gives_the_documented_rewards(monkeypatch):
    """A hand-made reward model (r_hat = 2) and RND (bonus = first input coordinate): prior
    segments get u = tanh(mean of q) and 2 + 8 s_0; online ones their chosen u (the encoder's
    where none was chosen) and sum_k g^k r_k + 8 s_0, from the first segment start on."""
    agent = tiny_agent()
    agent.set_task(1)
    with torch.no_grad():
        agent.reward_predictor[-1].weight.zero_()
        agent.reward_predictor[-1].bias.fill_(2.0)
    monkeypatch.setattr(agent.rnd, "prediction_error", lambda inputs: inputs[:, 0])

    prior = windows(4, H, torch.zeros(4, dtype=torch.long), seed=1)
    prior["terminated"][0, -1] = True
    offline = agent.label_prior(prior)
    mean = agent.skills.posterior(prior["observation"], prior["action"])[0]
    torch.testing.assert_close(offline["skill"], torch.tanh(mean))
    torch.testing.assert_close(offline["reward"], torch.full((4,), 2.0))
    torch.testing.assert_close(offline["next_observation"], prior["next_observation"][:, -1])
    torch.testing.assert_close(offline["discount"], torch.tensor([0.0, 0.99, 0.99, 0.99]))
    bonus = offline["observation"][:, 0]
    torch.testing.assert_close(optimistic_reward(offline["reward"], bonus, 8.0), 2.0 + 8.0 * bonus)

    replay = windows(3, 2 * H - 1, segment_step=torch.tensor([0, 1, 2]), seed=2)
    replay["chosen"][2] = False  # seed frames: no skill was chosen, the encoder labels it
    online = agent.label_online(replay)
    for row, offset in enumerate([0, 2, 1]):
        segment = slice(offset, offset + H)
        assert torch.equal(online["observation"][row], replay["observation"][row, offset])
        assert torch.equal(online["next_observation"][row], replay["next_observation"][row, offset + H - 1])
        reward = replay["task_reward"][row, segment, 1]
        expected = reward[0] + 0.99 * reward[1] + 0.99**2 * reward[2]
        assert float(online["reward"][row]) == pytest.approx(float(expected))
    torch.testing.assert_close(online["skill"][:2], replay["skill"][[0, 1], [0, 2]])
    encoded = agent.skills.label(replay["observation"][2:, 1 : 1 + H], replay["action"][2:, 1 : 1 + H])
    torch.testing.assert_close(online["skill"][2:], encoded)

    agent.prior = DatasetSampler.__new__(DatasetSampler)
    agent.prior.sample_windows = lambda batch_size, length: windows(
        batch_size, length, torch.zeros(4), seed=1
    )
    batch, _, _ = agent.mixed_batch(Replay(), agent.prior)
    torch.testing.assert_close(batch["reward"][4:], 2.0 + 8.0 * batch["observation"][4:, 0])


def test_half_of_each_minibatch_is_prior_data(sampler):
    agent = tiny_agent()
    agent.prepare_offline(sampler)
    agent.set_task(0)
    replay = Replay()
    batch, online, metrics = agent.mixed_batch(replay, sampler)
    assert batch.batch_size == (8,) and online.batch_size == (4,) and replay.sizes == [4]
    assert bool((batch["observation"][:4] == 1).all()) and not bool((batch["observation"][4:] == 1).any())
    assert {"online_return", "prior_reward", "bonus"} == set(metrics)

    calls = []
    original = sampler.sample_windows
    sampler.sample_windows = lambda batch_size, length: (
        calls.append((batch_size, length)) or original(batch_size, length)
    )
    agent.act(torch.randn(2, OBS), agent.init_state(2), explore=True)  # both worlds draw a skill
    try:
        metrics = agent.update(replay, 0)
    finally:
        del sampler.sample_windows
    assert calls == [(4, H), (4, H)] and replay.sizes == [4, 4, 4]  # one pair per critic minibatch
    expected = {"critic_loss", "actor_loss", "alpha", "reward_model_loss", "rnd_loss", "bonus"}
    assert expected <= set(metrics)
    assert all(v.dim() == 0 and math.isfinite(float(v)) for v in metrics.values())
    assert type(agent).sequence_window({"horizon": H}) == 2 * H - 1


# -- the high-level SAC: RLPD's critic -------------------------------------------------------------
def test_high_level_critic_is_a_ten_network_layer_norm_ensemble():
    from agents.parts.critics import EnsembleCritic, EnsembleLayerNorm, EnsembleLinear

    high = tiny_agent().high
    assert isinstance(high.critic, EnsembleCritic) and high.num_critics == 10
    assert high.critic_subsample == 2 and not high.backup_entropy
    linears = [m for m in high.critic.heads if isinstance(m, EnsembleLinear)]
    norms = [m for m in high.critic.heads if isinstance(m, EnsembleLayerNorm)]
    # three hidden layers, each with LayerNorm (RLPD's critic_layer_norm), then the output
    assert len(linears) == 4 and len(norms) == 3 and all(m.weight.shape[0] == 10 for m in linears + norms)
    assert linears[0].weight.shape == (10, OBS + Z, 16) and linears[-1].weight.shape == (10, 16, 1)
    qs = high.critic(torch.randn(5, OBS), torch.rand(5, Z) * 2 - 1).detach()
    assert qs.shape == (10, 5) and len({round(float(q), 6) for q in qs[:, 0]}) == 10  # own weights each
    # each network is its own MLP: head 3 alone, by hand
    x = torch.cat([torch.ones(1, OBS), torch.zeros(1, Z)], -1)
    for layer in high.critic.heads:
        if isinstance(layer, EnsembleLinear):
            x = x @ layer.weight[3] + layer.bias[3]
        elif isinstance(layer, EnsembleLayerNorm):
            x = torch.nn.functional.layer_norm(x, x.shape[-1:]) * layer.weight[3] + layer.bias[3]
        else:
            x = torch.relu(x)
    torch.testing.assert_close(high.critic(torch.ones(1, OBS), torch.zeros(1, Z))[3], x[:, 0])


def test_high_level_target_is_r_plus_g_min_over_two_fresh_heads(monkeypatch):
    """Target heads set by hand (head i outputs i): each minibatch's target is r + g * min of
    the 2 heads drawn for it, with no entropy term, and the pair is drawn afresh each time."""
    import agents.sac

    high = tiny_agent().high
    B = 6
    monkeypatch.setattr(high.critic_target, "forward", lambda o, a: torch.arange(10.0)[:, None].expand(10, B))
    drawn = []
    real = agents.sac.random_heads

    def recording(qs, size, generator=None):
        drawn.append((tuple(qs.shape), size, real(qs, size, generator)))
        return drawn[-1][2]

    monkeypatch.setattr(agents.sac, "random_heads", recording)
    monkeypatch.setattr(agents.sac.SACAgent, "critic_step", lambda agent, o, a, target: {"target": target})
    reward, discount = torch.randn(B), torch.full((B,), 0.99)
    minima = []
    for _ in range(30):
        target = high.update_critic(
            torch.randn(B, OBS), torch.zeros(B, Z), reward, discount, torch.randn(B, OBS)
        )
        shape, size, heads = drawn[-1]
        assert shape == (10, B) and size == 2 and heads.shape == (2, B)
        assert len(set(heads[:, 0].tolist())) == 2  # two distinct heads
        torch.testing.assert_close(
            target["target"], reward + discount * heads.amin(0)
        )  # alpha = 1: no entropy
        minima.append(float(heads[0, 0].min(heads[1, 0])))
    assert len(set(minima)) > 1 and max(minima) < 9


def test_high_level_actor_maximises_the_heads_mean(monkeypatch):
    high = tiny_agent().high
    observation = torch.randn(4, OBS)
    torch.manual_seed(3)
    action, log_prob = high.actor.sample(observation)
    alpha = high.log_alpha.exp().detach()
    expected = (alpha * log_prob - high.critic(observation, action).mean(0)).mean()
    torch.manual_seed(3)
    torch.testing.assert_close(high.update_actor(observation, 0)["actor_loss"], expected.detach())


# -- acting -------------------------------------------------------------------------------------
def test_a_skill_is_drawn_every_h_steps_and_where_an_episode_ended():
    agent = tiny_agent(eval_action="mean")
    agent.set_task(0)
    state = agent.init_state(2)
    done = {1: torch.tensor([False, True])}  # world 1's episode ends after its second step
    drawn, chosen = [], []
    for step in range(7):
        before = state["skill"].clone()
        observation = torch.randn(2, OBS)
        action = agent.act(observation, state, explore=True)
        drawn.append((state["skill"] != before).any(-1).tolist())
        chosen.append(agent.replay_extras(state)["chosen"].tolist())
        out = TensorDict({"done": done.get(step, torch.zeros(2, dtype=torch.bool))}, batch_size=[2])
        state = agent.observe(state, out)
        assert action.shape == (2, ACT) and bool((action.abs() <= 1).all())
    assert [d[0] for d in drawn] == [True, False, False, True, False, False, True]
    assert [d[1] for d in drawn] == [True, False, True, False, False, True, False]
    assert all(c == [True, True] for c in chosen)
    # the low level acts on (s, z = atanh(u)): deterministic actions are pi's clipped mean
    observation = torch.randn(2, OBS)
    action = agent.act(observation, state, explore=False)
    mean = agent.skills.decode(observation, torch.atanh(state["skill"]))[0]
    torch.testing.assert_close(action, mean.clamp(-1, 1))


def test_seed_frames_leave_the_segment_unchosen_and_pretraining_acts_on_the_prior():
    agent = tiny_agent()
    state = agent.init_state(1)
    out = TensorDict({"done": torch.zeros(1, dtype=torch.bool)}, batch_size=[1])
    for _ in range(H + 1):  # the runner's seed frames: observe without act
        state = agent.observe(state, out)
    assert state["segment_step"].tolist() == [1] and state["chosen"].tolist() == [False]
    state = agent.init_state(1)
    observation = torch.randn(1, OBS)
    agent.act(observation, state, explore=False)  # no task yet: the state prior's mean
    torch.testing.assert_close(state["skill"], torch.tanh(agent.skills.prior(observation)[0]))


def test_evaluation_samples_the_low_level_and_clips_by_default():
    """The reference's MetaPolicyActionWrapper samples pi(a | s, z) and clips, in evaluation too;
    ``eval_action=mean`` acts on the mean."""
    observation = torch.randn(2, OBS)
    for option in ("sample", "mean"):
        agent = tiny_agent(eval_action=option) if option == "mean" else tiny_agent()
        state = agent.init_state(2)
        torch.manual_seed(3)
        action = agent.act(observation, state, explore=False)
        mean, log_std = agent.skills.decode(observation, torch.atanh(state["skill"]))
        torch.manual_seed(3)  # no task yet: u is the state prior's mean, no draw
        noise = torch.randn_like(mean) if option == "sample" else 0
        torch.testing.assert_close(action, (mean + log_std.exp() * noise).clamp(-1, 1))


def test_rnd_and_reward_model_train_once_per_high_level_step(sampler):
    """``segment`` (the reference's): RND on the (s, u) of the worlds that drew a skill since the
    last update, r_hat on that update's online halves; updates with no new skill train neither.
    ``update``: both on every update."""
    agent = tiny_agent()
    agent.prepare_offline(sampler)
    agent.set_task(0)
    seen = []
    original = agent.rnd.update
    agent.rnd.update = lambda batch: seen.append(batch["observation"].clone()) or original(batch)
    reward_steps = []
    step = agent.update_reward_predictor
    agent.update_reward_predictor = lambda online: reward_steps.append(1) or step(online)
    state = agent.init_state(3)
    state["segment_step"] = torch.tensor([0, 1, 0])  # worlds 0 and 2 draw a skill
    observation = torch.randn(3, OBS)
    agent.act(observation, state, explore=True)
    metrics = agent.update(Replay(), 0)
    assert len(seen) == 1 and seen[0].shape == (2, OBS + Z) and len(reward_steps) == 2  # utd_ratio 2
    torch.testing.assert_close(seen[0][:, :OBS], observation[[0, 2]])
    torch.testing.assert_close(seen[0][:, OBS:], state["skill"][[0, 2]])
    assert "rnd_loss" in metrics and "reward_model_loss" in metrics
    metrics = agent.update(Replay(), 1)  # no skill drawn since
    assert len(seen) == 1 and len(reward_steps) == 2 and "rnd_loss" not in metrics

    every = tiny_agent(model_update_schedule="update")
    every.prepare_offline(sampler)
    every.set_task(0)
    assert "rnd_loss" in every.update(Replay(), 0) and "rnd_loss" in every.update(Replay(), 1)


def test_one_world_trains_rnd_on_its_one_new_transition_without_nan(sampler):
    """Regression (issue 19's offline check): with one world the high-level step gives RND one
    transition, whose batch variance was NaN in the running statistics and made every later
    bonus, target and action NaN (``network_layout=urlb``: the reference's RND reads raw input)."""
    agent = tiny_agent(network_layout="urlb")
    agent.prepare_offline(sampler)
    agent.set_task(0)
    state = agent.init_state(1)
    for step in range(2 * H):
        agent.act(torch.randn(1, OBS), state, explore=True)
        state = agent.observe(state, TensorDict({"done": torch.zeros(1, dtype=torch.bool)}, batch_size=[1]))
        metrics = agent.update(Replay(), step)
        assert all(math.isfinite(float(v)) for v in metrics.values())
    assert bool(torch.isfinite(agent.rnd.obs_stats.var).all())
    assert bool(torch.isfinite(agent.act(torch.randn(1, OBS), state, explore=True)).all())


def test_the_grus_hidden_r_and_z_biases_stay_zero(sampler):
    """Regression (issue 19's parity fixture): torch's GRU has a hidden bias on the r and z
    gates besides the input one, Flax's (the reference's) does not; trained by Adam the pair
    moved twice as fast. They start at 0 and get no gradient."""
    agent = tiny_agent(lr=3e-3)
    agent.prepare_offline(sampler)
    for step in range(3):
        agent.update(sampler, step)
    for name, bias in agent.skills.gru.named_parameters():
        if name.startswith("bias_hh"):
            bias = bias.detach()
            assert float(bias[: 2 * 16].abs().max()) == 0 and float(bias[2 * 16 :].abs().max()) > 0


def test_offline_budget_is_the_references():
    assert tiny_agent().offline_updates == 1_000_000


# -- learning and transfer ------------------------------------------------------------------------
def test_offline_updates_lower_the_negative_elbo(sampler):
    agent = tiny_agent(lr=3e-3)
    agent.prepare_offline(sampler)
    batch = sampler.sample_windows(8, H, torch.Generator().manual_seed(0))

    class Fixed:
        def sample_windows(self, batch_size, length):
            return batch

    losses = [float(agent.update(Fixed(), step)["loss"]) for step in range(40)]
    assert losses[-1] < losses[0] - 1.0
    assert set(agent.update(Fixed(), 40)) == {"reconstruction_nll", "kl", "loss", "prior_std"}


def test_init_from_transfers_the_frozen_skills_and_the_prior_data(sampler, dataset):
    pretrained = tiny_agent(dataset=str(dataset))
    pretrained.prepare_offline(sampler)
    for step in range(2):
        pretrained.update(sampler, step)
    fresh = tiny_agent(init_temperature=0.5)
    untouched = {k: v.clone() for k, v in fresh.state_dict().items() if not k.startswith("skills.")}
    fresh.init_from(pretrained)
    for name, value in pretrained.skills.state_dict().items():
        assert torch.equal(fresh.skills.state_dict()[name], value), name
    for name, value in untouched.items():  # high-level SAC, reward model, RND: fresh
        assert torch.equal(fresh.state_dict()[name], value), name
    assert fresh.prior is sampler and fresh.dataset == str(dataset)
    fresh.set_task(0)
    skills = {k: v.clone() for k, v in fresh.skills.state_dict().items()}
    fresh.update(Replay(), 0)
    assert all(torch.equal(fresh.skills.state_dict()[k], v) for k, v in skills.items())  # frozen

    from_path = tiny_agent()  # finetune.py: the pretrained agent comes from a snapshot, no sampler
    pretrained.prior = None
    from_path.init_from(pretrained)
    from_path.set_task(0)
    from_path.update(Replay(), 0)
    assert len(from_path.prior) == 80
    scratch = tiny_agent()
    scratch.set_task(0)
    with pytest.raises(ValueError, match="snapshot=<updates>"):
        scratch.update(Replay(), 0)


def test_state_dict_round_trip_continues_exactly(sampler):
    agent = tiny_agent()
    agent.prepare_offline(sampler)
    agent.update(sampler, 0)
    agent.set_task(0)
    for step in range(2):
        agent.update(Replay(), step)
    state = agent.init_state(2)
    agent.act(torch.randn(2, OBS), state, explore=True)
    buffer = io.BytesIO()  # through bytes, as a checkpoint: the optimisers' state is not shared
    torch.save({"agent": agent.training_state(), "state": state.to_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    saved, carried = checkpoint["agent"], checkpoint["state"]

    restored = tiny_agent(init_temperature=0.3)
    restored.load_training_state(saved)
    restored.prepare_offline(sampler)
    restored.set_task(0)
    restored_state = TensorDict(carried, batch_size=[2])
    observation = torch.randn(2, OBS)
    actions = []
    for model, context in ((agent, state), (restored, restored_state)):
        torch.manual_seed(7)
        actions.append(model.act(observation, context, explore=True))
    torch.testing.assert_close(actions[0], actions[1], rtol=0, atol=0)
    results = []
    for model in (agent, restored):
        torch.manual_seed(8)
        results.append({k: float(v) for k, v in model.update(Replay(), 2).items()})
    assert results[0] == results[1]


@pytest.mark.gpu
def test_supe_acts_and_learns_on_cuda(sampler):
    agent = tiny_agent().to("cuda")
    cuda = DatasetSampler({k: v for k, v in sampler.fields.items()}, sampler.meta, device="cuda")
    metrics = agent.update(cuda, 0)
    assert all(v.device.type == "cuda" and math.isfinite(float(v)) for v in metrics.values())
    agent.prepare_offline(cuda)
    agent.set_task(0)

    class CudaReplay(Replay):
        def sample_sequences(self, batch_size, generator=None):
            return super().sample_sequences(batch_size).to("cuda")

    metrics = agent.update(CudaReplay(), 0)
    assert all(v.device.type == "cuda" and math.isfinite(float(v)) for v in metrics.values())
    state = agent.init_state(2, "cuda")
    assert agent.act(torch.randn(2, OBS, device="cuda"), state, explore=True).device.type == "cuda"


def test_network_layout_rlpd_builds_the_references_networks():
    """``rlpd`` (default): RLPD's actor (3 ReLU layers, Xavier, log std clipped hard at -20),
    critic (Xavier, Flax's LayerNorm epsilon), RND on raw (s, u) with 3 hidden layers;
    ``urlb``: urlb's. A bad layout names the choices."""
    agent, urlb = tiny_agent(), tiny_agent(network_layout="urlb")
    linears = [m for m in agent.high.actor.net if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 and len([m for m in urlb.high.actor.net if isinstance(m, torch.nn.Linear)]) == 3
    first = linears[0].weight
    assert first.abs().max() <= math.sqrt(6 / sum(first.shape)) and not linears[0].bias.any()
    with torch.no_grad():
        linears[-1].bias[Z:] = -30.0  # the log-std head's output
        linears[-1].weight[Z:] = 0.0
    _, log_std = agent.high.actor(torch.randn(2, OBS))
    assert torch.equal(log_std, torch.full_like(log_std, -20.0))  # urlb's soft clamp would give -5
    norms = [m for m in agent.high.critic.heads if type(m).__name__ == "EnsembleLayerNorm"]
    assert norms[0].eps == 1e-6 and [m for m in urlb.high.critic.heads if hasattr(m, "eps")][0].eps == 1e-5
    x = torch.randn(5, OBS + Z) * 10
    raw = (agent.rnd.target(x) - agent.rnd.predictor(x)).square().mean(-1)
    torch.testing.assert_close(agent.rnd.prediction_error(x), raw)  # no normalisation, no clip
    assert len([m for m in agent.rnd.predictor if isinstance(m, torch.nn.Linear)]) == 4
    assert urlb.rnd.obs_stats is not None and agent.rnd.obs_stats is None
    with pytest.raises(ValueError, match="network_layout"):
        tiny_agent(network_layout="flax")


def test_rlpd_critic_layout_needs_an_ensemble():
    from agents.sac import SACAgent

    with pytest.raises(ValueError, match="num_critics > 2"):
        SACAgent(4, 2, hidden_dim=8, critic_layout="rlpd")
