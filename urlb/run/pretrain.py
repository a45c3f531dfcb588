"""Pretraining runs: online reward-free pretraining (:func:`pretrain`) and dataset agents'
offline pretraining (:func:`pretrain_offline`), each from a frozen plan.

``pretrain.py`` calls :func:`main`, which reads the agent's name from Hydra once and dispatches.

Imports: envs, urlb.data, urlb.loop, urlb.run.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from envs import make_env
from urlb.data.checkpoint import save_snapshot, write_snapshot_config
from urlb.data.datasets import dataset_length
from urlb.loop.offline import OfflineLoop, OfflineSchedule
from urlb.loop.online import OnlineLoop
from urlb.run.build import (
    build_agent,
    build_envs,
    build_replay,
    build_sampler,
    build_skill_evaluators,
    check_sizes,
    online_schedule,
    prepare_process,
)
from urlb.run.execute import execute
from urlb.run.folder import open_run
from urlb.run.plan import build_plan, env_options, hydra_agent_name, snapshot_config, write_plan
from urlb.run.spec import AgentSpec, agent_spec


def main(cfg: DictConfig, name: str | None = None) -> dict:
    """``pretrain.py``: online agents pretrain on ``env``; dataset agents from ``dataset``."""
    name = name or hydra_agent_name()
    if agent_spec(name, cfg.agent).pretrains_offline:
        if cfg.dataset is None:
            raise ValueError(
                f"agent={name} pretrains from a dataset: pass dataset=<path>, e.g. one written by "
                f"python collect.py env={cfg.env.domain} policy=random frames=1M out=<path>"
            )
        # The frames behind an offline pretraining are the dataset's transitions.
        facts = {"protocol.pretrain_frames": dataset_length(cfg.dataset)}
        return pretrain_offline(*build_plan(cfg, "pretrain", name, facts))
    plan, spec = build_plan(cfg, "pretrain", name)
    if plan.dataset is not None:
        raise ValueError(
            f"agent={spec.name} pretrains online and reads no dataset; drop dataset={plan.dataset} "
            "(dataset agents: pdt, supe, fb, hilp, td3)"
        )
    return pretrain(plan, spec)


def pretrain_record(plan: DictConfig, frames: int) -> dict:
    """The fields every pretraining evaluation record of a run shares (``frames``: the
    pretraining budget, env frames or a dataset's transitions)."""
    return {
        "agent": plan.agent_name,
        "domain": plan.env.domain,
        "seed": plan.seed,
        "phase": "pretrain",
        "snapshot_frames": None,
        "pretrain_frames": frames,
        "finetune_frames": None,
        "obs": plan.obs.type,
    }


def snapshot_writer(plan: DictConfig, agent, pretrain_frames: int, clock_key: str = "frames", **fields):
    """``write(clock)``: the agent's snapshot at that clock value (frames, or updates offline:
    ``clock_key``; ``frames`` always indexes snapshots) in the plan's ``snapshot_dir`` (one
    folder per configuration), with the plan, the identity of the run and the frames behind
    the pretraining."""
    config = OmegaConf.to_container(plan)
    directory, name = Path(plan.snapshot_dir), plan.agent_name

    def write(clock: int) -> None:
        payload = {"agent": agent.state_dict(), "config": config, "agent_name": name}
        payload |= {"domain": plan.env.domain, "seed": plan.seed, "frames": clock}
        payload |= {"pretrain_frames": pretrain_frames, clock_key: clock} | fields
        save_snapshot(directory / f"snapshot_{int(clock)}.pt", payload)

    return write


def start_snapshots(plan: DictConfig, spec: AgentSpec) -> None:
    """Record what defines the snapshots of the plan's folder beside them (``config.json``),
    before the first is written: what ``finetune.py snapshot=<frames>`` shows when several
    configurations have the frame count asked for."""
    values = snapshot_config(plan, spec) | {"written_by": str(Path(plan.run_dir).resolve())}
    write_snapshot_config(Path(plan.snapshot_dir), values)


def pretrain(plan: DictConfig, spec: AgentSpec) -> dict:
    """Reward-free pretraining on ``plan.env.domain``; snapshots at ``protocol.snapshot_frames``."""
    check_sizes(plan)
    with open_run(plan, "pretrain", also_lock=[plan.snapshot_dir]) as start:
        if start is None:
            return {}
        device = prepare_process(plan)
        env, eval_env = build_envs(plan, plan.env.domain, device)
        agent = build_agent(plan.agent, env, env.device)
        replay = build_replay(plan, env)
        if start.fresh:
            write_plan(plan)
            start_snapshots(plan, spec)
        run_dir = start.run_dir
        total = plan.protocol.pretrain_frames
        record = pretrain_record(plan, total)
        evaluators = build_skill_evaluators(plan, spec.skill_agent, env.device)
        schedule = online_schedule(plan, total, plan.protocol.snapshot_frames)
        write = snapshot_writer(plan, agent, total)

        def make_loop(logger) -> OnlineLoop:
            options = {"write_snapshot": write, "store_physics": plan.save_dataset, "evaluators": evaluators}
            return OnlineLoop(
                env, eval_env, agent, replay, logger, schedule, run_dir, plan.seed, record, **options
            )

        def save_dataset(loop: OnlineLoop) -> None:
            meta = {
                "domain": plan.env.domain,
                "agent": plan.agent_name,
                "frames": loop.frame,
                "seed": plan.seed,
            }
            meta |= {"source": "pretrain replay", "task_names": list(env.task_names)}
            replay.save_dataset(run_dir / "dataset", meta | {"episode_steps": env.episode_steps})

        finish = save_dataset if plan.save_dataset else None
        result, _ = execute(plan, start, make_loop, total, "pretrain", record, finish=finish)
        return result


def pretrain_offline(plan: DictConfig, spec: AgentSpec) -> dict:
    """Pretrain a dataset agent from ``plan.dataset`` (``urlb.loop.offline``): ``offline.updates``
    gradient updates, snapshots ``snapshot_<updates>.pt`` at ``offline.snapshot_updates`` in the
    online runs' place and format, zero-shot evaluations of every task of the domain."""
    domain, offline = plan.env.domain, plan.offline
    check_sizes(plan)
    with open_run(plan, "pretrain", also_lock=[plan.snapshot_dir]) as start:
        if start is None:
            return {}
        device = prepare_process(plan)
        options = env_options(plan)
        eval_env = make_env(domain, plan.protocol.eval_episodes, device=device, **options)
        sampler = build_sampler(plan.dataset, eval_env, domain, options["pixels"])
        if len(sampler) != plan.protocol.pretrain_frames:
            raise ValueError(f"dataset {plan.dataset} changed while the run started; pretrain again")
        agent = build_agent(plan.agent, eval_env, eval_env.device)
        print(
            f"[pretrain] {spec.name}: offline from {plan.dataset} ({len(sampler)} transitions), "
            f"{offline.updates} updates, snapshots at updates {list(offline.snapshot_updates)}"
        )
        if start.fresh:
            write_plan(plan, extra={"dataset": str(Path(plan.dataset).resolve())})
            start_snapshots(plan, spec)
        run_dir = start.run_dir
        # "frames" indexes a snapshot for finetune.py and collect.py: updates, for offline runs;
        # the frames behind the pretraining are the dataset's transitions.
        write = snapshot_writer(plan, agent, len(sampler), clock_key="updates", dataset=str(plan.dataset))
        record = pretrain_record(plan, len(sampler)) | {"frames": len(sampler)}
        schedule = OfflineSchedule(
            offline.updates,
            offline.eval_every_updates,
            offline.log_every_updates,
            offline.checkpoint_every_updates,
            tuple(offline.snapshot_updates),
        )

        def make_loop(logger) -> OfflineLoop:
            return OfflineLoop(eval_env, agent, sampler, logger, schedule, run_dir, plan.seed, record, write)

        result, _ = execute(plan, start, make_loop, offline.updates, "pretrain offline, in updates", record)
        return result
