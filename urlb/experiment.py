"""Building a run from its Hydra config: the shared body of ``pretrain.py`` and
``finetune.py`` (which stay a few lines each)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from envs import make_env
from envs.registry import parse_task
from urlb.data.checkpoint import find_snapshot, load_snapshot, save_snapshot, snapshot_path
from urlb.data.datasets import DatasetSampler
from urlb.data.replay import ReplayBuffer
from urlb.loop.offline import OfflineRunner, OfflineSchedule, check_dataset, is_dataset_agent
from urlb.loop.online import OnlineRunner, Schedule
from urlb.measure.logging import Logger, write_run_info
from urlb.measure.skills import SkillEvaluator, select_skill
from urlb.run.sweep import clear_complete, mark_complete


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} but this machine has no CUDA GPU; use device=cpu")
    return torch.device(name)


def agent_name() -> str:
    return HydraConfig.get().runtime.choices["agent"]


def build_agent(agent_cfg, env, device: torch.device):
    """The agent for ``env``: ``obs_dim`` is a state size, or ``(C, H, W)`` for frames."""
    return instantiate(agent_cfg, obs_dim=env.obs_dim, action_dim=env.action_dim).to(device)


def pixel_options(cfg: DictConfig, label: str = "") -> dict | None:
    """``make_env``'s ``pixels`` argument for ``cfg.obs`` (None for state observations),
    with the frame size and stack the agent's class asks for (``Agent.pixel_format``:
    DreamerV2 renders single 64x64 frames), announced when they replace the config's."""
    if cfg.obs.type == "states":
        return None
    if cfg.obs.type != "pixels":
        raise ValueError(f"obs={cfg.obs.type!r}: known observation types are states, pixels")
    options = {key: cfg.obs[key] for key in ("size", "frame_stack", "action_repeat", "camera", "shadows")}
    wanted = getattr(get_class(cfg.agent._target_), "pixel_format", None) or {}
    changed = {key: value for key, value in wanted.items() if options[key] != value}
    if changed and label:
        told = ", ".join(f"obs.{key}={value}" for key, value in changed.items())
        print(f"[{label}] {agent_name()}: {told} (the agent's own pixel format)")
    return options | changed


def env_options(cfg: DictConfig, label: str = "") -> dict:
    """``make_env``'s keyword arguments besides the task, world count and device, for every
    env of a run (training, evaluation, skill selection): the same backend, seed, pose and
    pixel format; ``label`` announces an agent's own pixel format once."""
    options = {"backend": cfg.backend, "seed": cfg.seed, "observe_pose": observe_pose(cfg.agent)}
    return options | {"pixels": pixel_options(cfg, label)}


def pretrain_record(cfg: DictConfig, name: str, domain: str, frames: int) -> dict:
    """The fields every pretraining evaluation record of a run shares (``frames``: the
    pretraining budget, env frames or a dataset's transitions)."""
    return {
        "agent": name,
        "domain": domain,
        "seed": cfg.seed,
        "phase": "pretrain",
        "snapshot_frames": None,
        "pretrain_frames": frames,
        "finetune_frames": None,
    }


def check_pixels_supported(cfg: DictConfig) -> None:
    """Refuse the pixel runs nothing supports yet, by name, before anything is built; a
    skill model observing the global pose (METRA) observes frames alone."""
    if cfg.obs.type != "pixels":
        return
    if observe_pose(cfg.agent):
        # METRA's default on states; frames carry no pose vector (METRA's pixel runs see images alone).
        cfg.agent.reward_model.observe_pose = False
        print(f"[pixels] {agent_name()}: agent.reward_model.observe_pose=false (frames carry no pose vector)")
    if is_dataset_agent(cfg.agent):
        raise ValueError(
            f"agent={agent_name()} learns from state datasets; obs=pixels is not supported for it"
        )
    if cfg.get("save_dataset"):
        raise ValueError(
            "save_dataset=true keeps state observations and physics states; use it with obs=states"
        )


def snapshot_domain(cfg: DictConfig, domain: str) -> str:
    """The folder of a domain's snapshots: ``walker``, or ``walker_pixels`` for pixel runs
    (state and pixel snapshots of one agent never share a name)."""
    return domain if cfg.obs.type == "states" else f"{domain}_pixels"


def observe_pose(agent_cfg) -> bool:
    """Whether the agent observes the global pose (a skill model's ``observe_pose``): every
    env of the run (training, evaluation, skill rollouts) is then built with it."""
    reward_model = agent_cfg.get("reward_model")
    return bool(reward_model and reward_model.get("observe_pose", False))


def build_parts(cfg: DictConfig, task: str, phase: str):
    """Env, eval env, agent, replay and logger for ``task`` (a task or a domain name)."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    protocol = cfg.protocol
    check_pixels_supported(cfg)
    options = env_options(cfg, phase)
    env = make_env(task, protocol.num_envs, device=device, **options)
    eval_env = make_env(task, protocol.eval_episodes, device=env.device, **options)
    agent = build_agent(cfg.agent, env, env.device)
    nstep = agent.replay_nstep(phase)
    if nstep is not None and nstep != cfg.replay.nstep:
        print(
            f"[{phase}] {agent_name()}: replay.nstep={nstep}, not the preset's {cfg.replay.nstep}: "
            "the agent samples replay windows of that length"
        )
        cfg.replay.nstep = nstep
    # An agent's own ratio is per agent step (given per frame at repeat 1): pixel envs
    # repeat each action, so it is spread over their frames.
    ratio = None if agent.updates_per_frame is None else agent.updates_per_frame / env.action_repeat
    if ratio is not None and ratio != protocol.updates_per_frame:
        print(
            f"[{phase}] {agent_name()}: {ratio:g} updates per frame (the agent's own ratio), not the "
            f"preset's {protocol.updates_per_frame}"
        )
        protocol.updates_per_frame = ratio
    replay = ReplayBuffer(
        cfg.replay.capacity,
        env.num_envs,
        env.device,
        nstep=cfg.replay.nstep,
        discount=cfg.replay.discount,
        frame_stack=env.frame_stack,
    )
    run_dir = Path(cfg.run_dir)
    total = protocol.pretrain_frames if phase == "pretrain" else protocol.finetune_frames
    write_run_info(run_dir, OmegaConf.to_container(cfg, resolve=True), extra={"phase": phase})
    return env, eval_env, agent, replay, run_dir, total


def schedule(cfg: DictConfig, total_frames: int, snapshot_frames=()) -> Schedule:
    p = cfg.protocol
    return Schedule(
        total_frames=total_frames,
        seed_frames=p.seed_frames,
        updates_per_frame=p.updates_per_frame,
        eval_every_frames=p.eval_every_frames,
        log_every_frames=p.log_every_frames,
        checkpoint_every_frames=p.checkpoint_every_frames,
        snapshot_frames=tuple(snapshot_frames),
    )


def run(runner: OnlineRunner, cfg: DictConfig, run_dir: Path, total: int, label: str) -> dict:
    clear_complete(run_dir)  # a (re)started run is incomplete until pretrain/finetune mark it
    resumed = cfg.resume and runner.resume()
    if not resumed:
        stale = [p for p in (run_dir / "eval.jsonl", *(e.records for e in runner.evaluators)) if p.exists()]
        if stale and not cfg.resume:
            raise ValueError(
                f"{run_dir} already holds a run ({stale[0].name}); continue it with resume=true, or "
                "start over in another run_dir (or delete that folder)"
            )
        if cfg.resume:
            # A run killed before its first checkpoint: its records are redone from frame 0.
            for path in stale:
                path.unlink()
            print(f"[{label}] resume=true but no checkpoint in {run_dir}: starting fresh")
    runner.logger = Logger(
        run_dir,
        total,
        use_tensorboard=cfg.tensorboard,
        console=cfg.console,
        start_frame=runner.frame,
        label=label,
    )
    try:
        return runner.run()
    finally:
        runner.logger.close()


def pretrain(cfg: DictConfig) -> dict:
    """Reward-free pretraining on ``cfg.env.domain``; snapshots at ``protocol.snapshot_frames``.
    Dataset agents (PDT) pretrain offline from ``cfg.dataset`` instead (:func:`pretrain_offline`)."""
    name = agent_name()
    if is_dataset_agent(cfg.agent):
        if cfg.dataset is None:
            raise ValueError(
                f"agent={name} pretrains from a dataset: pass dataset=<path>, e.g. one written by "
                f"python collect.py env={cfg.env.domain} policy=random frames=1M out=<path>"
            )
        return pretrain_offline(cfg, name)
    if cfg.dataset is not None:
        raise ValueError(
            f"agent={name} pretrains online and reads no dataset; drop dataset={cfg.dataset} "
            "(dataset agents: pdt, supe)"
        )
    domain = cfg.env.domain
    env, eval_env, agent, replay, run_dir, total = build_parts(cfg, domain, "pretrain")
    config = OmegaConf.to_container(cfg, resolve=True)

    def write_snapshot(frames: int) -> None:
        path = snapshot_path(Path(cfg.snapshot_root), name, snapshot_domain(cfg, domain), cfg.seed, frames)
        save_snapshot(
            path,
            {
                "agent": agent.state_dict(),
                "config": config,
                "agent_name": name,
                "domain": domain,
                "seed": cfg.seed,
                "frames": frames,
            },
        )

    record = pretrain_record(cfg, name, domain, total) | {"obs": cfg.obs.type}
    evaluators = []
    if agent.skill_dim and cfg.skill_eval.rollouts:
        evaluators.append(
            SkillEvaluator(
                domain,
                cfg.skill_eval.rollouts,
                cfg.skill_eval.cell,
                cfg.skill_eval.steps,
                backend=cfg.backend,
                device=env.device,
                seed=cfg.seed,
                out_dir=run_dir / "skills",
                observe_pose=env.observe_pose,
                pixels=pixel_options(cfg),
            )
        )
    runner = OnlineRunner(
        env,
        eval_env,
        agent,
        replay,
        None,
        schedule(cfg, total, cfg.protocol.snapshot_frames),
        run_dir,
        cfg.seed,
        record,
        task=None,
        write_snapshot=write_snapshot,
        store_physics=cfg.save_dataset,
        evaluators=evaluators,
    )
    result = run(runner, cfg, run_dir, total, "pretrain")
    if cfg.save_dataset:
        meta = {
            "domain": domain,
            "agent": name,
            "frames": runner.frame,
            "seed": cfg.seed,
            "source": "pretrain replay",
            "task_names": list(env.task_names),
            "episode_steps": env.episode_steps,
        }
        replay.save_dataset(run_dir / "dataset", meta)
    mark_complete(run_dir, record | {"frames": runner.frame})  # last: every output is on disk
    return result


def pretrain_offline(cfg: DictConfig, name: str) -> dict:
    """Pretrain a dataset agent from ``cfg.dataset`` (``urlb.loop.offline``): ``offline.updates``
    gradient updates, snapshots ``snapshot_<updates>.pt`` at ``offline.snapshot_updates`` in the
    online runs' place and format, zero-shot evaluations of every task of the domain."""
    domain, offline = cfg.env.domain, cfg.offline
    check_pixels_supported(cfg)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    eval_env = make_env(domain, cfg.protocol.eval_episodes, backend=cfg.backend, device=device, seed=cfg.seed)
    sampler = DatasetSampler.load(cfg.dataset, eval_env.device)
    check_dataset(sampler.meta, domain, eval_env.obs_dim, sampler.fields["observation"], cfg.dataset)
    agent = build_agent(cfg.agent, eval_env, eval_env.device)
    # The frames behind this pretraining are the dataset's; finetune records read them from here.
    cfg.protocol.pretrain_frames = len(sampler)
    print(
        f"[pretrain] {name}: offline from {cfg.dataset} ({len(sampler)} transitions), "
        f"{offline.updates} updates, snapshots at updates {list(offline.snapshot_updates)}"
    )
    run_dir = Path(cfg.run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    write_run_info(run_dir, config, extra={"phase": "pretrain", "dataset": str(Path(cfg.dataset).resolve())})

    def write_snapshot(updates: int) -> None:
        # "frames" indexes a snapshot for finetune.py and collect.py: updates, for offline runs.
        payload = {"agent": agent.state_dict(), "config": config, "agent_name": name, "domain": domain}
        payload |= {"seed": cfg.seed, "frames": updates, "updates": updates, "dataset": str(cfg.dataset)}
        save_snapshot(snapshot_path(Path(cfg.snapshot_root), name, domain, cfg.seed, updates), payload)

    record = pretrain_record(cfg, name, domain, len(sampler)) | {"frames": len(sampler)}
    schedule = OfflineSchedule(
        offline.updates,
        offline.eval_every_updates,
        offline.log_every_updates,
        offline.checkpoint_every_updates,
        tuple(offline.snapshot_updates),
    )
    runner = OfflineRunner(eval_env, agent, sampler, schedule, run_dir, cfg.seed, record, write_snapshot)
    result = run(runner, cfg, run_dir, offline.updates, "pretrain offline, in updates")
    mark_complete(run_dir, record | {"updates": runner.updates})  # last: every output is on disk
    return result


def load_pretrained(cfg: DictConfig, name: str, domain: str, env):
    """The pretrained agent named by ``cfg.snapshot`` (never another seed or frame count)."""
    path = find_snapshot(
        cfg.snapshot, Path(cfg.snapshot_root), name, snapshot_domain(cfg, domain), cfg.snapshot_seed
    )
    snapshot = load_snapshot(path)
    pretrained_obs = snapshot["config"].get("obs", {"type": "states"})["type"]
    if pretrained_obs != cfg.obs.type:
        raise ValueError(
            f"snapshot {path} was pretrained with obs={pretrained_obs}; finetune with obs={pretrained_obs}"
        )
    if snapshot["agent_name"] != name or snapshot["domain"] != domain:
        raise ValueError(
            f"snapshot {path} is {snapshot['agent_name']} on {snapshot['domain']}, not {name} on {domain}"
        )
    pretrained_cfg = OmegaConf.create(snapshot["config"]["agent"])
    if observe_pose(pretrained_cfg) != env.observe_pose:
        raise ValueError(
            f"snapshot {path} was pretrained with observe_pose={observe_pose(pretrained_cfg)}; finetune with "
            f"agent.reward_model.observe_pose={observe_pose(pretrained_cfg)} so the observations match"
        )
    pretrained = build_agent(pretrained_cfg, env, env.device)
    pretrained.load_state_dict(snapshot["agent"])
    return pretrained, snapshot


def choose_skill(cfg: DictConfig, agent, task: str, run_dir: Path) -> None:
    """Fix the finetuning skill of a skill model that picks one (``SkillModel.
    finetune_candidates``): the candidate whose deterministic rollout of the pretrained
    policy scores best on ``task`` (``urlb.measure.skills.select_skill``). The choice and every
    candidate's return go to ``run_dir/skill_selection.json``. Models that keep drawing
    skills while finetuning (URLB's DIAYN) are left alone."""
    model = agent.reward_model
    if model is None or not agent.skill_dim:
        return
    candidates = model.finetune_candidates(
        cfg.skill_selection.candidates, torch.Generator().manual_seed(cfg.seed)
    )
    if candidates is None:
        return
    device = next(agent.parameters()).device
    env = make_env(task, len(candidates), device=device, **env_options(cfg))
    skill, returns = select_skill(env, agent, candidates, task, seed=cfg.seed)
    env.close()
    model.fix_skill(skill)
    best = int(returns.argmax())
    print(
        f"[finetune] skill {best} of {len(candidates)} candidates: return {float(returns[best]):.1f} "
        f"on {task} "
        f"(median candidate {float(returns.median()):.1f})"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "skill_selection.json").write_text(
        json.dumps(
            {
                "task": task,
                "rule": "best deterministic one-episode return of the pretrained policy",
                "chosen": best,
                "skill": skill.tolist(),
                "returns": returns.tolist(),
                "frames_used": len(candidates) * env.episode_steps,
            },
            indent=1,
        )
    )


def finetune(cfg: DictConfig) -> dict:
    """Finetune a snapshot (or train from scratch with ``snapshot=null``) on ``cfg.task``."""
    domain, task = parse_task(cfg.task)
    if task is None:
        raise ValueError(
            f"task={cfg.task} is a domain; finetune on one of its tasks, e.g. task={domain}_stand"
        )
    name = agent_name()
    if cfg.obs.type == "pixels" and "update_encoder" in cfg.agent:
        # URLB's finetuning keeps the pretrained encoder frozen by default; one trained from
        # scratch has nothing to keep.
        train = bool(cfg.update_encoder) or cfg.snapshot is None
        cfg.agent.update_encoder = train
        state = "trained" if train else "frozen (update_encoder=false)"
        print(f"[finetune] {name}: the conv encoder is {state}")
    env, eval_env, agent, replay, run_dir, total = build_parts(cfg, task, "finetune")
    snapshot_frames, pretrain_frames = None, None
    if cfg.snapshot is not None:
        pretrained, snapshot = load_pretrained(cfg, name, domain, env)
        agent.init_from(pretrained)
        choose_skill(cfg, agent, task, run_dir)
        snapshot_frames = snapshot["frames"]
        pretrain_frames = snapshot["config"]["protocol"]["pretrain_frames"]
    record = {
        "agent": name,
        "domain": domain,
        "seed": cfg.seed,
        "phase": "finetune",
        "snapshot_frames": snapshot_frames,
        "pretrain_frames": pretrain_frames,
        "finetune_frames": total,
        "obs": cfg.obs.type,
    }
    runner = OnlineRunner(
        env, eval_env, agent, replay, None, schedule(cfg, total), run_dir, cfg.seed, record, task=task
    )
    result = run(runner, cfg, run_dir, total, "finetune")
    mark_complete(run_dir, record | {"frames": runner.frame})  # last: every output is on disk
    return result
