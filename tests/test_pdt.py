"""PDT (agents/pdt.py): its losses, return targets and z selection against hand-worked values;
which steps the future encoder and the policy read; acting on prior samples; learning offline
and online; transfer; state_dict round trips with the carried context. The offline loop is in
test_offline.py, pretrain -> finetune through the entry points in test_pipeline.py."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from agents.parts.nets import gaussian_kl, gaussian_nll
from agents.parts.transformer import Lamb, causal_mask
from agents.pdt import (
    EpisodeWindows,
    PDTAgent,
    horizon_return,
    pdt_loss,
    returns_to_go,
    select_by_return,
    temperature_loss,
)

OBS, ACT, K = 5, 2, 4
TINY = dict(hidden_dim=16, batch_size=6, context_length=K, eval_context_length=3, z_dim=3, num_layers=2)
TINY |= dict(num_heads=2, num_future_samples=8, warmup_updates=2, return_warmup_updates=2)


def tiny_agent(**overrides) -> PDTAgent:
    torch.manual_seed(0)
    return PDTAgent(OBS, ACT, **(TINY | overrides))


def windows(batch: int = 6, seed: int = 0) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    values = {
        "observation": torch.randn(batch, 2 * K, OBS, generator=generator),
        "action": torch.rand(batch, 2 * K, ACT, generator=generator) * 2 - 1,
        "task_reward": torch.rand(batch, 2 * K, 3, generator=generator),
    }
    return TensorDict(values, batch_size=[batch, 2 * K])


class Source:
    """Both samplers PDT reads: a dataset's ``sample_windows`` and a replay's ``sample_sequences``."""

    fields = {"observation": torch.randn(50, OBS) * 3 + 1}

    def sample_windows(self, batch_size, length, generator=None):
        assert length == 2 * K
        return windows(batch_size)

    def sample_sequences(self, batch_size, generator=None):
        return windows(batch_size)


# -- pure functions by hand -------------------------------------------------------------------
def test_gaussian_kl_and_nll_by_hand():
    zero, one = torch.tensor(0.0), torch.tensor(1.0)
    assert float(gaussian_kl(one, zero, zero, zero)) == pytest.approx(0.5)  # (mu_q - mu_p)^2 / 2
    # KL(N(0, 2^2) || N(0, 1)) = -log 2 + 4 / 2 - 1/2
    log2 = torch.tensor(math.log(2.0))
    assert float(gaussian_kl(zero, log2, zero, zero)) == pytest.approx(1.5 - math.log(2.0))
    # KL(N(0, 1) || N(1, e^2)) = 1 + (1 + 1) / (2 e^2) - 1/2
    assert float(gaussian_kl(zero, zero, one, one)) == pytest.approx(0.5 + math.exp(-2.0))
    assert float(gaussian_nll(one, zero, zero)) == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi))


def test_pdt_loss_by_hand_and_its_gradients():
    log_prob, entropy = torch.tensor([[-1.0, -3.0]]), torch.tensor([[0.5, 1.5]])
    posterior_mean = torch.ones(1, 2, 1, requires_grad=True)
    prior_mean = torch.zeros(1, 2, 1, requires_grad=True)
    posterior, prior = (posterior_mean, torch.zeros(1, 2, 1)), (prior_mean, torch.zeros(1, 2, 1))
    # nll 2 - 0.1 * mean entropy 1 + beta 2 * KL(N(1,1)||N(0,1)) 0.5 + KL to the prior 0.5
    loss, metrics = pdt_loss(log_prob, entropy, torch.tensor(0.1), posterior, prior, 2.0)
    assert float(loss.detach()) == pytest.approx(3.4)
    assert float(metrics["prior_kl"]) == pytest.approx(0.5) and float(metrics["kl_standard"]) == 0.5
    loss.backward()
    # q gets beta * d mean(mu^2 / 2) = 2 * 1 / 2 per element and nothing from the prior's KL;
    # the prior is pulled towards q: d mean((mu_q - mu_p)^2 / 2) / d mu_p = -1 / 2
    torch.testing.assert_close(posterior_mean.grad, torch.ones(1, 2, 1))
    torch.testing.assert_close(prior_mean.grad, torch.full((1, 2, 1), -0.5))
    finetune, metrics = pdt_loss(
        log_prob, entropy, torch.tensor(0.1), posterior, prior, 2.0, torch.tensor([[1.0, 2.0]])
    )
    assert float(finetune.detach()) == pytest.approx(4.9) and float(metrics["return_nll"]) == 1.5
    with pytest.raises(ValueError, match="pdt_loss shapes"):
        pdt_loss(log_prob, entropy[:, :1], torch.tensor(0.1), posterior, prior, 2.0)


def test_horizon_return_spans_from_s_t_to_the_last_step_z_t_encodes():
    # K = 2, window of 4 steps: position 0 averages steps 0..2, position 1 steps 1..3
    reward = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 3.0]])
    torch.testing.assert_close(horizon_return(reward, 2), torch.tensor([[2.0, 3.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="horizon_return needs"):
        horizon_return(reward, 3)


def test_returns_to_go_sum_each_rows_rewards_to_its_episodes_end():
    # episodes rows 0..2 and 3..4: the reference's discount_cumsum with gamma 1 within each
    reward = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0])
    rtg = returns_to_go(reward, torch.tensor([0, 3]), torch.tensor([3, 5]))
    torch.testing.assert_close(rtg, torch.tensor([6.0, 5.0, 3.0, 30.0, 20.0]))


def test_lamb_step_by_hand():
    """Bias-corrected first step without decay: Adam's g / (|g| + eps) = sign(g), times lr; the
    global gradient norm is first clipped at 1 (here 5 -> 1: the direction is unchanged).
    With decay the step is scaled to lr * ||w|| (the trust ratio)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    w.grad = torch.tensor([3.0, -4.0])
    Lamb([w], lr=0.1, weight_decay=0.0).step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9]))
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([1e-3, 1e-3])
    Lamb([w], lr=0.1, weight_decay=0.5).step()
    update = torch.tensor([1.0, 1.0]) + 0.5 * torch.tensor([3.0, 4.0])  # sign(g) + decay * w
    expected = torch.tensor([3.0, 4.0]) - 0.1 * 5.0 * update / update.norm()
    torch.testing.assert_close(w.detach(), expected)


def test_policy_log_std_is_only_soft_clamped():
    """Regression (issue 19's parity fixture): the policy head's log std was hard-clamped at 2
    before the soft clamp into [-5, 2], which the reference's DiagGaussianActor does not do."""
    agent = tiny_agent()
    with torch.no_grad():
        agent.actor.log_std.weight.zero_()
        agent.actor.log_std.bias.fill_(3.0)
    embed = torch.zeros(1, 1, 16)
    _, log_std = agent.policy(embed, embed, embed, causal_mask(3, "cpu"))
    assert float(log_std.max().detach()) == pytest.approx(-5 + 3.5 * (math.tanh(3.0) + 1), rel=1e-6)


def test_select_by_return_and_temperature_loss_by_hand():
    candidates = torch.tensor([[[0.0], [10.0]], [[1.0], [11.0]], [[2.0], [12.0]]])  # (M=3, N=2, Z=1)
    predicted = torch.tensor([[0.1, 5.0], [0.9, 1.0], [0.5, 2.0]])
    torch.testing.assert_close(select_by_return(candidates, predicted), torch.tensor([[1.0], [10.0]]))
    log_temperature = torch.tensor(math.log(0.5), requires_grad=True)
    loss = temperature_loss(log_temperature, torch.tensor(1.0, requires_grad=True), -2.0)
    assert float(loss.detach()) == pytest.approx(1.5)  # alpha (H - target) = 0.5 * 3
    loss.backward()
    assert float(log_temperature.grad) == pytest.approx(1.5)  # entropy above target: alpha shrinks


# -- what each part reads -----------------------------------------------------------------------
def test_future_encoder_reads_only_the_steps_after_the_context():
    """z at context position i is read after future step i: q(z_{t_i} | (s, a)_{t_K .. t_K+i})."""
    agent = tiny_agent()
    agent.train(False)
    batch = windows()
    _, _, _, (mean, log_std) = agent.encode(batch)
    context = batch.clone()
    context["observation"][:, :K] += 5.0  # every s_<=t and a_<=t of the context
    context["action"][:, :K] *= -0.5
    torch.testing.assert_close(agent.encode(context)[3][0], mean, rtol=0, atol=0)
    for step in range(K):  # future step j changes z at positions >= j only
        future = batch.clone()
        future["observation"][:, K + step] += 1.0
        changed = agent.encode(future)[3][0]
        torch.testing.assert_close(changed[:, :step], mean[:, :step], rtol=0, atol=0)
        assert (changed[:, step:] - mean[:, step:]).abs().amax(-1).min() > 1e-6


def test_policy_transformer_is_causal_over_state_z_action_tokens():
    agent = tiny_agent()
    agent.train(False)
    steps = 5
    embeds = [torch.randn(2, steps, 16) for _ in range(3)]  # state, z, action embeddings
    mask = causal_mask(3 * steps, "cpu")
    mean = agent.policy(*embeds, mask)[0]
    t = 2
    for which in range(3):  # any token of a later step leaves a_<=t alone
        later = [e.clone() for e in embeds]
        later[which][:, t + 1 :] += torch.randn(2, steps - t - 1, 16)
        torch.testing.assert_close(
            agent.policy(*later, mask)[0][:, : t + 1], mean[:, : t + 1], rtol=0, atol=0
        )
    action_now = [e.clone() for e in embeds]
    action_now[2][:, t] += torch.randn(2, 16)  # a_t comes after the z_t token it is predicted at
    torch.testing.assert_close(agent.policy(*action_now, mask)[0][:, t], mean[:, t], rtol=0, atol=0)
    for which in (0, 1):  # s_t and z_t do inform a_t
        now = [e.clone() for e in embeds]
        now[which][:, t] += torch.randn(2, 16)  # (a constant shift would vanish in LayerNorm)
        assert not torch.allclose(agent.policy(*now, mask)[0][:, t], mean[:, t])


def test_act_conditions_on_prior_samples_and_never_runs_the_future_encoder(monkeypatch):
    agent = tiny_agent()

    def no_future(*args):
        raise AssertionError("act read the future encoder")

    monkeypatch.setattr(agent.future_encoder, "forward", no_future)
    state = agent.init_state(2)
    for step in range(4):
        observation = torch.randn(2, OBS)
        torch.manual_seed(step)
        action = agent.act(observation, state, explore=True)
        torch.manual_seed(step)
        prior_sample = agent.future_candidates(agent.embed_state(agent.normalise(observation)), 1)[0]
        torch.testing.assert_close(state["future"][:, -1], prior_sample)
        assert action.shape == (2, ACT) and bool((action.abs() < 1).all())
    assert state["length"].tolist() == [3, 3]  # eval_context_length steps are kept
    # the context it acts on holds only past and present steps: a fresh state with the same
    # steps gives the same deterministic action
    replay = agent.init_state(2)
    for key in ("observation", "future", "action"):
        replay[key] = state[key].clone()
    replay["length"] = state["length"].clone()
    agent.train(False)
    mean = agent.policy(
        agent.embed_state(replay["observation"]),
        agent.embed_future(replay["future"]),
        agent.embed_action(replay["action"]),
        agent.context_mask(replay["length"]),
    )[0]
    assert mean.isfinite().all()


def test_short_contexts_equal_the_same_steps_without_padding():
    """At an episode's start the context's empty slots are masked out: acting on one step
    gives what the transformer gives on that one step alone."""
    agent = tiny_agent()
    state = agent.init_state(1)
    observation = torch.randn(1, OBS)
    torch.manual_seed(0)
    action = agent.act(observation, state, explore=False)
    embeds = [
        agent.embed_state(state["observation"][:, -1:]),
        agent.embed_future(state["future"][:, -1:]),
        agent.embed_action(torch.zeros(1, 1, ACT)),
    ]
    mean = agent.policy(*embeds, causal_mask(3, "cpu"))[0][:, -1]
    torch.testing.assert_close(action, torch.tanh(mean))


def test_finetuning_acts_on_the_prior_sample_of_highest_predicted_return():
    """A hand-made return predictor f(s, z) = relu(z_0 + 10) = z_0 + 10: once warmed up, act
    picks the prior sample with the largest first coordinate."""
    agent = tiny_agent()
    agent.set_task(0)
    with torch.no_grad():
        agent.embed_future.weight.zero_()
        agent.embed_future.bias.zero_()
        agent.embed_future.weight[:3] = torch.eye(3)  # z's embedding starts with z itself
        agent.embed_future.bias[0] = 10.0  # past the relu f's input goes through
        agent.return_head.mean.weight.zero_()
        agent.return_head.mean.bias.zero_()
        agent.return_head.mean.weight[0, 16] = 1.0  # reads the first coordinate of z's embedding
    state_embed = agent.embed_state(torch.randn(2, OBS))
    torch.manual_seed(1)
    before = agent.choose_future(state_embed)  # still warming up: one prior sample
    torch.manual_seed(1)
    torch.testing.assert_close(before, agent.future_candidates(state_embed, 1)[0])
    agent.load_state_dict(agent.state_dict() | {"finetune_updates": torch.tensor(2)})  # warmed up
    torch.manual_seed(1)
    chosen = agent.choose_future(state_embed)
    torch.manual_seed(1)
    candidates = agent.future_candidates(state_embed, 8)
    best = candidates[:, :, 0].argmax(0)
    torch.testing.assert_close(chosen, candidates[best, torch.arange(2)])


def test_observe_empties_the_context_of_ended_worlds():
    agent = tiny_agent()
    state = agent.init_state(2)
    agent.act(torch.randn(2, OBS), state, explore=True)
    state = agent.observe(state, TensorDict({"done": torch.tensor([True, False])}, batch_size=[2]))
    assert state["length"].tolist() == [0, 1]
    assert float(state["observation"][0].abs().sum()) == 0 and float(state["observation"][1].abs().sum()) > 0


# -- learning -----------------------------------------------------------------------------------
def test_pretrain_and_finetune_updates():
    """Offline: windows from ``sample_windows``, no return predictor. Online: the replay's
    windows; f alone while warming up, then the whole model with f's loss."""
    agent, source = tiny_agent(), Source()
    agent.prepare_offline(source)
    torch.testing.assert_close(agent.obs_mean, source.fields["observation"].mean(0))
    return_head = {k: v.clone() for k, v in agent.return_head.state_dict().items()}
    metrics = agent.update(source, 0)
    assert {"action_nll", "entropy", "kl_standard", "prior_kl", "loss", "grad_norm", "temperature"} == set(
        metrics
    )
    assert all(v.dim() == 0 and math.isfinite(float(v)) for v in metrics.values())
    assert all(torch.equal(v, agent.return_head.state_dict()[k]) for k, v in return_head.items())
    assert int(agent.model_updates) == 1 and int(agent.finetune_updates) == 0

    agent.set_task(1)
    transformer = agent.transformer.blocks[0].qkv.weight.clone()
    warmup = [agent.update(source, i) for i in range(2)]
    assert set(warmup[0]) == {"return_nll", "return_target"}
    assert torch.equal(agent.transformer.blocks[0].qkv.weight, transformer)  # f alone
    assert not torch.equal(agent.return_head.mean.weight, return_head["mean.weight"])
    metrics = agent.update(source, 2)
    assert "return_nll" in metrics and not torch.equal(agent.transformer.blocks[0].qkv.weight, transformer)
    assert int(agent.finetune_updates) == 3 and type(agent).sequence_window({"context_length": K}) == 2 * K


class EpisodeReplay:
    """A replay of two worlds' complete 10-step episodes (rewards: the world's index + 1 on
    every step) and one episode still running, as ``to_dataset`` gives it."""

    def __len__(self):
        return 25

    def to_dataset(self):
        world = torch.tensor([0] * 15 + [1] * 10)
        step = torch.cat([torch.arange(15), torch.arange(10)])
        ended = torch.zeros(25, dtype=torch.bool)
        ended[[9, 24]] = True
        reward = (world + 1).float()[:, None].expand(25, 3)
        return {
            "observation": torch.randn(25, OBS),
            "action": torch.rand(25, ACT) * 2 - 1,
            "task_reward": reward.clone(),
            "terminated": torch.zeros(25, dtype=torch.bool),
            "truncated": ended,
            "world": world,
            "step": step,
        }


def test_reference_finetuning_reads_complete_episodes_with_their_returns_to_go():
    episodes = EpisodeWindows()
    episodes.refresh(EpisodeReplay(), 0, 2 * K, version=0)
    assert episodes.starts.tolist() == [0, 15] and episodes.windows.tolist() == [3, 3]  # not the running one
    torch.manual_seed(0)
    batch = episodes.sample(64, 2 * K, weighted=True)
    world_two = batch["task_reward"][:, 0, 0] == 2
    # weights R - min R + 1e-6: the lower-return episode all but never drawn
    assert bool(world_two.all())
    # rtg of a window starting at row t of world 1's episode (reward 2 per step): 2 * (10 - t)
    first = batch["return_to_go"][:, 0]
    assert set(first.tolist()) <= {20.0, 18.0, 16.0}
    uniform = episodes.sample(400, 2 * K, weighted=False)
    assert 0.3 < float((uniform["task_reward"][:, 0, 0] == 1).float().mean()) < 0.7

    agent = tiny_agent(return_target="return_to_go", finetune_sampling="return_weighted")
    agent.set_task(0)
    batch, target = agent.finetune_batch(EpisodeReplay())
    torch.testing.assert_close(target, batch["return_to_go"][:, :K] * 1e-3)
    with pytest.raises(ValueError, match="return_target"):
        tiny_agent(return_target="rtg")


def test_warmup_frames_act_with_the_pretrained_policy_and_skip_updates():
    agent, source = tiny_agent(warmup_frames=10), Source()
    agent.set_task(0)
    assert agent.update(source, 9) == {} and int(agent.finetune_updates) == 0
    assert agent.update(source, 10) and int(agent.finetune_updates) == 1


def test_init_from_transfers_everything_but_the_return_predictor():
    pretrained, source = tiny_agent(), Source()
    pretrained.prepare_offline(source)
    for step in range(2):
        pretrained.update(source, step)
    fresh = tiny_agent(init_temperature=0.5)
    fresh.set_task(0)
    head = {k: v.clone() for k, v in fresh.return_head.state_dict().items()}
    fresh.init_from(pretrained)
    for name, value in pretrained.state_dict().items():
        if name.startswith("return_head.") or name == "finetune_updates":
            continue
        assert torch.equal(fresh.state_dict()[name], value), name
    assert all(torch.equal(fresh.return_head.state_dict()[k], v) for k, v in head.items())
    assert fresh._model_updates == 2 and fresh._finetune_updates == 0  # no second lr warmup


def test_state_dict_round_trip_continues_with_the_same_context():
    agent, source = tiny_agent(), Source()
    agent.prepare_offline(source)
    agent.set_task(0)
    for step in range(3):
        agent.update(source, step)
    state = agent.init_state(2)
    for _ in range(2):
        agent.act(torch.randn(2, OBS), state, explore=True)
    saved, carried = agent.training_state(), state.to_dict()

    restored = tiny_agent(init_temperature=0.3)
    restored.set_task(0)
    restored.load_training_state(saved)
    restored_state = TensorDict(carried, batch_size=[2])
    assert restored._model_updates == agent._model_updates and restored._finetune_updates == 3
    observation = torch.randn(2, OBS)
    for model, context in ((agent, state), (restored, restored_state)):
        torch.manual_seed(7)
        model.act(observation, context, explore=True)
    for key in ("observation", "future", "action", "length"):
        torch.testing.assert_close(restored_state[key], state[key])
    torch.manual_seed(8)
    expected = agent.update(source, 3)
    torch.manual_seed(8)
    got = restored.update(source, 3)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in expected.items()}


@pytest.mark.gpu
def test_pdt_acts_and_learns_on_cuda():
    agent = tiny_agent().to("cuda")

    class CudaSource(Source):
        def sample_windows(self, batch_size, length, generator=None):
            return windows(batch_size).to("cuda")

    source = CudaSource()
    source.fields = {"observation": Source.fields["observation"].cuda()}
    agent.prepare_offline(source)
    metrics = agent.update(source, 0)
    assert all(v.device.type == "cuda" and math.isfinite(float(v)) for v in metrics.values())
    state = agent.init_state(2, "cuda")
    assert agent.act(torch.randn(2, OBS, device="cuda"), state, explore=True).device.type == "cuda"
