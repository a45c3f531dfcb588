"""Zero-shot agents (issue 20): FB's and HILP's losses and z inference against values worked out
by hand; HILP's goals; pretrain -> zero_shot.py through the real entry points on a tiny dataset
made here; the records and the report's zero-shot rows."""

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
    on_sphere,
    orthonormality_loss,
    regress_latent,
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
    with pytest.raises(ValueError, match="zero_shot.py"):
        agent.init_from(agent)
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
    states = entry("pretrain.py", "agent=hilp", "env=jaco", f"dataset={dataset}", *small, check=False)
    assert states.returncode != 0 and "holds no frames; render them" in states.stderr
    snapshot = pretrain("hilp", pixels, tmp_path, *small, "obs.size=32", folder="jaco_pixels")
    records = zero_shot(snapshot, tmp_path / "zs", "inference_samples=300", "goals=1")
    assert {r["task"] for r in records} == JACO_TASKS
    assert all(r["obs"] == "pixels" and r["dataset"] == "jaco_random_pixels" for r in records)
    assert all(math.isfinite(r["return"]) and r["inference_samples"] == 300 for r in records)
    (goal,) = json.loads((tmp_path / "zs" / "goals.json").read_text())["goals"]
    assert goal["closest_distance"] <= goal["start_distance"]
    # The records' rows in the report: their own method, marked as pixels.
    report = markdown(build_report([tmp_path / "zs"]))
    assert "hilp [pixels] (zero-shot; jaco_random_pixels)" in report


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
