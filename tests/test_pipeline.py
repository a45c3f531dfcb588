"""pretrain -> finetune through the real entry points, in the debug preset; kill and
resume; determinism; configuration errors."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from urlb.data.checkpoint import checkpoint_path, load_snapshot

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")


def entry(
    script: str, *overrides: str, check: bool = True, multirun: bool = False
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    flags = ["--multirun"] if multirun else []
    command = [
        sys.executable,
        str(ROOT / script),
        *flags,
        "preset=debug",
        "backend=cpu",
        "device=cpu",
        *overrides,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")
    return result


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def snapshot_file(root: Path, agent: str, domain: str, frames: int, seed: int = 1) -> Path:
    """The one snapshot of ``frames`` of this agent, domain and seed: under its configuration's
    folder, ``<root>/<agent>/<domain>/seed_<seed>/<config>/snapshot_<frames>.pt``."""
    (path,) = (root / agent / domain / f"seed_{seed}").glob(f"*/snapshot_{frames}.pt")
    return path


AGENTS = ["ddpg", "sac", "diayn", "diayn_paper", "metra", "metra_discrete"]
BASELINES = ["icm", "disagreement", "rnd", "icm_apt", "apt", "proto", "smm", "aps", "cic"]
WORLD_MODELS = ["dreamer", "plan2explore", "dreamer_rnd", "dreamer_apt"]
OFFLINE = ["pdt", "supe", "fb", "hilp", "td3"]  # dataset agents: pretrain.py ... dataset=<path>
ZERO_SHOT = ["fb", "hilp", "td3"]  # evaluated by zero_shot.py (tests/test_zero_shot.py)


def test_every_agent_pretrains_then_finetunes(tmp_path):
    """Plain DDPG and SAC, DIAYN, the URLB baselines and Dreamer with Plan2Explore, through
    the real entry points in one Hydra multirun each (METRA has its own test below). On
    jaco, whose 250-step episodes keep the evaluations short."""
    agents = ["ddpg", "sac", "diayn", *BASELINES, "plan2explore"]
    snapshots = tmp_path / "snapshots"
    common = [f"agent={','.join(agents)}", f"snapshot_root={snapshots}", "protocol.num_envs=4"]
    common += ["protocol.finetune_frames=500", "protocol.log_every_frames=100"]
    entry(
        "pretrain.py",
        "env=jaco",
        "protocol.pretrain_frames=500",
        "protocol.snapshot_frames=[252,500]",
        f"run_dir={tmp_path}/pre/${{hydra:runtime.choices.agent}}",
        f"hydra.sweep.dir={tmp_path}/multirun_pre",
        *common,
        multirun=True,
    )
    entry(
        "finetune.py",
        "task=jaco_reach_top_left",
        "snapshot=252",
        f"run_dir={tmp_path}/fine/${{hydra:runtime.choices.agent}}",
        f"hydra.sweep.dir={tmp_path}/multirun_fine",
        *common,
        multirun=True,
    )
    for agent in agents:
        pre, fine = tmp_path / "pre" / agent, tmp_path / "fine" / agent
        for frames in (252, 500):
            assert snapshot_file(snapshots, agent, "jaco", frames).exists(), agent
        # logs: TensorBoard events, CSVs, the resolved config and the git revision
        assert list((pre / "tb").glob("events.out.tfevents.*")), agent
        assert (pre / "train.csv").exists() and (pre / "config.yaml").exists(), agent
        assert "git_revision" in json.loads((pre / "run.json").read_text())
        zero_shot = records(pre)
        corners = ("top_left", "top_right", "bottom_left", "bottom_right")
        assert {r["task"] for r in zero_shot} == {f"jaco_reach_{c}" for c in corners}
        # ProtoRL at the debug batch (32) is left out of the liveness check: its 512 prototypes
        # each enqueue one of the 32 rows, so every row sits in the queue ~16 times and its
        # 3rd-nearest neighbour is itself at distance exactly 0, as in URLB's code at this size
        # (URLB's batch is 1024). tests/test_baselines.py and tests/reference check its reward.
        if agent in BASELINES and agent != "proto":  # a live intrinsic reward: finite, not constant
            with open(pre / "train.csv") as f:
                rows = [r for r in csv.DictReader(f) if r.get("intrinsic_reward")]
            assert rows and all(math.isfinite(float(r["intrinsic_reward"])) for r in rows), agent
            assert max(float(r["intrinsic_reward_std"]) for r in rows) > 0, (
                f"{agent}: constant intrinsic reward"
            )
        if agent == "plan2explore":  # disagreement rewards the imagined transitions
            with open(pre / "train.csv") as f:
                rows = [r for r in csv.DictReader(f) if r.get("imagined_reward_std")]
            assert rows and max(float(r["imagined_reward_std"]) for r in rows) > 0
            with open(fine / "train.csv") as f:
                assert any(r.get("reward_mse") for r in csv.DictReader(f))  # the reward head learns
        out = records(fine)
        assert [r["frames"] for r in out] == [500], agent
        record = out[-1]
        assert record["task"] == "jaco_reach_top_left" and record["snapshot_frames"] == 252, agent
        assert record["pretrain_frames"] == 500 and record["finetune_frames"] == 500, agent
        assert record["normalised_score"] == pytest.approx(record["return"] / 191.0)
    # URLB's finetuning skills: SMM draws a random skill per episode (finetune_skill=random; the
    # best-of-skills search is its option) and CIC pursues the fixed mean skill: neither selects.
    assert not (tmp_path / "fine" / "smm" / "skill_selection.json").exists()
    assert not (tmp_path / "fine" / "cic" / "skill_selection.json").exists()
    state = load_snapshot(tmp_path / "fine" / "cic" / "checkpoint.pt")["agent_state"]
    assert torch.equal(state["skill"], torch.full((4, 64), 0.5))


def test_metra_pretrain_measures_skills_and_finetune_fixes_the_best_skill(tmp_path):
    """The command users type first, in the debug preset: coverage and trajectory pictures
    at each evaluation, 1-step replay; finetuning picks the best-scoring candidate skill."""
    import yaml

    snapshots, pre, fine = tmp_path / "snapshots", tmp_path / "pre", tmp_path / "fine"
    result = entry(
        "pretrain.py", "agent=metra", "env=quadruped", f"snapshot_root={snapshots}", f"run_dir={pre}"
    )
    assert "replay.nstep=1" in result.stdout
    assert yaml.safe_load((pre / "config.yaml").read_text())["replay"]["nstep"] == 1
    coverage = [json.loads(line) for line in (pre / "skills" / "coverage.jsonl").read_text().splitlines()]
    assert [c["frames"] for c in coverage] == [1000, 2000] and all(c["coverage"] >= 1 for c in coverage)
    assert (pre / "skills" / "skills_2000.png").stat().st_size > 1000
    assert "coverage" in (pre / "eval.csv").read_text().splitlines()[0]

    entry(
        "finetune.py",
        "agent=metra",
        "task=quadruped_walk",
        "snapshot=2k",
        f"snapshot_root={snapshots}",
        f"run_dir={fine}",
    )
    selection = json.loads((fine / "skill_selection.json").read_text())
    returns = selection["returns"]
    assert len(returns) == 4 and selection["chosen"] == returns.index(max(returns))
    agent_state = load_snapshot(checkpoint_path(fine))["agent"]["modules"]
    assert bool(agent_state["reward_model.skill_is_fixed"])
    torch.testing.assert_close(agent_state["reward_model.fixed_skill"], torch.tensor(selection["skill"]))
    assert records(fine)[-1]["task"] == "quadruped_walk"
    mismatch = entry(
        "finetune.py",
        "agent=metra",
        "agent.reward_model.observe_pose=false",
        "task=quadruped_walk",
        "snapshot=2k",
        f"snapshot_root={snapshots}",
        f"run_dir={tmp_path / 'mismatch'}",
        check=False,
    )
    assert mismatch.returncode != 0 and "pretrained with observe_pose=True" in mismatch.stderr


def test_pretraining_replay_is_written_as_a_dataset(tmp_path):
    from urlb.data.datasets import read_dataset

    run_dir = tmp_path / "pre"
    entry(
        "pretrain.py",
        "env=jaco",
        "protocol.pretrain_frames=500",
        "protocol.snapshot_frames=[]",
        "save_dataset=true",
        f"snapshot_root={tmp_path / 's'}",
        f"run_dir={run_dir}",
    )
    arrays, meta = read_dataset(run_dir / "dataset")
    assert meta["domain"] == "jaco" and meta["agent"] == "ddpg" and meta["frames"] == 500
    assert arrays["observation"].shape == (500, 55) and arrays["qpos"].shape == (500, 16)
    assert arrays["task_reward"].shape == (500, 4)


def test_missing_snapshot_says_where_it_looked(tmp_path):
    result = entry(
        "finetune.py",
        "task=walker_stand",
        "snapshot=500k",
        f"snapshot_root={tmp_path}",
        f"run_dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode != 0
    assert f"looked for {tmp_path}/ddpg/walker/seed_1/<config>/snapshot_500000.pt" in result.stderr


def test_unknown_agent_and_key_fail_at_start(tmp_path):
    result = entry("pretrain.py", "agent=dreamer9", f"run_dir={tmp_path}", check=False)
    assert result.returncode != 0 and "ddpg" in result.stderr and "sac" in result.stderr
    result = entry("pretrain.py", "agent.hidden_dimm=3", f"run_dir={tmp_path}", check=False)
    assert result.returncode != 0 and "hidden_dimm" in result.stderr


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    """METRA: SAC, per-world skills and the skill evaluator's records all resume exactly."""
    common = ["agent=metra", "env=walker", f"snapshot_root={tmp_path / 's'}"]
    common.append("protocol.checkpoint_every_frames=400")
    whole = tmp_path / "whole"
    entry("pretrain.py", *common, f"run_dir={whole}")

    killed = tmp_path / "killed"
    command = [
        sys.executable,
        str(ROOT / "pretrain.py"),
        "preset=debug",
        "backend=cpu",
        "device=cpu",
        *common,
        f"run_dir={killed}",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        path = checkpoint_path(killed)
        if path.exists() and load_snapshot(path)["clock"] >= 1200:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_snapshot(checkpoint_path(killed))["clock"] < 2000, "the run finished before it was killed"

    entry("pretrain.py", *common, f"run_dir={killed}", "resume=true")
    resumed, reference = records(killed), records(whole)
    assert [(r["frames"], r["task"]) for r in resumed] == [(r["frames"], r["task"]) for r in reference]
    assert [r["return"] for r in resumed] == [r["return"] for r in reference]
    coverage = [(d / "skills" / "coverage.jsonl").read_text() for d in (killed, whole)]
    assert coverage[0] == coverage[1] and len(coverage[0].splitlines()) == 2


def test_every_agent_config_is_listed_here():
    listed = AGENTS + BASELINES + WORLD_MODELS + OFFLINE
    assert sorted(listed) == sorted(p.stem for p in (ROOT / "configs" / "agent").glob("*.yaml"))


# Env sizes do not change an agent's config: the baselines are composed on walker alone.
@pytest.mark.parametrize(
    ("agent", "env"),
    [(a, e) for a in AGENTS for e in ("walker", "quadruped", "jaco")]
    + [(a, "walker") for a in BASELINES + WORLD_MODELS + OFFLINE],
)
@pytest.mark.parametrize("preset", ["urlb", "small", "debug"])
def test_every_config_composes_and_instantiates(agent, env, preset):
    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    dims = {"walker": (24, 6), "quadruped": (78, 12), "jaco": (55, 9)}[env]
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        task_option = ["agent.task=walker_run"] if agent == "td3" else []  # TD3 trains on one task's reward
        cfg = compose(
            "pretrain", overrides=[f"agent={agent}", f"env={env}", f"preset={preset}", *task_option]
        )
        if preset != "urlb" or env == "walker":  # 1024-wide inits are slow; the sizes do not vary by env
            built = instantiate(cfg.agent, obs_dim=dims[0], action_dim=dims[1])
            assert built.actor is not None
        assert cfg.protocol.pretrain_frames > 0
        task = "jaco_reach_top_left" if env == "jaco" else f"{env}_stand"
        fine = compose(
            "finetune", overrides=[f"agent={agent}", f"task={task}", "snapshot=2M", f"preset={preset}"]
        )
        assert fine.protocol.finetune_frames > 0
    if preset == "urlb" and agent in WORLD_MODELS:  # Rajeswar et al.: 4x400 heads, 50 x 50 batches
        assert cfg.agent.hidden_dim == 400 and cfg.agent.batch_size == 2500 and cfg.agent.batch_length == 50
        assert cfg.protocol.finetune_frames == 100_000
    elif preset == "urlb" and agent == "pdt":  # PDT's reference: 512-wide tokens, 256 windows
        assert cfg.agent.hidden_dim == 512 and cfg.agent.batch_size == 256 and cfg.agent.context_length == 20
        assert cfg.offline.updates == 50_000 and cfg.protocol.finetune_frames == 100_000
    elif preset == "urlb" and agent == "supe":  # SUPE's reference: 256 wide, 256 segments of 4 steps
        assert cfg.agent.hidden_dim == 256 and cfg.agent.batch_size == 256 and cfg.agent.horizon == 4
        assert cfg.agent.dataset is None and fine.agent.dataset is None
    elif (
        preset == "urlb" and agent in ZERO_SHOT
    ):  # FB's, HILP's and ExORL's references: 1024 wide, batch 1024
        assert cfg.agent.hidden_dim == 1024 and cfg.agent.batch_size == 1024
        assert cfg.offline.updates == (1_000_000 if agent == "hilp" else 500_000)  # FB: 1M steps, every 2nd
    elif preset == "urlb":  # the published protocol, with each agent's published sizes
        assert cfg.protocol.finetune_frames == 100_000 and cfg.agent.hidden_dim == 1024
        assert cfg.protocol.snapshot_frames == [100_000, 500_000, 1_000_000, 2_000_000]
        urlb_ddpg = agent in ("ddpg", "diayn", *BASELINES)
        published_batch = 1024 if urlb_ddpg else 256  # URLB's DDPG agents: 1024; SAC papers: 256
        assert cfg.agent.batch_size == published_batch


@pytest.fixture(scope="module")
def random_jaco_dataset(tmp_path_factory) -> Path:
    """500 transitions of uniform random actions in 2 jaco worlds (two 250-step episodes each),
    shared by the offline agents' tests (they only read it)."""
    from envs import make_env
    from urlb.run.collect import RandomPolicy, collect_dataset

    env = make_env("jaco", 2, backend="cpu", device="cpu", seed=0)
    policy = RandomPolicy(env.action_dim, torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("datasets") / "jaco_random"
    return collect_dataset(env, policy, 500, out, {"domain": "jaco", "agent": "random"})


def test_pdt_pretrains_offline_then_finetunes_online(tmp_path, random_jaco_dataset):
    """A random jaco dataset -> offline pretraining (snapshots and zero-shot records in
    updates) -> online finetuning with the shared runner, whose return predictor learns.
    Contexts of 4 steps and one layer keep it to CPU seconds."""
    dataset = random_jaco_dataset
    small = ["agent=pdt", "agent.context_length=4", "agent.eval_context_length=2", "agent.num_layers=1"]
    snapshots, pre, fine = tmp_path / "snapshots", tmp_path / "pre", tmp_path / "fine"
    offline = ["offline.updates=20", "offline.snapshot_updates=[10,20]", "offline.eval_every_updates=20"]
    result = entry(
        "pretrain.py",
        *small,
        "env=jaco",
        f"dataset={dataset}",
        *offline,
        f"snapshot_root={snapshots}",
        f"run_dir={pre}",
    )
    assert "offline from" in result.stdout
    for updates in (10, 20):
        snapshot = load_snapshot(snapshot_file(snapshots, "pdt", "jaco", updates))
        assert snapshot["updates"] == updates and snapshot["config"]["protocol"]["pretrain_frames"] == 500
    zero_shot = records(pre)
    corners = ("top_left", "top_right", "bottom_left", "bottom_right")
    assert [(r["updates"], r["task"]) for r in zero_shot] == [(20, f"jaco_reach_{c}") for c in corners]
    assert json.loads((pre / "complete.json").read_text())["updates"] == 20

    entry(
        "finetune.py",
        *small,
        "task=jaco_reach_top_left",
        "snapshot=20",
        "agent.return_warmup_updates=20",
        "protocol.finetune_frames=500",
        "protocol.checkpoint_every_frames=500",
        "protocol.log_every_frames=100",
        f"snapshot_root={snapshots}",
        f"run_dir={fine}",
    )
    record = records(fine)[-1]
    assert record["frames"] == 500 and record["snapshot_frames"] == 20 and record["pretrain_frames"] == 500
    agent = load_snapshot(checkpoint_path(fine))["agent"]["modules"]
    assert int(agent["finetune_updates"]) == 30  # 51 steps of 2 worlds from frame 400 on, 0.3 per frame
    pretrained = snapshot["agent"]
    assert not torch.equal(agent["return_head.mean.weight"], pretrained["return_head.mean.weight"])
    assert not torch.equal(
        agent["transformer.blocks.0.qkv.weight"], pretrained["transformer.blocks.0.qkv.weight"]
    )
    with open(fine / "train.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("return_nll")]
    assert rows and all(math.isfinite(float(r["return_nll"])) for r in rows)


def test_supe_pretrains_offline_then_finetunes_online(tmp_path, random_jaco_dataset):
    """A random jaco dataset -> the skill VAE pretrained offline (snapshots and zero-shot
    records in updates) -> the high-level policy finetuned online with the shared runner on
    replay segments and prior ones read again from the dataset path the snapshot's config
    keeps; the skills stay frozen. 50 updates of two critic minibatches keep it to CPU seconds."""
    dataset = random_jaco_dataset
    snapshots, pre, fine = tmp_path / "snapshots", tmp_path / "pre", tmp_path / "fine"
    offline = ["offline.updates=20", "offline.snapshot_updates=[20]", "offline.eval_every_updates=20"]
    result = entry(
        "pretrain.py",
        "agent=supe",
        "env=jaco",
        f"dataset={dataset}",
        *offline,
        f"snapshot_root={snapshots}",
        f"run_dir={pre}",
    )
    assert "offline from" in result.stdout
    snapshot = load_snapshot(snapshot_file(snapshots, "supe", "jaco", 20))
    assert snapshot["updates"] == 20 and snapshot["config"]["agent"]["dataset"] == str(dataset)
    assert [r["updates"] for r in records(pre)] == [20] * 4  # zero-shot, skills from the state prior

    result = entry(
        "finetune.py",
        "agent=supe",
        "agent.utd_ratio=2",
        "agent.updates_per_frame=0.25",
        "task=jaco_reach_top_left",
        "snapshot=20",
        "protocol.finetune_frames=500",
        "protocol.checkpoint_every_frames=500",
        "protocol.log_every_frames=100",
        f"snapshot_root={snapshots}",
        f"run_dir={fine}",
    )
    assert "replay.nstep=7" in result.stdout  # windows of 2H - 1 steps hold one whole segment
    record = records(fine)[-1]
    assert record["frames"] == 500 and record["snapshot_frames"] == 20 and record["pretrain_frames"] == 500
    checkpoint = load_snapshot(checkpoint_path(fine))
    modules, pretrained = checkpoint["agent"]["modules"], snapshot["agent"]
    # from frame 400 on, 0.25 updates per frame: 51 steps of 2 worlds make 25 updates
    assert int(checkpoint["agent"]["optimisers"]["high.actor"]["state"][0]["step"]) == 25
    for name in ("skills.policy.net.0.weight", "skills.head.weight", "skills.prior.net.0.weight"):
        assert torch.equal(modules[name], pretrained[name]), name
    with open(fine / "train.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("prior_reward")]
    assert rows and all(math.isfinite(float(r[k])) for r in rows for k in ("critic_loss", "bonus"))


def test_snapshot_round_trip_and_transfer(tmp_path):
    snapshots = tmp_path / "snapshots"
    entry(
        "pretrain.py",
        "agent=ddpg",
        "env=quadruped",
        f"snapshot_root={snapshots}",
        f"run_dir={tmp_path / 'p'}",
        "protocol.pretrain_frames=1000",
        "protocol.snapshot_frames=[1000]",
    )
    snapshot = load_snapshot(snapshot_file(snapshots, "ddpg", "quadruped", 1000))
    from agents.ddpg import DDPGAgent

    cfg = snapshot["config"]["agent"]
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    pretrained = DDPGAgent(78, 12, **kwargs)
    pretrained.load_state_dict(snapshot["agent"])
    fresh = DDPGAgent(78, 12, **kwargs)
    fresh.init_from(pretrained)
    for a, b in zip(fresh.actor.parameters(), pretrained.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(fresh.critic.trunk[0].weight, pretrained.critic.trunk[0].weight)
    assert not torch.equal(fresh.critic.q1[0].weight, pretrained.critic.q1[0].weight)  # heads start fresh


def test_a_fresh_run_never_appends_to_an_old_runs_records(tmp_path):
    """Starting over in a folder that holds a run's records is refused, and so is ``resume=true``
    without a checkpoint (a run killed before its first one): nothing to continue from, and
    the records are never thrown away (issue 22); both refusals leave the folder as it was."""
    from omegaconf import OmegaConf

    from urlb.run.folder import RunFolderError, open_run

    (tmp_path / "eval.jsonl").write_text('{"frames": 1000}\n')
    plan = OmegaConf.create({"run_dir": str(tmp_path), "resume": False, "phase": "finetune"})
    with pytest.raises(RunFolderError, match="holds records.*no checkpoint.pt.*delete that folder"):
        with open_run(plan, "finetune"):
            pass
    plan.resume = True
    with pytest.raises(RunFolderError, match="holds records.*resume cannot continue it"):
        with open_run(plan, "finetune"):
            pass
    assert (tmp_path / "eval.jsonl").read_text() == '{"frames": 1000}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == [".lock", "eval.jsonl"]


def test_pixel_agents_pretrain_then_finetune(tmp_path):
    """obs=pixels through the real entry points (one multirun per phase): DDPG through the
    shared DrQ-v2 encoder, and METRA on SAC with its skill evaluator rendering (Dreamer on
    frames: tests/test_world_model.py). jaco: 125-step episodes at action repeat 2; 48x48
    frames (METRA's per-network encoders need 46x46) keep the convolutions to CPU seconds."""
    agents = ["ddpg", "metra"]
    snapshots = tmp_path / "snapshots"
    common = [f"agent={','.join(agents)}", "obs=pixels", "obs.size=48", f"snapshot_root={snapshots}"]
    common += ["protocol.finetune_frames=600", "skill_eval.steps=20"]
    pre = entry(
        "pretrain.py",
        "env=jaco",
        "protocol.pretrain_frames=600",
        "protocol.snapshot_frames=[600]",
        f"run_dir={tmp_path}/pre/${{hydra:runtime.choices.agent}}",
        f"hydra.sweep.dir={tmp_path}/multirun_pre",
        *common,
        multirun=True,
    )
    assert "metra: agent.reward_model.observe_pose=false" in pre.stdout
    entry(
        "finetune.py",
        "task=jaco_reach_top_left",
        "snapshot=600",
        f"run_dir={tmp_path}/fine/${{hydra:runtime.choices.agent}}",
        f"hydra.sweep.dir={tmp_path}/multirun_fine",
        *common,
        multirun=True,
    )
    for agent in agents:
        snapshot = load_snapshot(snapshot_file(snapshots, agent, "jaco_pixels", 600))
        assert snapshot["config"]["obs"]["type"] == "pixels"
        zero_shot = records(tmp_path / "pre" / agent)
        assert zero_shot and all(r["obs"] == "pixels" and r["frames"] == 600 for r in zero_shot), agent
        out = records(tmp_path / "fine" / agent)
        assert [(r["frames"], r["obs"], r["snapshot_frames"]) for r in out] == [(600, "pixels", 600)], agent
        assert math.isfinite(out[0]["return"])
    # URLB finetunes with the pretrained encoder frozen: the finetuned DDPG's is the snapshot's.
    pretrained = load_snapshot(snapshot_file(snapshots, "ddpg", "jaco_pixels", 600))["agent"]
    finetuned = load_snapshot(tmp_path / "fine" / "ddpg" / "checkpoint.pt")["agent"]["modules"]
    encoder = [key for key in pretrained if key.startswith("encoder.")]
    assert encoder and all(torch.equal(pretrained[k], finetuned[k]) for k in encoder)
    assert not torch.equal(pretrained["actor.trunk.0.weight"], finetuned["actor.trunk.0.weight"])
    assert (tmp_path / "pre" / "metra" / "skills" / "coverage.jsonl").exists()
    # METRA's pixel networks each have an encoder of their own (pixel_encoders=per_network).
    metra = load_snapshot(snapshot_file(snapshots, "metra", "jaco_pixels", 600))["agent"]
    own = ("reward_model.phi.0.conv", "actor.trunk.conv", "critic.q1.0.conv", "critic.q2.0.conv")
    assert all(any(key.startswith(prefix) for key in metra) for prefix in own)
    assert not any(key.startswith("encoder.") for key in metra)
    # A pixel snapshot finetuned on states is refused by name.
    from hydra.core.hydra_config import HydraConfig

    from urlb.run.finetune import load_pretrained
    from urlb.run.plan import build_plan
    from urlb.run.resolvers import register_resolvers

    register_resolvers()
    path = snapshot_file(snapshots, "ddpg", "jaco_pixels", 600)
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        overrides = ["agent=ddpg", "task=jaco_reach_top_left", f"snapshot={path}"]
        cfg = compose("finetune", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    with pytest.raises(ValueError, match="finetune with obs=pixels"):
        load_pretrained(build_plan(cfg, "finetune", "ddpg")[0], env=None)
