"""What skill researchers measure: deterministic skill rollouts and what is read off them.

* :func:`skill_rollouts` runs one world per skill with the skill held fixed and the policy
  deterministic, and records the agent's position (``Domain.position``: torso x-y for
  quadruped, torso x-z for the planar walker, hand x-y for jaco) and every task's return;
* :func:`coverage` counts the distinct ``cell x cell`` cells those positions visit
  (METRA's state-coverage metric: 48 skills, 1x1 cells);
* :func:`plot_trajectories` draws the rollouts coloured by skill (PNG, and the RGB array
  for TensorBoard); :func:`skill_video` writes a few skills side by side as an MP4;
* :func:`goal_reaching` is METRA's zero-shot goal reaching,
  ``z = (phi(g) - phi(s)) / ||phi(g) - phi(s)||`` toward goals drawn in the plane;
* :func:`select_skill` is the finetuning rule of skill models that fix one skill: the
  candidate whose rollout scores best on the task's reward;
* :class:`SkillEvaluator` runs the coverage and picture at every pretraining evaluation.

Rollouts use their own env (``num_envs`` = number of skills, reseeded every time), so they
never disturb the training env, and depend only on the agent and the seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from envs import make_env


def _skill_model(agent):
    model = getattr(agent, "reward_model", None)
    if model is None or not getattr(model, "skill_dim", 0):
        raise ValueError(
            f"{type(agent).__name__} has no skills: skill metrics need a skill agent (e.g. metra, diayn)"
        )
    return model


@torch.no_grad()
def skill_rollouts(env, agent, skills: torch.Tensor, seed: int, steps: int | None = None) -> dict:
    """Roll out world ``k`` with ``skills[k]`` for ``steps`` env steps (default: one episode),
    acting deterministically, from a reset seeded with ``seed``.

    Returns ``positions`` ``(K, steps + 1, 2)`` and ``task_returns`` ``(K, T)`` (tasks in
    ``env.task_names`` order), both on the CPU.
    """
    steps = env.episode_steps if steps is None else steps
    if len(skills) != env.num_envs:
        raise ValueError(f"{len(skills)} skills for an env of {env.num_envs} worlds: use one world per skill")
    if not 0 < steps <= env.episode_steps:
        raise ValueError(f"steps must be in 1..{env.episode_steps} (one episode); got {steps}")
    td = env.reset(seed=seed)
    state = agent.init_state(env.num_envs, env.device)
    state["skill"] = skills.to(env.device, torch.float32)
    positions = [td["position"]]
    returns = torch.zeros(env.num_envs, len(env.task_names), device=env.device)
    for _ in range(steps):
        td = env.step(agent.act(td["observation"], state, explore=False))
        positions.append(td["next_position"])
        returns += td["task_reward"]
    return {"positions": torch.stack(positions, dim=1).cpu(), "task_returns": returns.cpu()}


def coverage(positions: torch.Tensor, cell: float = 1.0) -> int:
    """Distinct ``cell x cell`` cells of the plane visited by ``positions`` ``(..., 2)``."""
    if positions.shape[-1] != 2 or cell <= 0:
        raise ValueError(
            f"coverage needs (..., 2) positions and cell > 0; got {tuple(positions.shape)}, {cell}"
        )
    cells = torch.floor(positions.reshape(-1, 2).double() / cell).long()
    return int(torch.unique(cells, dim=0).shape[0])


def skill_colours(skills: torch.Tensor) -> np.ndarray:
    """RGB in [0, 1] per skill: one-hot skills by index (tab10/tab20), continuous skills by
    the direction of their first two coordinates (hue) and its length (saturation)."""
    import matplotlib

    skills = skills.detach().cpu().float()
    one_hot = bool(((skills == 0) | (skills == 1)).all()) and bool((skills.sum(1) == 1).all())
    if one_hot:
        index = skills.argmax(1).numpy()
        cmap = matplotlib.colormaps["tab10" if skills.shape[1] <= 10 else "tab20"]
        return np.array([cmap(i % cmap.N)[:3] for i in index])
    xy = skills[:, :2] if skills.shape[1] >= 2 else torch.cat([skills, torch.zeros_like(skills)], 1)
    hue = (torch.atan2(xy[:, 1], xy[:, 0]) / (2 * math.pi)) % 1.0
    saturation = (xy.norm(dim=1) / xy.norm(dim=1).max().clamp_min(1e-9)).clamp(0.25, 1.0)
    hsv = torch.stack([hue, saturation, torch.full_like(hue, 0.85)], dim=1).numpy()
    return matplotlib.colors.hsv_to_rgb(hsv)


def plot_trajectories(
    positions: torch.Tensor,
    skills: torch.Tensor,
    path: str | Path | None = None,
    axes: tuple[str, str] = ("x", "y"),
    title: str = "",
    cell: float | None = 1.0,
    goals: torch.Tensor | None = None,
) -> np.ndarray:
    """Draw ``positions`` ``(K, T, 2)`` coloured by skill (and ``goals`` ``(K, 2)`` as
    crosses of the same colour); save a PNG at ``path`` if given and return the picture
    as ``(H, W, 3)`` uint8 (for TensorBoard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = skill_colours(skills)
    data = positions.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    try:
        for trajectory, colour in zip(data, colours, strict=True):
            ax.plot(trajectory[:, 0], trajectory[:, 1], color=colour, linewidth=1.0, alpha=0.9)
            ax.plot(trajectory[-1, 0], trajectory[-1, 1], "o", color=colour, markersize=3)
        ax.plot(data[:, 0, 0], data[:, 0, 1], "k+", markersize=6, label="start")
        points = data.reshape(-1, 2)
        if goals is not None:
            targets = goals.detach().cpu().numpy()
            ax.scatter(targets[:, 0], targets[:, 1], c=colours, marker="x", s=30)
            points = np.concatenate([points, targets])
        low, high = points.min(0), points.max(0)
        centre, half = (low + high) / 2, max(float((high - low).max()) / 2 * 1.1, 2.0)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_aspect("equal")
        if cell:
            ax.set_xticks(
                np.arange(math.floor(centre[0] - half), math.ceil(centre[0] + half) + 1, cell), minor=True
            )
            ax.set_yticks(
                np.arange(math.floor(centre[1] - half), math.ceil(centre[1] + half) + 1, cell), minor=True
            )
            ax.grid(which="minor", linewidth=0.3, alpha=0.4)
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)
    return rgb


@torch.no_grad()
def skill_video(
    env,
    agent,
    skills: torch.Tensor,
    path: str | Path,
    seed: int,
    steps: int | None = None,
    height: int = 120,
    width: int = 160,
    every: int = 2,
) -> Path:
    """Write ``skills`` (one world each, side by side) as an MP4, every ``every``-th step."""
    from envs.render import FrameRenderer, tile, write_mp4

    steps = env.episode_steps if steps is None else steps
    if len(skills) != env.num_envs:
        raise ValueError(f"{len(skills)} skills for an env of {env.num_envs} worlds")
    renderer = FrameRenderer(env, height=height, width=width)
    try:
        td = env.reset(seed=seed)
        state = agent.init_state(env.num_envs, env.device)
        state["skill"] = skills.to(env.device, torch.float32)
        frames = [tile(renderer.render())]
        for step in range(1, steps + 1):
            td = env.step(agent.act(td["observation"], state, explore=False))
            if step % every == 0:
                frames.append(tile(renderer.render()))
    finally:
        renderer.close()
    return write_mp4(frames, path, fps=1.0 / (env.control_timestep * every))


@torch.no_grad()
def goal_reaching(
    env,
    agent,
    goals: torch.Tensor,
    seed: int,
    steps: int | None = None,
    radii: tuple[float, ...] = (3.0, 1.0),
) -> dict:
    """METRA's zero-shot goal reaching: world ``k`` heads for ``goals[k]`` (a point of the
    x-y plane) with ``z = (phi(g) - phi(s)) / ||phi(g) - phi(s)||`` recomputed every step.
    The goal state is the world's reset observation with its pose's position columns set
    to ``g`` (the env must observe the pose, ``make_env(observe_pose=True)``).

    Returns per-goal ``final_distance`` and ``min_distance`` ``(K,)``, the paths
    ``positions`` ``(K, steps + 1, 2)`` and the success rates ``success_within_<r>`` (final
    distance <= r) as floats.
    """
    model = _skill_model(agent)
    if not hasattr(model, "goal_skill"):
        raise ValueError(f"{type(model).__name__} has no goal_skill: zero-shot goal reaching is METRA's")
    domain = env.domain
    if not env.observe_pose or domain.pose_position != (0, 1):
        raise ValueError(
            "goal reaching needs x-y goals in the observation: a domain moving in the x-y plane "
            "(quadruped) with observe_pose=true"
        )
    steps = env.episode_steps if steps is None else steps
    goals = goals.to(env.device, torch.float32)
    td = env.reset(seed=seed)
    goal_observation = td["observation"].clone()
    goal_observation[:, domain.obs_dim : domain.obs_dim + 2] = goals
    state = agent.init_state(env.num_envs, env.device)
    position = td["position"]
    closest = (position - goals).norm(dim=1)
    path = [position]
    for _ in range(steps):
        state["skill"] = model.goal_skill(td["observation"], goal_observation)
        td = env.step(agent.act(td["observation"], state, explore=False))
        position = td["next_position"]
        path.append(position)
        closest = torch.minimum(closest, (position - goals).norm(dim=1))
    final = (position - goals).norm(dim=1).cpu()
    result = {"final_distance": final, "min_distance": closest.cpu(), "positions": torch.stack(path, 1).cpu()}
    for radius in radii:
        result[f"success_within_{radius:g}"] = float((final <= radius).float().mean())
    return result


def sample_goals(num: int, extent: float, seed: int) -> torch.Tensor:
    """``num`` goals uniform in the square ``[-extent, extent]^2``."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(num, 2, generator=generator) * 2 - 1) * extent


@torch.no_grad()
def select_skill(
    env, agent, candidates: torch.Tensor, task: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate skill whose deterministic rollout (one episode, one world each) earns the
    highest return on ``task``; returns it and every candidate's return."""
    returns = skill_rollouts(env, agent, candidates, seed)["task_returns"][:, env.task_names.index(task)]
    return candidates[int(returns.argmax())], returns


class SkillEvaluator:
    """Coverage and a trajectory picture of a skill agent, run at each pretraining evaluation.

    Args:
        domain: the pretraining domain.
        rollouts: skills rolled out (METRA: 48).
        cell: coverage cell size (METRA: 1).
        steps: rollout length in env steps (default: one episode).
        backend, device, seed: for the rollout env, which is reseeded with ``seed`` each
            time (the skills too), so evaluations differ only by the agent.
        out_dir: where ``skills_<frames>.png`` and ``coverage.jsonl`` go.
        observe_pose: the agent's observation carries the pose (as its training env's).
        pixels: ``make_env``'s pixel options when the agent sees frames (None: states).
    """

    def __init__(
        self,
        domain: str,
        rollouts: int,
        cell: float,
        steps: int | None,
        backend: str,
        device,
        seed: int,
        out_dir: str | Path,
        observe_pose: bool = False,
        pixels: dict | None = None,
    ):
        self.env = make_env(
            domain,
            rollouts,
            backend=backend,
            device=device,
            seed=seed,
            observe_pose=observe_pose,
            pixels=pixels,
        )
        self.rollouts, self.cell, self.steps, self.seed = rollouts, cell, steps, seed
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.records = self.out_dir / "coverage.jsonl"

    def __call__(self, agent, frame: int, logger) -> dict[str, float]:
        model = _skill_model(agent)
        skills = model.evaluation_skills(self.rollouts, torch.Generator().manual_seed(self.seed))
        result = skill_rollouts(self.env, agent, skills, self.seed, self.steps)
        cells = coverage(result["positions"], self.cell)
        picture = plot_trajectories(
            result["positions"],
            skills,
            self.out_dir / f"skills_{frame}.png",
            axes=self.env.domain.position_axes,
            title=f"{self.rollouts} skills at {frame} frames: {cells} cells of {self.cell:g}",
            cell=self.cell,
        )
        if logger is not None:
            logger.image("skills/trajectories", picture, frame)
        record = {"frames": frame, "coverage": cells, "rollouts": self.rollouts, "cell": self.cell}
        with open(self.records, "a") as f:
            f.write(json.dumps(record) + "\n")
        return {"coverage": float(cells)}
