"""The run plan: the Hydra config resolved once, validated, adjusted for the agent and frozen.

:func:`build_plan` is the only place a run's configuration changes: it resolves every
interpolation, checks every value against the typed schema (:mod:`urlb.run.schema`: one line
naming the key and a fix, before anything is built or any folder made), applies what the agent
asks for (its pixel format, its replay window, its own update ratio, METRA's pose switched off
on frames, the frozen encoder of a pixel finetune, a pretrained critic's discount), announces
each change in one line, names the folder of a pretraining's snapshots (``snapshot_dir``: one
per configuration, :func:`snapshot_config`), and returns a read-only
:class:`omegaconf.DictConfig` (an edit raises). The run folder's ``config.yaml`` is this plan
(:func:`write_plan`, atomically, when a run starts fresh); nothing edits it afterwards, and a
resume whose plan differs from it in anything but :data:`RESUME_MAY_CHANGE` is refused
(:func:`plan_changes`).

Imports: urlb.run.spec, urlb.run.schema, urlb.data; nothing that builds envs or agents.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from urlb.data.checkpoint import snapshot_directory
from urlb.data.records import fsync_directory
from urlb.measure.logging import write_run_info
from urlb.run.resolvers import agent_label
from urlb.run.schema import check_config
from urlb.run.spec import AgentSpec, agent_spec

PHASES = ("pretrain", "finetune")
PIXEL_KEYS = ("size", "frame_stack", "action_repeat", "camera", "shadows")


def hydra_agent_name() -> str:
    """The agent's config name (``agent=<name>``), with its add-on (``addon=sr``: ``<name>+sr``),
    read once from Hydra's choices by the entry points."""
    choices = HydraConfig.get().runtime.choices
    return agent_label(choices["agent"], choices.get("addon"))


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
    values = OmegaConf.to_container(own, resolve=True)
    spec = agent_spec(name, values["agent"])
    for key, value in (facts or {}).items():
        *path, last = key.split(".")
        section = values
        for part in path:
            section = section[part]
        section[last] = value
    check_config(values, phase, offline=spec.pretrains_offline)
    plan = OmegaConf.create(values)
    plan.agent_name, plan.phase = name, phase
    label = f"[{phase}] {name}"
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
    discount = spec.finetune_discount
    if phase == "finetune" and discount is not None and discount != plan.replay.discount:
        told = f"replay.discount={discount:g}, not the preset's {plan.replay.discount:g}"
        print(f"{label}: {told}: the pretrained critic's own discount")
        plan.replay.discount = discount
    if phase == "pretrain":
        key = snapshot_config_key(plan, spec)
        folder = snapshot_folder(plan, plan.env.domain)
        plan.snapshot_dir = str(snapshot_directory(plan.snapshot_root, name, folder, plan.seed, key))
    OmegaConf.set_readonly(plan, True)
    return plan, spec


def _adjust_for_pixels(plan: DictConfig, spec: AgentSpec, label: str) -> None:
    """Frames: refuse what nothing supports, then apply the agent's pixel needs."""
    if spec.pretrains_offline and not spec.reads_dataset_frames:
        raise ValueError(
            f"agent={spec.name} learns from state datasets; obs=pixels is not supported for it "
            "(pixel datasets: fb, hilp)"
        )
    if plan.agent.get("self_reference"):
        raise ValueError(
            "addon=sr retrieves state vectors (the paper's key space); use obs=states or drop addon=sr"
        )
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
    return obs_pixel_options(plan.obs)


def obs_pixel_options(obs) -> dict | None:
    """``make_env``'s ``pixels`` argument from an ``obs`` section (a plan's, or a snapshot's
    stored one, a plain dict), None for state observations."""
    if obs["type"] == "states":
        return None
    return {key: obs[key] for key in PIXEL_KEYS}


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


# -- snapshots' configurations ---------------------------------------------------------------------
# Protocol keys that decide when things are measured or saved, not what is trained: two runs
# that differ only in these write the same snapshots.
OUTPUT_SCHEDULE = (
    "snapshot_frames",
    "eval_every_frames",
    "eval_episodes",
    "log_every_frames",
    "checkpoint_every_frames",
    "finetune_frames",
)


def snapshot_config(plan: DictConfig, spec: AgentSpec) -> dict:
    """The values of a pretraining plan that define its snapshots: the agent (its whole config,
    after the plan's adjustments), the domain and seed, the observations, the replay and the
    protocol's training budget (not its output schedule: :data:`OUTPUT_SCHEDULE`); offline, the
    dataset and the update count. The run folder, devices, threads and logging do not count."""
    values = OmegaConf.to_container(plan, resolve=True)
    protocol = {key: value for key, value in values["protocol"].items() if key not in OUTPUT_SCHEDULE}
    defining = {
        "agent_name": values["agent_name"],
        "agent": values["agent"],
        "domain": values["env"]["domain"],
        "seed": values["seed"],
        "obs": values["obs"],
        "replay": values["replay"],
        "protocol": protocol,
    }
    if spec.pretrains_offline:
        defining |= {
            "dataset": str(Path(values["dataset"]).resolve()),
            "updates": values["offline"]["updates"],
        }
    return defining


def snapshot_config_key(plan: DictConfig, spec: AgentSpec) -> str:
    """A short hash of :func:`snapshot_config`: the name of the folder of this configuration's
    snapshots (``<root>/<agent>/<domain>/seed_<s>/<key>/``)."""
    text = json.dumps(snapshot_config(plan, spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# -- the run folder's copy -------------------------------------------------------------------------
PLAN_FILE = "config.yaml"
# What a resume may change: how the run is shown and how many threads it takes. Anything else
# (an agent's lr, a budget, the replay, the device) would make the resumed run another run.
RESUME_MAY_CHANGE = ("resume", "console", "tensorboard", "threads", "run_dir")


def write_plan(plan: DictConfig, extra: dict | None = None) -> Path:
    """Write the plan as ``run_dir/config.yaml`` with ``run.json`` beside it (the git revision,
    the command, the Hydra overrides), each replaced atomically; returns the folder."""
    run_dir = Path(plan.run_dir)
    extra = {"phase": plan.phase} | (extra or {})
    if HydraConfig.initialized():
        extra["overrides"] = list(HydraConfig.get().overrides.task)
    # Written into a temp folder beside them and renamed in: a crash leaves the old files or the new.
    staging = run_dir / f".plan.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write_run_info(staging, plan, extra=extra)
        for name in (PLAN_FILE, "run.json"):
            with open(staging / name, "rb") as file:
                os.fsync(file.fileno())
            os.replace(staging / name, run_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_directory(run_dir)
    return run_dir


def plan_changes(plan: DictConfig, run_dir: Path) -> dict[str, tuple]:
    """The keys (dotted) whose values differ between ``plan`` and the plan the run in
    ``run_dir`` started with (its ``config.yaml``), as ``key: (then, now)``, leaving out
    :data:`RESUME_MAY_CHANGE` and keys only one of them has (a newer version's keys)."""
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        return {}
    then = _flat(OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {})
    now = _flat(OmegaConf.to_container(plan, resolve=True))
    changed = {key: (then[key], now[key]) for key in then.keys() & now.keys() if then[key] != now[key]}
    return {
        key: value for key, value in sorted(changed.items()) if key.split(".")[0] not in RESUME_MAY_CHANGE
    }


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
