"""Self-Reference (addon=sr, agents/parts/self_reference.py): its pieces against hand-worked
values, the add-on on and off through the real entry points for a knowledge-based (ICM) and a
skill agent (DIAYN), its checkpoint round trip and its memory refusal."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from tensordict import TensorDict

from agents.ddpg import DDPGAgent
from agents.icm import ICM
from agents.parts.reference_bank import ReferenceBank, cosine_knn
from agents.parts.self_reference import (
    ReferenceAggregator,
    SelfReference,
    normalised,
    query_loss,
    reference_bytes,
)
from urlb.data.memory import OversizeError
from urlb.data.replay import ReplayBuffer
from urlb.run.resolvers import agent_label, register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


# -- retrieval (Eq. 2) ---------------------------------------------------------------------------
def test_cosine_knn_ranks_by_angle_among_valid_rows():
    keys = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    query = torch.tensor([[2.0, 0.5]])  # cosines: 0.970, 0.243, 0.857, -0.970
    rows, found = cosine_knn(query, keys, torch.ones(4, dtype=torch.bool), k=2)
    assert rows.tolist() == [[0, 2]] and found.all()
    rows, found = cosine_knn(query, keys, torch.tensor([False, True, True, False]), k=3)
    assert rows[0, :2].tolist() == [2, 1] and found.tolist() == [[True, True, False]]


def test_bank_keeps_ended_episodes_and_windows_stop_at_episode_end():
    bank = ReferenceBank(obs_dim=1, capacity=8)
    episode, row = bank.new_episodes(2), torch.full((2,), -1)
    for t in range(3):  # world 0 writes 0, 1, 2; world 1 writes 10, 11, 12
        row = bank.write(torch.tensor([[float(t)], [10.0 + t]]), episode, row)
    bank.end_episodes(episode, torch.tensor([True, False]))
    assert bank.retrievable().tolist() == [True, False, True, False, True, False, False, False]
    windows = bank.windows(torch.tensor([0, 2]), length=3)[..., 0]
    assert windows.tolist() == [[0.0, 1.0, 2.0], [1.0, 2.0, 2.0]]  # row 2 holds t=1; t=2 ends it
    windows, found = bank.retrieve(torch.tensor([[1.0]]), k=4, length=2, chunk=4)
    assert found.tolist() == [[True, True, True, False]]  # only world 0's three states


def test_bank_ring_overwrite_breaks_links_and_renews_ids():
    bank = ReferenceBank(obs_dim=1, capacity=3)
    episode, row = bank.new_episodes(1), torch.full((1,), -1)
    for t in range(4):  # the 4th state overwrites row 0 (t=0)
        row = bank.write(torch.tensor([[float(t)]]), episode, row)
    assert bank.states[:, 0].tolist() == [3.0, 1.0, 2.0]
    assert bank.windows(torch.tensor([1]), length=4)[0, :, 0].tolist() == [1.0, 2.0, 3.0, 3.0]
    renewed = bank.renew(torch.tensor([5, 6, 7]), torch.tensor([True, False, True]))
    assert renewed.tolist() == [1, 6, 2]  # ids 0 was taken by the first episode
    with pytest.raises(ValueError, match="does not fit"):
        bank.write(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), torch.full((4,), -1))


# -- the query module (Eq. 1) ----------------------------------------------------------------------
def test_query_loss_hand_values():
    log_prob = torch.tensor([math.log(1.5), math.log(0.5), 0.0])
    old = torch.zeros(3)
    advantage = torch.tensor([1.0, -2.0, 7.0])
    value, target = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 2.0, 9.0])
    mean, state = torch.tensor([[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]]), torch.zeros(3, 2)
    weight = torch.tensor([1.0, 1.0, 0.0])  # the third row: not the module's query
    loss, metrics = query_loss(log_prob, old, advantage, value, target, mean, state, weight, 0.2, 0.5, 1.0)
    # row 1: ratio 1.5, A=1: max(-1.5, -1.2) = -1.2; row 2: ratio 0.5, A=-2: max(1.0, 1.6) = 1.6
    assert metrics["sr_query_policy_loss"].item() == pytest.approx((-1.2 + 1.6) / 2)
    assert metrics["sr_query_value_loss"].item() == pytest.approx(0.5 * (4.0 + 0.0) / 2)
    assert metrics["sr_query_identity_loss"].item() == pytest.approx((2.0 + 0.0) / 2)
    assert loss.item() == pytest.approx(0.2 + 0.5 * 1.0 + 1.0)
    adv = normalised(torch.tensor([1.0, 3.0, 100.0]), weight)
    assert adv[:2].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-6)


# -- aggregation (Eqs. 3-7) ------------------------------------------------------------------------
def test_aggregator_one_token_is_the_value_path_and_empty_is_zero():
    torch.manual_seed(0)
    agg = ReferenceAggregator(obs_dim=2, dim=4, heads=2, length=1)
    state, window = torch.randn(1, 2), torch.randn(1, 1, 1, 2)
    # One key: softmax weight 1, so u = W_o (W_v (VEncoder(s) + T) + b_v) + b_o, whatever Q is.
    attention = agg.attention
    w_v, b_v = attention.in_proj_weight[8:], attention.in_proj_bias[8:]
    value = agg.v_encoder(window[0, 0, 0]) + agg.time.weight[0]
    expected = attention.out_proj(value @ w_v.T + b_v)
    out = agg(state, window, torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-6)
    assert agg(state, window, torch.zeros(1, 1, dtype=torch.bool)).abs().sum() == 0


def test_phase_switches_zero_the_reference_vector():
    sr = SelfReference(obs_dim=3, neighbours=2, length=2, context_size=16, dim=8, heads=2, pretrain=False)
    state = TensorDict(sr.init_state(2, "cpu", pretraining=True), batch_size=[2])
    for t in range(4):
        step = TensorDict({"next_observation": torch.randn(2, 3), "done": torch.tensor([t == 3] * 2)}, [2])
        state = sr.record(state, step, pretraining=True)
    observation = torch.randn(5, 3)
    assert sr.vector(observation, observation, pretraining=True).abs().sum() == 0  # Table 1's freeze
    assert sr.vector(observation, observation, pretraining=False).abs().sum() > 0
    assert not sr.draw_learned(4, "cpu", pretraining=True).any()  # off: the module never queries
    with pytest.raises(ValueError, match="obs=states"):
        SelfReference(obs_dim=(9, 84, 84))


def test_hand_made_references_of_fig5():
    """``uniform`` draws windows of retrievable rows only; ``noise`` is N(0, 1); neither queries."""
    torch.manual_seed(1)
    bank = ReferenceBank(obs_dim=1, capacity=6)
    episode, row = bank.new_episodes(1), torch.full((1,), -1)
    for t in range(4):
        row = bank.write(torch.tensor([[float(t)]]), episode, row)
    windows, found = bank.uniform(3, 5, length=2)
    assert not found.any()  # nothing ended yet
    bank.end_episodes(episode, torch.tensor([True]))
    windows, found = bank.uniform(3, 5, length=2)
    assert found.all() and set(windows[..., 0, 0].flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    sr = SelfReference(obs_dim=1, neighbours=2, length=2, context_size=6, dim=4, heads=2, query="noise")
    assert not sr.draw_learned(8, "cpu", pretraining=False).any()
    assert sr.vector(torch.zeros(500, 1), torch.zeros(500, 1), True).std().item() == pytest.approx(
        1.0, abs=0.1
    )


# -- checkpoint round trip ---------------------------------------------------------------------------
def small_agent() -> DDPGAgent:
    model = lambda obs_dim, action_dim: ICM(obs_dim, action_dim, hidden_dim=16)  # noqa: E731
    sr = lambda obs_dim: SelfReference(obs_dim, neighbours=3, length=2, context_size=64, dim=8, heads=2)  # noqa: E731
    return DDPGAgent(5, 2, hidden_dim=16, batch_size=16, reward_model=model, self_reference=sr)


def filled(agent: DDPGAgent) -> ReplayBuffer:
    """40 steps of 2 worlds (episodes of 10 steps) through act, observe and adapt, as the loop."""
    replay, state = ReplayBuffer(200, 2, "cpu", nstep=2), agent.init_state(2)
    observation = torch.randn(2, 5)
    for t in range(40):
        action = agent.act(observation, state, explore=True)
        extras = agent.replay_extras(state)
        done = torch.full((2,), (t + 1) % 10 == 0)
        out = TensorDict(
            {"next_observation": torch.randn(2, 5), "done": done, "step_count": torch.full((2,), t + 1)}, [2]
        )
        replay.add(observation, action, out["next_observation"], torch.zeros(2, 1), done, done, extras=extras)
        state = agent.adapt(replay, t, agent.observe(state, out))
        observation = out["next_observation"]
    return replay


def test_checkpoint_round_trip_reproduces_the_next_update():
    torch.manual_seed(3)
    agent = small_agent()
    replay = filled(agent)
    attention = agent.self_reference.aggregator.attention.out_proj.weight.clone()
    query_mean = agent.self_reference.query_module.mean[0].weight.clone()
    for step in range(3):
        agent.update(replay, step)
    # the critic's loss trains the attention; Eq. (1) the query module
    assert not torch.equal(attention, agent.self_reference.aggregator.attention.out_proj.weight)
    assert not torch.equal(query_mean, agent.self_reference.query_module.mean[0].weight)
    buffer = io.BytesIO()
    torch.save(agent.training_state(), buffer)
    buffer.seek(0)
    restored = small_agent()
    restored.load_training_state(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.self_reference.bank.states, agent.self_reference.bank.states)
    rng = torch.get_rng_state()
    expected = agent.update(replay, 3)
    torch.set_rng_state(rng)
    got = restored.update(replay, 3)
    assert expected.keys() == got.keys() and "sr_query_policy_loss" in got
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    for (name, a), b in zip(agent.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


ACTOR_CRITIC_AGENTS = [
    *("ddpg", "icm", "disagreement", "rnd", "icm_apt", "apt", "proto", "smm", "aps", "cic", "diayn"),
    *("sac", "diayn_paper", "metra", "metra_discrete"),
]


@pytest.mark.parametrize("name", ACTOR_CRITIC_AGENTS)
def test_every_actor_critic_agent_config_takes_sr(name):
    """``addon=sr`` composes onto each URLB-family agent (DDPG) and METRA (SAC): the config
    passes the snapshot check, builds, and pretraining and finetuning updates run with SR."""
    from hydra.utils import instantiate

    from urlb.run.spec import check_agent_config

    overrides = ["agent.self_reference.context_size=64", "agent.self_reference.dim=8", "agent.batch_size=16"]
    cfg = composed("pretrain", f"agent={name}", "addon=sr", "preset=debug", *overrides)
    check_agent_config(cfg.agent)
    torch.manual_seed(0)
    agent = instantiate(cfg.agent, obs_dim=5, action_dim=2)
    assert agent.self_reference is not None and agent.actor is not None
    replay = filled(agent)
    metrics = agent.update(replay, 0)
    assert "sr_query_identity_loss" in metrics and all(torch.isfinite(v).all() for v in metrics.values())
    agent.set_task(0)
    metrics = agent.update(replay, 1)
    assert all(torch.isfinite(v).all() for v in metrics.values())


def test_finetuning_takes_the_pretrained_reference_set_and_refuses_a_snapshot_without_one():
    torch.manual_seed(4)
    pretrained = small_agent()
    filled(pretrained)
    fine = small_agent()
    fine.init_from(pretrained)
    assert torch.equal(fine.self_reference.bank.states, pretrained.self_reference.bank.states)
    assert fine.self_reference.bank.retrievable().sum() > 0
    plain = DDPGAgent(5, 2, hidden_dim=16, batch_size=16)
    with pytest.raises(ValueError, match="pretrain with addon=sr"):
        fine.init_from(plain)


# -- through the real entry points ----------------------------------------------------------------------
TINY = [
    "preset=debug",
    "backend=cpu",
    "device=cpu",
    "threads=1",
    "tensorboard=false",
    "console=false",
    "protocol.num_envs=2",
    "protocol.eval_episodes=1",
    "protocol.seed_frames=100",
    "protocol.checkpoint_every_frames=0",
    "skill_eval.rollouts=0",
]


def composed(config: str, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        cfg = compose(config, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def pretrain_then_finetune(tmp_path: Path, agent: str, *overrides: str) -> tuple[Path, Path, str]:
    from urlb.run.finetune import main as finetune
    from urlb.run.pretrain import main as pretrain

    addon = "sr" if "addon=sr" in overrides else None
    name = agent_label(agent, addon)
    pre, fine, snapshots = tmp_path / "pre" / name, tmp_path / "fine" / name, tmp_path / "snap"
    common = [f"agent={agent}", *TINY, f"snapshot_root={snapshots}", *overrides]
    cfg = composed(
        "pretrain", *common, "env=jaco", "protocol.pretrain_frames=600", "protocol.snapshot_frames=[600]"
    )
    pretrain(_with(cfg, run_dir=str(pre)), name)
    cfg = composed(
        "finetune", *common, "task=jaco_reach_top_left", "snapshot=600", "protocol.finetune_frames=300"
    )
    finetune(_with(cfg, run_dir=str(fine)), name)
    return pre, fine, name


def _with(cfg, **values):
    for key, value in values.items():
        cfg[key] = value
    return cfg


def test_default_run_folders_name_the_variant():
    for addon, name in ((["addon=sr"], "icm+sr"), ([], "icm")):
        cfg = composed("pretrain", "agent=icm", "env=walker", *addon)
        assert cfg.run_dir == f"runs/pretrain/{name}/walker/seed_1"
        cfg = composed("finetune", "agent=icm", "task=walker_run", "snapshot=2M", *addon)
        assert cfg.run_dir.startswith(f"runs/finetune/{name}/walker_run/")


SR_SMALL = ["addon=sr", "agent.self_reference.context_size=2000", "agent.self_reference.dim=8"]


@pytest.mark.parametrize("agent", ["icm", "diayn"])
@pytest.mark.parametrize("sr", [True, False], ids=["sr", "plain"])
def test_sr_on_and_off_through_the_entry_points(tmp_path, agent, sr):
    """Pretrain 600 frames on jaco (250-step episodes: the reference set holds ended ones
    before the last updates) and finetune, with SR and without; records name the variant."""
    pre, fine, name = pretrain_then_finetune(tmp_path, agent, *(SR_SMALL if sr else []))
    assert name == (f"{agent}+sr" if sr else agent)
    records = [json.loads(line) for line in (fine / "eval.jsonl").read_text().splitlines()]
    assert {r["agent"] for r in records} == {name}
    for run in (pre, fine):
        header = (run / "train.csv").read_text().splitlines()[0]
        assert ("sr_query_policy_loss" in header and "sr_query_identity_loss" in header) == sr
    (snapshot,) = (tmp_path / "snap" / name / "jaco" / "seed_1").glob("*/snapshot_600.pt")
    stored = torch.load(snapshot, weights_only=True)["agent"]
    if sr:
        assert stored["self_reference.bank.ended"].sum() >= 250  # one world's first episode at least
    else:
        assert not any(key.startswith("self_reference.") for key in stored)


def test_sr_is_refused_without_a_backbone_on_pixels_and_when_it_does_not_fit(tmp_path, monkeypatch):
    from urlb.run.build import check_sizes
    from urlb.run.plan import build_plan

    cfg = composed("pretrain", "agent=dreamer", "addon=sr", *TINY, f"run_dir={tmp_path}/p")
    with pytest.raises(
        ValueError, match=r"dreamer \(DreamerAgent\) has no actor-critic backbone .* drop addon=sr"
    ):
        build_plan(cfg, "pretrain", "dreamer+sr")
    cfg = composed("pretrain", "agent=icm", "addon=sr", *TINY, "obs=pixels", f"run_dir={tmp_path}/p")
    with pytest.raises(ValueError, match="use obs=states or drop addon=sr"):
        build_plan(cfg, "pretrain", "icm+sr")
    import urlb.data.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 400 * 2**20)
    cfg = composed("pretrain", "agent=icm", "addon=sr", *TINY, f"run_dir={tmp_path}/p", "env=walker")
    plan, _ = build_plan(_with(cfg, run_dir=str(tmp_path / "p")), "pretrain", "icm+sr")
    check_sizes(plan)  # 1e5 walker states: 123 MB with the search's scratch
    cfg = composed(
        "pretrain", "agent=icm", "addon=sr", *TINY, "env=walker", "agent.self_reference.context_size=1000000"
    )
    plan, _ = build_plan(_with(cfg, run_dir=str(tmp_path / "q")), "pretrain", "icm+sr")
    with pytest.raises(OversizeError, match=r"self-reference .*agent.self_reference.context_size"):
        check_sizes(plan)
    assert reference_bytes(24, 100_000) == 100_000 * (96 + 17)


class Crash(Exception):
    pass


def test_a_resumed_sr_run_continues_exactly(tmp_path, monkeypatch):
    """Crash an icm+sr pretraining right after its checkpoint at 400 frames, resume it (its
    worlds' first episodes end at 500 frames, after the resume) and compare with an
    uninterrupted run: the evaluation returns and every tensor of the final snapshot (bank,
    query module, networks)."""
    from urlb.loop.online import OnlineLoop
    from urlb.run.pretrain import main as pretrain

    def run(run_dir: Path, *extra: str):
        overrides = ["agent=icm", *TINY, *SR_SMALL, "env=jaco", "protocol.pretrain_frames=600"]
        overrides += ["protocol.snapshot_frames=[600]", "protocol.checkpoint_every_frames=200", *extra]
        overrides.append(f"snapshot_root={run_dir / 'snap'}")
        return pretrain(_with(composed("pretrain", *overrides), run_dir=str(run_dir / "run")), "icm+sr")

    run(tmp_path / "whole")
    save = OnlineLoop.save_checkpoint

    def save_then_crash(loop):
        save(loop)
        if loop.frame >= 400:
            raise Crash

    monkeypatch.setattr(OnlineLoop, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        run(tmp_path / "killed")
    monkeypatch.setattr(OnlineLoop, "save_checkpoint", save)
    run(tmp_path / "killed", "resume=true")
    returns = [
        [json.loads(line)["return"] for line in (d / "run" / "eval.jsonl").read_text().splitlines()]
        for d in (tmp_path / "whole", tmp_path / "killed")
    ]
    assert returns[0] == returns[1]
    snapshots = [
        torch.load(next((d / "snap").rglob("snapshot_600.pt")), weights_only=True)["agent"]
        for d in (tmp_path / "whole", tmp_path / "killed")
    ]
    assert snapshots[0].keys() == snapshots[1].keys()
    for key, value in snapshots[0].items():
        assert torch.equal(value, snapshots[1][key]), key
