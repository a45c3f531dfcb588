"""Zero-shot evaluation of an offline-pretrained snapshot on every task of its domain, no finetuning.

``zero_shot.py snapshot=<snapshot_<updates>.pt>`` calls :func:`zero_shot_from_config`::

    agent = the snapshot's agent (its checked config, its state_dict)
    for task in the domain's tasks:
        rows = inference_samples transitions of the dataset, relabelled with the task's reward
        z = agent.infer_latent(s, s', r)        # FB: mean r B(s'); HILP: least squares on phi
        agent.fix_latent(z); returns = evaluate(eval env)   -> one record, finetune_frames 0
    goal reaching (goals > 0): per goal state of the dataset, z = agent.goal_latent(s, g) each step

An agent trained offline on one task's reward (``agents/td3.py``: ``infers_task = False``) is
evaluated on that task alone (``mode: offline``). Records go to ``run_dir/eval.jsonl`` in the
finetuning records' format, with ``finetune_frames: 0``, ``mode`` (``zero-shot`` or ``offline``),
``inference_samples`` and the dataset (its folder name and the agent that collected it), so the
report (``urlb.report``) shows them as their own labelled rows, grouped by dataset.

Imports: envs, urlb.data, urlb.measure, urlb.run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from envs import make_env
from envs.tasks import EXPERT_SCORES, normalised_score
from urlb.data.checkpoint import load_snapshot
from urlb.data.datasets import DatasetSampler, task_column
from urlb.data.records import append_record, write_atomically
from urlb.measure.evaluate import evaluate
from urlb.run.build import build_agent, build_sampler, prepare_process
from urlb.run.plan import obs_pixel_options
from urlb.run.spec import agent_class, stored_config

RECORDS = "eval.jsonl"


def load_pretrained(path: Path, device) -> tuple[dict, dict]:
    """The snapshot's payload and its checked config (data: only the project's agents)."""
    snapshot = load_snapshot(path)
    missing = {"agent", "agent_name", "config", "domain", "frames", "seed"} - set(snapshot)
    if missing:
        raise ValueError(f"{path} is not a pretraining snapshot (no {', '.join(sorted(missing))})")
    config = stored_config(snapshot, path)
    if not agent_class(config["agent"]).pretrains_offline:
        raise ValueError(
            f"snapshot {path} holds {snapshot['agent_name']}, an online agent; zero_shot.py evaluates "
            "dataset agents (fb, hilp, td3): finetune online agents with finetune.py"
        )
    return snapshot, config


def inference_rows(sampler: DatasetSampler, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct dataset rows drawn with ``seed`` (the same rows for every task)."""
    if not 0 < count <= len(sampler):
        raise ValueError(
            f"inference_samples={count} must lie in 1..{len(sampler)}, the dataset's transitions"
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(len(sampler), generator=generator)[:count].to(sampler.device)


def task_transitions(sampler: DatasetSampler, task: str, rows: torch.Tensor):
    """The dataset's ``rows`` relabelled with ``task``'s reward: ``(s, s', r)``, what a task's z is
    inferred from (here, and by ``finetune.py`` when it starts from the zero-shot policy); ``s``
    and ``s'`` as the agent observes them: state vectors, or frame stacks from a pixel dataset."""
    batch = sampler.gather(rows)
    column = task_column(sampler.meta, task, batch["task_reward"].shape[1])
    return batch["observation"], batch["next_observation"], batch["task_reward"][:, column]


def task_latents(agent, sampler: DatasetSampler, tasks, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each task's z from the same ``rows``, relabelled with that task's reward."""
    return {task: agent.infer_latent(*task_transitions(sampler, task, rows)) for task in tasks}


@torch.no_grad()
def reach_goals(env, agent, goals: torch.Tensor, goal_states: torch.Tensor, seed: int) -> list[dict]:
    """One episode per goal (``goals``: what the agent observes of them, one world each) with
    z = goal_latent(s, g) each step: the state's distance to its goal state (``(G, obs_dim)``)
    at the start, at the end and at its closest (pixel envs report states as ``state`` and
    ``next_state``)."""
    td = env.reset(seed=seed)
    state = agent.init_state(env.num_envs, env.device)
    start = (td.get("state", td["observation"]) - goal_states).norm(dim=-1)
    closest = start.clone()
    for _ in range(env.episode_steps):
        state["z"] = agent.goal_latent(td["observation"], goals)
        td = env.step(agent.act(td["observation"], state, explore=False))
        reached = td.get("next_state", td["next_observation"])
        closest = torch.minimum(closest, (reached - goal_states).norm(dim=-1))
    final = (reached - goal_states).norm(dim=-1)
    return [
        {"goal": i, "start_distance": float(s), "final_distance": float(f), "closest_distance": float(c)}
        for i, (s, f, c) in enumerate(zip(start, final, closest, strict=True))
    ]


def check_config(cfg: DictConfig) -> None:
    """Every input error before anything is loaded, each one line naming the fix."""
    for key, least in (("inference_samples", 1), ("eval_episodes", 1), ("goals", 0), ("seed", 0)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value!r}: use a whole number >= {least}")
    if not Path(cfg.snapshot).is_file():
        raise FileNotFoundError(
            f"snapshot={cfg.snapshot} is not a file; pass a snapshot_<updates>.pt that pretrain.py wrote"
        )


def zero_shot_from_config(cfg: DictConfig) -> list[dict]:
    """``zero_shot.py``: evaluate the snapshot; returns the records written."""
    check_config(cfg)
    path = Path(cfg.snapshot)
    settings = OmegaConf.create({key: cfg[key] for key in ("threads", "backend", "device", "seed")})
    device = prepare_process(OmegaConf.merge(settings, {"num_envs": cfg.eval_episodes}))  # threads, seed
    snapshot, config = load_pretrained(path, device)
    name, domain = snapshot["agent_name"], snapshot["domain"]
    dataset = cfg.dataset or snapshot.get("dataset")
    if dataset is None:
        raise ValueError(f"snapshot {path} names no dataset; pass dataset=<the dataset it was pretrained on>")
    run_dir = Path(cfg.run_dir or f"runs/zero_shot/{name}/{domain}/{Path(dataset).name}/seed_{cfg.seed}")
    if (run_dir / RECORDS).exists():
        raise FileExistsError(f"{run_dir / RECORDS} exists; choose another run_dir= or delete that folder")
    pixels = obs_pixel_options(config.get("obs", {"type": "states"}))  # the env it learnt for
    options = {"backend": cfg.backend, "device": device, "pixels": pixels}
    env = make_env(domain, cfg.eval_episodes, seed=cfg.seed, **options)
    sampler = build_sampler(dataset, env, domain, pixels)
    agent = build_agent(config["agent"], env, env.device)
    agent.load_state_dict(snapshot["agent"])
    agent.eval()
    base = {
        "agent": name,
        "domain": domain,
        "seed": cfg.seed,
        "phase": "zero_shot",
        "frames": 0,
        "snapshot_frames": snapshot["frames"],
        "snapshot_seed": snapshot["seed"],
        "pretrain_frames": snapshot.get("pretrain_frames"),
        "finetune_frames": 0,
        "extra_frames": 0,
        "obs": "states" if pixels is None else "pixels",
        "dataset": Path(dataset).name,
        "dataset_agent": sampler.meta.get("agent"),
    }
    if agent.infers_task:
        tasks = list(env.task_names)
        latents = task_latents(
            agent, sampler, tasks, inference_rows(sampler, cfg.inference_samples, cfg.seed)
        )
        base |= {"mode": "zero-shot", "inference_samples": int(cfg.inference_samples)}
    elif getattr(agent, "task", None) is not None:
        tasks, latents = [agent.task], {}
        base |= {"mode": "offline", "inference_samples": 0}
    else:
        raise ValueError(
            f"agent={name} neither infers a task's z nor trained on one task; finetune it with finetune.py"
        )
    written = []
    for index, task in enumerate(tasks):
        if task in latents:
            agent.fix_latent(latents[task])
        returns = evaluate(env, agent, seed=cfg.seed * 100_003 + index)
        score = normalised_score(task, returns[task]) if task in EXPERT_SCORES else float("nan")
        record = base | {"task": task, "return": returns[task], "normalised_score": score}
        append_record(run_dir / RECORDS, record)
        written.append(record)
        print(f"[zero-shot] {name} {task}: return {returns[task]:.1f} ({base['mode']})")
    if cfg.goals and agent.infers_task:
        goal_env = make_env(domain, cfg.goals, seed=cfg.seed + 1, **options)
        rows = inference_rows(sampler, cfg.goals, cfg.seed + 1)
        goals = sampler.gather(rows)
        results = reach_goals(
            goal_env, agent, goals["observation"], goals.get("state", goals["observation"]), cfg.seed + 1
        )
        write_atomically(
            run_dir / "goals.json", json.dumps({"dataset_rows": rows.tolist(), "goals": results}, indent=1)
        )
        mean = sum(r["final_distance"] / max(r["start_distance"], 1e-9) for r in results) / len(results)
        print(
            f"[zero-shot] {name} goal reaching: final / start distance {mean:.3f} over {len(results)} goals"
        )
    return written
