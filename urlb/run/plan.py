"""The run plan: the Hydra config resolved once, adjusted for the agent, validated and frozen.

:func:`build_plan` is the only place a run's configuration changes: it resolves every
interpolation, applies what the agent asks for (its pixel format, its replay window, its own
update ratio, METRA's pose switched off on frames, the frozen encoder of a pixel finetune),
announces each change in one line, and returns a read-only :class:`omegaconf.DictConfig`
(an edit raises). The run folder's ``config.yaml`` is this plan (:func:`write_plan`); nothing
edits it afterwards.

Imports: urlb.run.spec; nothing that builds envs or agents.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from urlb.measure.logging import write_run_info
from urlb.run.spec import AgentSpec, agent_spec

PHASES = ("pretrain", "finetune")
PIXEL_KEYS = ("size", "frame_stack", "action_repeat", "camera", "shadows")


def hydra_agent_name() -> str:
    """The agent's config name (``agent=<name>``), read once from Hydra's choices by the
    entry points."""
    return HydraConfig.get().runtime.choices["agent"]


def build_plan(
    cfg: DictConfig, phase: str, name: str, facts: dict | None = None
) -> tuple[DictConfig, AgentSpec]:
    """Resolve ``cfg`` (a pretrain or finetune config) into the frozen plan of a ``phase`` run
    of agent ``name``; returns the plan and the agent's spec. Prints one line per value that the
    agent's own needs change. ``facts`` (dotted key -> value) are values the run's inputs fix
    before it starts (offline: ``protocol.pretrain_frames`` is the dataset's transitions)."""
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r}; known: {', '.join(PHASES)}")
    own = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])  # not Hydra's own node
    plan = OmegaConf.create(OmegaConf.to_container(own, resolve=True))
    spec = agent_spec(name, plan.agent)
    plan.agent_name, plan.phase = name, phase
    label = f"[{phase}] {name}"
    for key, value in (facts or {}).items():
        OmegaConf.update(plan, key, value, merge=False)
    if plan.obs.type not in ("states", "pixels"):
        raise ValueError(f"obs={plan.obs.type!r}: known observation types are states, pixels")
    if plan.obs.type == "pixels":
        _adjust_for_pixels(plan, spec, label)
    nstep = spec.replay_nstep(phase)
    if nstep is not None and nstep != plan.replay.nstep:
        told = f"replay.nstep={nstep}, not the preset's {plan.replay.nstep}"
        print(f"{label}: {told}: the agent samples replay windows of that length")
        plan.replay.nstep = nstep
    if spec.own_update_ratio is not None:
        # The agent's own ratio is per agent step: pixel envs repeat each action, so it is
        # spread over their frames.
        ratio = spec.own_update_ratio / action_repeat(plan)
        if ratio != plan.protocol.updates_per_frame:
            told = f"not the preset's {plan.protocol.updates_per_frame}"
            print(f"{label}: {ratio:g} updates per frame (the agent's own ratio), {told}")
            plan.protocol.updates_per_frame = ratio
    OmegaConf.set_readonly(plan, True)
    return plan, spec


def _adjust_for_pixels(plan: DictConfig, spec: AgentSpec, label: str) -> None:
    """Frames: refuse what nothing supports, then apply the agent's pixel needs."""
    if spec.pretrains_offline:
        raise ValueError(f"agent={spec.name} learns from state datasets; obs=pixels is not supported for it")
    if plan.get("save_dataset"):
        raise ValueError(
            "save_dataset=true keeps state observations and physics states; use it with obs=states"
        )
    if spec.observe_pose:
        # METRA's default on states; frames carry no pose vector (METRA's pixel runs see images alone).
        plan.agent.reward_model.observe_pose = False
        print(f"[pixels] {spec.name}: agent.reward_model.observe_pose=false (frames carry no pose vector)")
    changed = {key: value for key, value in spec.pixel_format.items() if plan.obs[key] != value}
    if changed:
        told = ", ".join(f"obs.{key}={value}" for key, value in changed.items())
        print(f"{label}: {told} (the agent's own pixel format)")
        plan.obs.merge_with(changed)
    if plan.phase == "finetune" and spec.has_encoder_option:
        # URLB's finetuning keeps the pretrained encoder frozen by default; one trained from
        # scratch has nothing to keep.
        train = bool(plan.update_encoder) or plan.snapshot is None
        plan.agent.update_encoder = train
        print(f"{label}: the conv encoder is {'trained' if train else 'frozen (update_encoder=false)'}")


def action_repeat(plan: DictConfig) -> int:
    """Control steps per agent step: the pixel protocol's repeat, 1 on states."""
    return int(plan.obs.action_repeat) if plan.obs.type == "pixels" else 1


def observe_pose(plan: DictConfig) -> bool:
    """Whether the run's envs append the global pose (after the plan's pixel adjustment)."""
    model = plan.agent.get("reward_model")
    return bool(model and model.get("observe_pose", False))


def pixel_options(plan: DictConfig) -> dict | None:
    """``make_env``'s ``pixels`` argument (None for state observations)."""
    if plan.obs.type == "states":
        return None
    return {key: plan.obs[key] for key in PIXEL_KEYS}


def env_options(plan: DictConfig) -> dict:
    """``make_env``'s keyword arguments besides the task, world count and device, for every env
    of a run (training, evaluation, skill selection and measurement)."""
    return {
        "backend": plan.backend,
        "seed": plan.seed,
        "observe_pose": observe_pose(plan),
        "pixels": pixel_options(plan),
    }


def snapshot_folder(plan: DictConfig, domain: str) -> str:
    """The folder of a domain's snapshots: ``walker``, or ``walker_pixels`` for pixel runs
    (state and pixel snapshots of one agent never share a name)."""
    return domain if plan.obs.type == "states" else f"{domain}_pixels"


def write_plan(plan: DictConfig, extra: dict | None = None) -> Path:
    """Write the plan as ``run_dir/config.yaml`` with ``run.json`` beside it; returns the folder."""
    run_dir = Path(plan.run_dir)
    write_run_info(run_dir, plan, extra={"phase": plan.phase} | (extra or {}))
    return run_dir
