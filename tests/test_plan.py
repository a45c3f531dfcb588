"""The run plan (urlb/run/plan.py) and the agent spec (urlb/run/spec.py): resolved once,
adjusted for the agent with one printed line per change, read-only afterwards, and written
to the run folder as it is; a snapshot's agent config is data, never code."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from urlb.run.plan import build_plan
from urlb.run.resolvers import register_resolvers
from urlb.run.spec import agent_spec, check_agent_config

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def composed(config: str, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        cfg = compose(config, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_the_plan_is_read_only_and_is_the_run_folders_config(tmp_path):
    from urlb.run.pretrain import main as pretrain

    overrides = ["agent=ddpg", "preset=debug", "backend=cpu", "device=cpu", f"run_dir={tmp_path}/run"]
    overrides += [f"snapshot_root={tmp_path}/snapshots", "protocol.pretrain_frames=400"]
    overrides += ["protocol.snapshot_frames=[400]", "tensorboard=false", "console=false"]
    cfg = composed("pretrain", *overrides)
    plan, _ = build_plan(cfg, "pretrain", "ddpg")
    with pytest.raises(ReadonlyConfigError):
        plan.seed = 2
    with pytest.raises(ReadonlyConfigError):
        plan.protocol.updates_per_frame = 1.0
    pretrain(cfg, "ddpg")
    written = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert OmegaConf.to_container(written) == OmegaConf.to_container(plan)
    assert written.run_dir == f"{tmp_path}/run" and written.agent_name == "ddpg"  # resolved, not ${...}


def test_the_agents_needs_change_the_plan_not_the_config(capsys):
    cfg = composed("pretrain", "agent=metra", "obs=pixels", "preset=debug")
    plan, spec = build_plan(cfg, "pretrain", "metra")
    assert spec.observe_pose and not plan.agent.reward_model.observe_pose
    assert cfg.agent.reward_model.observe_pose  # the composed config is untouched
    assert plan.replay.nstep == 1 != cfg.replay.nstep  # METRA's 1-step transitions
    printed = capsys.readouterr().out
    assert "observe_pose=false" in printed and "replay.nstep=1" in printed

    cfg = composed("pretrain", "agent=dreamer", "obs=pixels", "preset=debug")
    plan, spec = build_plan(cfg, "pretrain", "dreamer")
    assert (plan.obs.size, plan.obs.frame_stack) == (64, 1)  # DreamerV2's frames
    assert plan.replay.nstep == cfg.agent.batch_length == spec.window
    assert plan.protocol.updates_per_frame == pytest.approx(cfg.agent.updates_per_frame / 2)  # repeat 2


def test_the_finetune_plan_freezes_a_pixel_encoder_unless_training_from_scratch():
    cfg = composed("finetune", "agent=ddpg", "task=walker_stand", "snapshot=100k", "obs=pixels")
    assert build_plan(cfg, "finetune", "ddpg")[0].agent.update_encoder is False
    cfg = composed("finetune", "agent=ddpg", "task=walker_stand", "snapshot=null", "obs=pixels")
    assert build_plan(cfg, "finetune", "ddpg")[0].agent.update_encoder is True


def test_the_spec_is_read_from_class_and_config():
    cfg = composed("pretrain", "agent=pdt", "preset=debug")
    spec = agent_spec("pdt", cfg.agent)
    assert spec.pretrains_offline and spec.window == 2 * cfg.agent.context_length
    assert spec.own_update_ratio == cfg.agent.updates_per_frame
    cfg = composed("pretrain", "agent=diayn", "preset=debug")
    spec = agent_spec("diayn", cfg.agent)
    assert spec.skill_agent and not spec.pretrains_offline and spec.own_update_ratio is None
    assert spec.replay_nstep("pretrain") is None and spec.replay_nstep("finetune") is None


@pytest.mark.parametrize(
    "config, error",
    [
        ({"_target_": "numpy.savetxt", "fname": "x"}, "not one of the project's agents"),
        ({"_target_": "agents.ddpg.DDPGAgent", "reward_model": {"_target_": "builtins.open"}}, "agents"),
        ({"_target_": "agents.base.torch.save"}, "not an agent or reward model class"),
        ({"_target_": "agents.ddpg.DDPGAgent", "_args_": ["x"]}, "only _target_ and _partial_"),
    ],
)
def test_a_snapshots_agent_config_may_name_only_the_projects_agents(config, error):
    with pytest.raises(ValueError, match=error):
        check_agent_config(config)


def test_every_shipped_agent_config_passes_the_check():
    for path in sorted(Path(CONFIGS, "agent").glob("*.yaml")):
        cfg = composed("pretrain", f"agent={path.stem}", "preset=debug")
        check_agent_config(cfg.agent)
