"""Zero-shot agents (issue 20): FB's and HILP's losses and z inference against values worked out
by hand; HILP's goals; pretrain -> zero_shot.py through the real entry points on a tiny dataset
made here; the records and the report's zero-shot rows; finetuning from the zero-shot policy
(its TD loss by hand, the transfer, pretrain -> finetune.py and its report rows)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from test_pipeline import ROOT, entry, snapshot_file

from agents.fb import FBAgent
from agents.hilp import HILPAgent
from agents.parts.latent import (
    expectile_loss,
    fb_loss,
    goal_distance_value,
    hilp_value_loss,
    latent_q_loss,
    on_sphere,
    orthonormality_loss,
    regress_latent,
    reward_scale,
    reward_weighted_latent,
)
from agents.td3 import OfflineTD3Agent
from urlb.data.datasets import DatasetSampler
from urlb.report.report import build_report, markdown
from urlb.report.runs import ReportError
from urlb.run.zero_shot import zero_shot_from_config

JACO_TASKS = {f"jaco_reach_{c}" for c in ("top_left", "top_right", "bottom_left", "bottom_right")}
TINY = {"fb": ["agent.feature_dim=16", "agent.backward_hidden_dim=16", "agent.z_dim=8"], "td3": []}
TINY["hilp"] = ["agent.feature_dim=16", "agent.phi_hidden_dim=16", "agent.z_dim=8"]


# -- losses against hand-worked values ---------------------------------------------------------------
def test_fb_loss_by_hand():
    m1 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m2 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    target = torch.ones(2, 2)
    discount = torch.tensor([0.5, 0.0])
    # off-diagonal errors: m1 (2 - .5, 3 - 0) -> mean(2.25, 9) = 5.625; m2 (1 - .5, 1 - 0) -> .625
    # 1/2 (5.625 + .625) = 3.125; diagonal: -(mean(1, 4) + mean(0, 0)) = -2.5
    loss, metrics = fb_loss(m1, m2, target, discount)
    assert float(metrics["fb_offdiag"]) == pytest.approx(3.125)
    assert float(metrics["fb_diag"]) == pytest.approx(-2.5)
    assert float(loss) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="fb_loss shapes"):
        fb_loss(m1, m2, target, discount[:1])


def test_orthonormality_regulariser_by_hand():
    # B B^T = [[1, 1], [1, 2]]: off-diagonal squares mean 1, diagonal -2 * mean(1, 2) = -3
    loss, metrics = orthonormality_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert float(metrics["orth_loss_offdiag"]) == pytest.approx(1.0)
    assert float(metrics["orth_loss_diag"]) == pytest.approx(-3.0)
    assert float(loss) == pytest.approx(-2.0)
    # an orthonormal batch (rows e_i scaled so that E[B B^T] ~ I) has no off-diagonal term
    loss, metrics = orthonormality_loss(torch.eye(3))
    assert float(metrics["orth_loss_offdiag"]) == 0 and float(loss) == pytest.approx(-2.0)


def test_hilp_value_target_and_expectile_loss_by_hand():
    assert expectile_loss(torch.tensor([-1.0, 1.0]), torch.tensor([2.0, 2.0]), 0.7).tolist() == pytest.approx(
        [0.3 * 4, 0.7 * 4]
    )
    values = (torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0]))
    target_next = (torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -3.0]))
    target_values = (torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -2.0]))
    reached = torch.tensor([False, True])
    # r = (-1, 0), no bootstrap where reached; q_min = (-1 + .5 * -2, 0) = (-2, 0); adv = q_min -
    # mean target V = (-1, 2): weights (.3, .7). Head 1: q = (-1.5, 0), error (-.5, 2) ->
    # mean(.3 * .25, .7 * 4) = 1.4375; head 2: q = (-2, 0), error (-1, 1) -> mean(.3, .7) = .5
    loss, metrics = hilp_value_loss(values, target_next, target_values, reached, 0.5, 0.7)
    assert float(loss) == pytest.approx(1.9375)
    assert float(metrics["adv_mean"]) == pytest.approx(0.5)
    assert float(metrics["accept_prob"]) == pytest.approx(0.5)
    value = goal_distance_value(
        torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    )
    assert value.tolist() == pytest.approx([-5.0, -1e-3])  # s = g: the clamp at 1e-6


def test_z_inference_by_hand():
    # HILP: reward = phi w exactly for w = (1, 2): least squares finds it; on the sphere of radius sqrt(2)
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    z = regress_latent(features, torch.tensor([1.0, 2.0, 3.0]))
    assert z.tolist() == pytest.approx(
        [math.sqrt(2) / math.sqrt(5), 2 * math.sqrt(2) / math.sqrt(5)], rel=1e-5
    )
    # FB: mean_i r_i B_i = (2 (1, 0) + 1 (0, 2)) / 2 = (1, 1), already of norm sqrt(2)
    z = reward_weighted_latent(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([2.0, 1.0]))
    assert z.tolist() == pytest.approx([1.0, 1.0])
    assert on_sphere(torch.randn(5, 50)).norm(dim=-1).tolist() == pytest.approx([math.sqrt(50)] * 5, rel=1e-5)


# -- the agents in process -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """1000 transitions of uniform random actions in 2 jaco worlds (two 250-step episodes each)."""
    from envs import make_env
    from urlb.run.collect import RandomPolicy, collect_dataset

    env = make_env("jaco", 2, backend="cpu", device="cpu", seed=0)
    policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("datasets") / "jaco_random"
    return collect_dataset(env, policy, 1000, out, {"domain": "jaco", "agent": "random"})


def test_future_goals_lie_ahead_in_the_episode(dataset):
    sampler = DatasetSampler.load(dataset)
    torch.manual_seed(0)
    batch = sampler.sample_with_goals(64, future=0.0, random_goal=0.0)  # k = 1: the next state
    last = batch["terminated"] | batch["truncated"]
    expected = torch.where(last[:, None], batch["observation"], batch["next_observation"])
    assert torch.equal(batch["goal"], expected)
    far = sampler.sample_with_goals(256, future=0.99, random_goal=0.0)
    observations = sampler.fields["observation"]
    rows = [int((observations == goal).all(-1).nonzero()[0]) for goal in far["goal"]]
    assert len(set(rows)) > 10
    with pytest.raises(ValueError, match="future=1"):
        sampler.sample_with_goals(4, future=1.0, random_goal=0.0)


@pytest.mark.parametrize("cls", [FBAgent, HILPAgent])
def test_agents_update_infer_and_reach_goals(cls, dataset):
    sampler = DatasetSampler.load(dataset)
    torch.manual_seed(0)
    obs_dim = sampler.fields["observation"].shape[1]
    sizes = {"backward_hidden_dim": 16} if cls is FBAgent else {"phi_hidden_dim": 16}
    agent = cls(obs_dim, 9, z_dim=8, hidden_dim=16, feature_dim=16, batch_size=32, **sizes)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    for step in range(3):
        metrics = agent.update(sampler, step)
    assert all(torch.isfinite(v) for v in metrics.values())
    changed = [k for k, v in agent.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("actor.") for k in changed) and any(
        k.startswith("forward_target.") for k in changed
    )
    fields = sampler.fields
    z = agent.infer_latent(
        fields["observation"][:100], fields["next_observation"][:100], fields["task_reward"][:100, 0]
    )
    assert z.shape == (8,) and float(z.norm()) == pytest.approx(math.sqrt(8), rel=1e-5)
    drawn = agent.init_state(2)
    done = TensorDict({"done": torch.tensor([True, False])}, batch_size=[2])
    redrawn = agent.observe(drawn.clone(), done)  # a fresh z where the episode ended
    assert not torch.equal(redrawn["z"][0], drawn["z"][0]) and torch.equal(redrawn["z"][1], drawn["z"][1])
    agent.fix_latent(z)
    state = agent.init_state(3)
    assert torch.equal(state["z"], z.expand(3, -1))
    ended = TensorDict({"done": torch.ones(3, dtype=torch.bool)}, batch_size=[3])
    assert torch.equal(agent.observe(state.clone(), ended)["z"], state["z"])  # a fixed z stays
    goals = agent.goal_latent(fields["observation"][:3], fields["observation"][10:13])
    assert (
        goals.shape == (3, 8) and agent.act(fields["observation"][:3], state, explore=False).abs().max() <= 1
    )
    with pytest.raises(ValueError, match="finetunes its own snapshot"):
        agent.init_from(OfflineTD3Agent(obs_dim, 9, task="jaco_reach_top_left", hidden_dim=16))
    with pytest.raises(ValueError, match=r"frames \(C, H, W\)"):
        cls((9, 84), 9)  # frames are welcome (tests/test_zero_shot_pixels.py), half a shape is not


# -- through the entry points ---------------------------------------------------------------------------
def pretrain(agent: str, dataset: Path, tmp_path: Path, *extra: str, folder: str = "jaco") -> Path:
    offline = ["offline.updates=10", "offline.snapshot_updates=[10]", "offline.eval_every_updates=10"]
    snapshots = tmp_path / "snapshots"
    entry(
        "pretrain.py",
        f"agent={agent}",
        "env=jaco",
        f"dataset={dataset}",
        "protocol.eval_episodes=1",
        "threads=1",
        *offline,
        *TINY[agent],
        *extra,
        f"snapshot_root={snapshots}",
        f"run_dir={tmp_path / 'pre' / agent}",
    )
    return snapshot_file(snapshots, agent, folder, 10)


def zero_shot_entry(*overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python zero_shot.py <overrides>`` on the CPU (it has no presets)."""
    command = [
        sys.executable,
        str(ROOT / "zero_shot.py"),
        "backend=cpu",
        "device=cpu",
        "threads=1",
        *overrides,
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"zero_shot.py failed:\n{result.stdout}\n{result.stderr}")
    return result


def zero_shot(snapshot: Path, run_dir: Path, *extra: str) -> list[dict]:
    zero_shot_entry(f"snapshot={snapshot}", "eval_episodes=1", f"run_dir={run_dir}", *extra)
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def test_fb_pretrains_then_evaluates_zero_shot_on_every_task(tmp_path, dataset):
    snapshot = pretrain("fb", dataset, tmp_path)
    records = zero_shot(snapshot, tmp_path / "zs", "inference_samples=300", "goals=1")
    assert {r["task"] for r in records} == JACO_TASKS
    for record in records:
        assert (
            record["finetune_frames"] == 0
            and record["mode"] == "zero-shot"
            and record["phase"] == "zero_shot"
        )
        assert record["inference_samples"] == 300 and record["dataset"] == "jaco_random"
        assert record["dataset_agent"] == "random" and record["snapshot_frames"] == 10
        assert record["pretrain_frames"] == 1000 and math.isfinite(record["return"])
    goals = json.loads((tmp_path / "zs" / "goals.json").read_text())["goals"]
    assert len(goals) == 1 and all(g["closest_distance"] <= g["start_distance"] for g in goals)
    defaults = OmegaConf.load(ROOT / "configs" / "zero_shot.yaml")
    for bad, error in (
        ({"snapshot": str(snapshot), "eval_episodes": 0}, "eval_episodes=0"),
        ({"snapshot": "x.pt"}, "not a file"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=error):
            zero_shot_from_config(OmegaConf.merge(defaults, bad))
    with pytest.raises(FileExistsError, match="choose another run_dir"):  # records are never appended to
        overrides = {
            "snapshot": str(snapshot),
            "run_dir": str(tmp_path / "zs"),
            "threads": 1,
            "device": "cpu",
        }
        zero_shot_from_config(OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "zero_shot.yaml"), overrides))


def test_hilp_on_rendered_frames_pretrains_then_evaluates_zero_shot(tmp_path, dataset):
    """Pixel-based ExORL through the entry points: render the state dataset, pretrain on its
    frames (obs=pixels_exorl, the dataset's size), infer z from frame stacks and evaluate in the
    pixel env; goals are frame stacks, distances are measured between states."""
    from urlb.run.render_dataset import render_dataset

    pixels = render_dataset(dataset, tmp_path / "jaco_random_pixels", size=32, worlds=64)
    small = ["obs=pixels_exorl", "agent.hidden_dim=32", "agent.batch_size=16"]
    refused = entry("pretrain.py", "agent=hilp", "env=jaco", f"dataset={pixels}", *small, check=False)
    assert refused.returncode != 0 and "pass obs.size=32" in refused.stderr
    snapshot = pretrain("hilp", pixels, tmp_path, *small, "obs.size=32", folder="jaco_pixels")
    records = zero_shot(snapshot, tmp_path / "zs", "inference_samples=300", "goals=1")
    assert {r["task"] for r in records} == JACO_TASKS
    assert all(r["obs"] == "pixels" and r["dataset"] == "jaco_random_pixels" for r in records)
    assert all(math.isfinite(r["return"]) and r["inference_samples"] == 300 for r in records)
    (goal,) = json.loads((tmp_path / "zs" / "goals.json").read_text())["goals"]
    assert goal["closest_distance"] <= goal["start_distance"]
    # Finetuning from the zero-shot policy on frames: the online pixel env, z from frame stacks.
    fine = tmp_path / "fine"
    result = entry(
        "finetune.py",
        "agent=hilp",
        "task=jaco_reach_top_left",
        f"snapshot={snapshot}",
        *small,
        "obs.size=32",
        *TINY["hilp"],
        "threads=1",
        "inference_samples=300",
        "protocol.finetune_frames=200",
        "protocol.seed_frames=100",
        "protocol.eval_episodes=1",
        f"run_dir={fine}",
    )
    assert "finetuning from the zero-shot policy" in result.stdout
    (record,) = [json.loads(line) for line in (fine / "eval.jsonl").read_text().splitlines()]
    assert record["obs"] == "pixels" and record["mode"] == "zero-shot+finetune"
    assert record["finetune_frames"] == 200 and math.isfinite(record["return"])
    # The records' rows in the report: their own methods, marked as pixels.
    report = markdown(build_report([tmp_path / "zs", fine], reps=100, improvement_reps=20))
    assert "hilp [pixels] (zero-shot; jaco_random_pixels)" in report
    assert "hilp [pixels] (zero-shot+finetune; jaco_random_pixels)" in report


def test_offline_td3_and_the_report_rows(tmp_path, dataset):
    """TD3 on one task's relabelled reward, evaluated on that task; the report then shows it
    and a zero-shot method as their own labelled rows beside a finetuned one."""
    with pytest.raises(ValueError, match="agent.task=<task>"):
        OfflineTD3Agent(55, 9)
    snapshot = pretrain("td3", dataset, tmp_path, "agent.task=jaco_reach_top_left")
    (record,) = zero_shot(snapshot, tmp_path / "zs_td3")
    assert record["task"] == "jaco_reach_top_left" and record["mode"] == "offline"
    assert record["finetune_frames"] == 0 and record["inference_samples"] == 0
    # a zero-shot method on that task, and a finetuned one, written as their loops write them
    common = {"agent": "fb", "domain": "jaco", "task": "jaco_reach_top_left", "seed": 1, "frames": 0}
    common |= {"return": 50.0, "normalised_score": 0.25, "snapshot_frames": 10, "pretrain_frames": 1000}
    zero = common | {
        "finetune_frames": 0,
        "mode": "zero-shot",
        "dataset": "jaco_random",
        "phase": "zero_shot",
    }
    fine = common | {"agent": "ddpg", "frames": 500, "finetune_frames": 500, "phase": "finetune"}
    fine |= {"snapshot_frames": 1000, "pretrain_frames": 2000}
    for name, rows in (("fb", [zero]), ("ddpg", [fine])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_report(
        [tmp_path / "zs_td3", tmp_path / "fb", tmp_path / "ddpg"], reps=200, improvement_reps=50
    )
    assert set(report.methods) == {"td3 (offline; jaco_random)", "fb (zero-shot; jaco_random)", "ddpg"}
    assert "fb (zero-shot; jaco_random)" in markdown(report)


def test_a_zero_shot_row_refuses_mixed_budgets(tmp_path):
    """One row per agent and dataset: two pretraining budgets in it are refused, unless grouped."""
    base = {"agent": "hilp", "domain": "walker", "task": "walker_run", "frames": 0, "return": 20.0}
    base |= {"normalised_score": 0.02, "pretrain_frames": 40_000, "finetune_frames": 0, "phase": "zero_shot"}
    base |= {"mode": "zero-shot", "dataset": "walker_rnd_40000"}
    for seed, updates in ((1, 3000), (2, 6000)):
        (tmp_path / str(seed)).mkdir()
        record = base | {"seed": seed, "snapshot_frames": updates}
        (tmp_path / str(seed) / "eval.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ReportError, match="hilp \\(zero-shot; walker_rnd_40000\\) mixes snapshot_frames"):
        build_report([tmp_path], reps=100, improvement_reps=20)
    grouped = build_report([tmp_path], group_by=["snapshot_frames"], reps=100, improvement_reps=20)
    assert len(grouped.methods) == 2


# -- finetuning from the zero-shot policy (ours: neither reference finetunes FB or HILP) ---------------
def test_finetune_td_loss_and_reward_scale_by_hand():
    z = torch.tensor([1.0, 2.0])
    f1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # Q1 = F_1^T z = (1, 2)
    f2 = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # Q2 = (2, 3)
    next_f1 = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # F'_1^T z = (3, 0)
    next_f2 = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # F'_2^T z = (2, 2): min (2, 0)
    reward, discount = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 0.9])
    # target (1 + .5 * 2, -1 + .9 * 0) = (2, -1); head 1 errors (-1, 3) -> 5; head 2 (0, 4) -> 8
    loss, metrics = latent_q_loss(f1, f2, next_f1, next_f2, z, reward, discount)
    assert float(loss) == pytest.approx(13.0)
    assert float(metrics["critic_q1"]) == pytest.approx(1.5)
    assert float(metrics["critic_target_q"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="latent_q_loss"):
        latent_q_loss(f1, f2, next_f1, next_f2, z, reward[:1], discount[:1])
    # r ~ c p: c = <p, r> / <p, p>; r = 2 p exactly -> 2; r = (1, 0) on p = (1, 2) -> 1 / 5
    assert float(reward_scale(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))) == pytest.approx(2.0)
    assert float(reward_scale(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]))) == pytest.approx(0.2)


@pytest.mark.parametrize("cls", [FBAgent, HILPAgent])
def test_finetuning_transfers_everything_and_fixes_the_zero_shot_z(cls, dataset):
    """init_from copies every network; the run fixes the z zero_shot.py infers from the same rows;
    finetune updates move the actor and F (and F's target), never B / phi; a checkpoint round trip."""
    from agents.td3 import DiscountedTransitions
    from urlb.run.zero_shot import inference_rows, task_latents, task_transitions

    sampler = DatasetSampler.load(dataset)
    torch.manual_seed(0)
    obs_dim = sampler.fields["observation"].shape[1]
    sizes = {"backward_hidden_dim": 16} if cls is FBAgent else {"phi_hidden_dim": 16}

    def make():
        return cls(obs_dim, 9, z_dim=8, hidden_dim=16, feature_dim=16, batch_size=32, **sizes)

    pretrained = make()
    for step in range(3):
        pretrained.update(sampler, step)
    agent = make()
    agent.init_from(pretrained)
    assert all(torch.equal(v, pretrained.state_dict()[k]) for k, v in agent.state_dict().items())
    assert agent.seed_actions == "policy" and "finetune" in agent.all_optimisers()
    task = "jaco_reach_top_left"
    rows = inference_rows(sampler, 300, seed=1)
    expected = task_latents(pretrained, sampler, [task], rows)[task]
    z = agent.fix_task(*task_transitions(sampler, task, rows))
    # equal up to float rounding: HILP's least squares is not bitwise reproducible across calls
    assert torch.allclose(z, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(agent.init_state(2)["z"], z.expand(2, -1))
    assert float(agent.reward_scale) > 0
    frozen = "backward_" if cls is FBAgent else "phi"
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    agent.set_task(0)
    replay = DiscountedTransitions(sampler, agent.discount)
    for step in range(3):
        metrics = agent.update(replay, step)
    assert {"critic_loss", "actor_loss", "extrinsic_reward"} <= set(metrics)
    assert all(torch.isfinite(v) for v in metrics.values())
    changed = {k.split(".")[0] for k, v in agent.state_dict().items() if not torch.equal(v, before[k])}
    assert {"actor", "forward_map", "forward_target"} <= changed
    assert not any(name.startswith(frozen) or name == "running_mean" for name in changed), changed
    resumed = make()
    resumed.init_from(pretrained)
    resumed.fix_task(*task_transitions(sampler, task, rows))
    resumed.load_training_state(agent.training_state())
    assert all(torch.equal(v, agent.state_dict()[k]) for k, v in resumed.state_dict().items())
    with pytest.raises(ValueError, match="z is fixed"):
        make().finetune_update(replay)


def test_fb_finetunes_from_its_zero_shot_policy_through_the_entry_points(tmp_path, dataset):
    """pretrain.py agent=fb -> finetune.py agent=fb from its snapshot: records of a finetuning run
    that name the inference (mode, samples, dataset), the agent's discount in the replay, and the
    report's row beside the zero-shot one."""
    snapshot = pretrain("fb", dataset, tmp_path)
    run_dir = tmp_path / "fine"
    common = ["agent=fb", "task=jaco_reach_top_left", f"snapshot={snapshot}", "threads=1", *TINY["fb"]]
    result = entry(
        "finetune.py",
        *common,
        "inference_samples=300",
        "protocol.finetune_frames=500",
        "protocol.eval_episodes=1",
        f"run_dir={run_dir}",
    )
    assert "finetuning from the zero-shot policy" in result.stdout
    (record,) = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert record["finetune_frames"] == 500 and record["frames"] == 500 and record["phase"] == "finetune"
    assert record["mode"] == "zero-shot+finetune" and record["inference_samples"] == 300
    assert record["dataset"] == "jaco_random" and record["dataset_agent"] == "random"
    assert record["snapshot_frames"] == 10 and record["pretrain_frames"] == 1000
    assert OmegaConf.load(run_dir / "config.yaml").replay.discount == 0.99  # FB's own gamma
    # the z fixed is the one zero_shot.py infers for this seed and these rows
    from urlb.data.checkpoint import load_snapshot
    from urlb.run.zero_shot import inference_rows, task_latents

    state = load_snapshot(run_dir / "checkpoint.pt")["agent"]["modules"]
    payload = load_snapshot(snapshot)
    agent = FBAgent(55, 9, z_dim=8, hidden_dim=32, feature_dim=16, backward_hidden_dim=16, batch_size=32)
    agent.load_state_dict(payload["agent"])
    sampler = DatasetSampler.load(dataset)
    z = task_latents(agent, sampler, ["jaco_reach_top_left"], inference_rows(sampler, 300, 1))
    assert torch.allclose(state["fixed_latent"], z["jaco_reach_top_left"]) and bool(state["latent_is_fixed"])
    # report: its own row beside the zero-shot one of the same snapshot
    zero_shot(snapshot, tmp_path / "zs", "inference_samples=300")
    report = build_report([run_dir, tmp_path / "zs"], reps=100, improvement_reps=20)
    assert {"fb (zero-shot+finetune; jaco_random)", "fb (zero-shot; jaco_random)"} <= set(report.methods)


def test_finetuning_a_zero_shot_agent_refuses_what_it_cannot_use(tmp_path, dataset):
    """One line naming the fix: no snapshot, no dataset, a dataset changed since pretraining; and
    TD3, the offline baseline, is evaluated, not finetuned."""
    from test_plan import composed

    from urlb.run.finetune import finetune, fix_task_latent
    from urlb.run.plan import build_plan

    cfg = composed("finetune", "agent=fb", "task=jaco_reach_top_left", "snapshot=null", "preset=debug")
    with pytest.raises(ValueError, match="needs a pretrained snapshot: pass snapshot="):
        finetune(build_plan(cfg, "finetune", "fb")[0])
    # the replay's discount is the pretrained F's (HILP's 0.98), not the preset's 0.99
    cfg = composed("finetune", "agent=hilp", "task=walker_run", "snapshot=1M", "preset=debug")
    assert build_plan(cfg, "finetune", "hilp")[0].replay.discount == 0.98
    agent = FBAgent(55, 9, z_dim=8, hidden_dim=16, feature_dim=16, backward_hidden_dim=16)
    env = type("Env", (), {"device": "cpu", "obs_dim": 55})()

    def fix(snapshot: dict, dataset=None):
        plan = {"dataset": dataset, "inference_samples": 10, "seed": 1, "agent_name": "fb"}
        plan = OmegaConf.create(plan | {"obs": {"type": "states"}})
        return fix_task_latent(plan, agent, snapshot, Path("s.pt"), "jaco_reach_top_left", env)

    with pytest.raises(ValueError, match="names no dataset; pass dataset="):
        fix({"pretrain_frames": 1000})
    with pytest.raises(FileNotFoundError, match="pass dataset=<its path>"):
        fix({"dataset": str(tmp_path / "moved")})
    with pytest.raises(ValueError, match="it changed; pass dataset="):
        fix({"dataset": str(dataset), "pretrain_frames": 2000})
    assert fix({"dataset": str(dataset), "pretrain_frames": 1000})["inference_samples"] == 10
    assert fix({"dataset": "elsewhere"}, dataset=str(dataset))["dataset"] == "jaco_random"  # dataset= wins
    with pytest.raises(ValueError, match="offline baseline: evaluate it with python zero_shot.py"):
        OfflineTD3Agent(55, 9, task="jaco_reach_top_left", hidden_dim=16).init_from(agent)
