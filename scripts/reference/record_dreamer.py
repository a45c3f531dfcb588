"""Record reference fixtures of Dreamer + Plan2Explore's update from mazpie/mastering-urlb
(issue 18).

Builds the reference's ``Plan2Explore`` agent (``agent/plan2explore.py`` on ``agent/dreamer.py``
and ``agent/dreamer_utils.py``) in its pixel configuration (``configs/dreamer.yaml``,
``configs/dmc_pixels.yaml``, ``agent/plan2explore.yaml``) with every size shrunk, runs a few
``agent.update(data, step)`` calls on fixed sequences of 64x64 frames and writes
``tests/reference/data/plan2explore/plan2explore.npz`` (no pickles) and ``.json`` (the
manifest). ``tests/reference/test_dreamer_parity.py`` replays them against
``agents.dreamer.DreamerAgent`` with ``agents.plan2explore.Plan2Explore``. Dreamer on states
has no reference (mastering-urlb is pixel only): the pieces it shares (RSSM, KL balance,
imagination, actor, critic, slow critic) are checked here through the pixel configuration.

One update of the reference is: the world-model step (KL balance with free nats, the frame
decoder's and the reward head's log-likelihoods, one clipped Adam step with weight decay),
the disagreement ensemble's step on the posterior transitions, then imagination from every
posterior state, the intrinsic reward of each imagined transition normalised by its running
magnitude, the lambda-return on the slow critic, the actor step through the dynamics and the
critic step, and the slow critic's copy on schedule. Recorded per fixture (npz keys):

* ``init/<name>``: every entry of the agent's state_dict, under the reference's names;
* ``batch<i>/<field>``: update ``i``'s replay chunk (``observation`` uint8 (B, T, 3, 64, 64),
  ``action`` (B, T, A), ``reward`` (B, T, 1), ``is_first``, ``is_terminal`` (B, T));
* ``update<i>/draw<j>``: every random tensor drawn inside the update, in order: categorical
  latent samples (``torch.multinomial`` in ``OneHotCategorical.sample``), the actor's standard
  normals (``utils._standard_normal`` in its ``TruncatedNormal``) and the RSSM's ensemble index
  (``torch.randint``; always 0 with one member); the recorder checks that the global generator
  advanced by exactly these draws;
* ``update<i>/metric/<name>``: every metric ``update`` returned;
* ``update<i>/grad_norm/<call>``: the gradient norm each clipped step saw (``model``,
  ``disagreement``, ``actor``, ``critic``), and ``model_without_reward_head``: the model's
  without the reward head, which the reference trains on the batch's extrinsic reward from
  stop-gradient features while pretraining and ours does not train;
* ``update<i>/imagination/<name>``: the imagined rollout the actor and critic trained on
  (``feat`` (H+1, N, F), ``action``, ``reward`` after normalisation, ``weight``, ``target``);
* ``update<i>/param/<name>``: every state_dict entry after the update;
* ``update<i>/state/<name>``: the reward normaliser's magnitude and the slow-critic counter.

Run by hand, never by CI, from the repository root with the project's venv (torch 2.13,
numpy, omegaconf)::

    git clone https://github.com/mazpie/mastering-urlb /work/ref/mastering-urlb
    git -C /work/ref/mastering-urlb checkout 6908038cd7a109397abd17047c0f8ba2d309647d
    nice -n 10 python scripts/reference/record_dreamer.py --mastering-urlb /work/ref/mastering-urlb

The checkout stays outside the project and runs unmodified (no patch). Its ``precision: 16``
(CUDA autocast and gradient scaling) is off on the CPU; the fixture sets ``precision: 32``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from common import reference_caller
from omegaconf import OmegaConf
from record_urlb import OUT as DATA
from record_urlb import Draw, Reference, audit_rng, prepare, scalar

AGENT_CODE = "/agent/"  # where the reference's own code lives (reference_caller)

OUT = DATA / "plan2explore"
REFERENCE = Reference(
    "https://github.com/mazpie/mastering-urlb", "6908038cd7a109397abd17047c0f8ba2d309647d", None
)
NAME = "plan2explore"

# Small sizes: 64x64 frames (the decoder's), CNN depth 2 (embedding 64), 16-wide RSSM and heads,
# 3 sequences of 5 frames, horizon 4, and a slow-critic copy every 2 updates so that three
# updates see two copies. lr 1e-3 and weight decay 1e-2 (theirs: 3e-4 / 8e-5 and 1e-6) move
# every weight, and decay it visibly, well beyond the tests' 1e-5 tolerance.
SEED, UPDATES = 0, 3
ACTION_DIM, SEQUENCES, LENGTH = 2, 3, 5
OVERRIDES = dict(
    device="cpu",
    precision=32,
    imag_horizon=4,
    slow_target_update=2,
    rssm=dict(hidden=16, deter=16, stoch=4, discrete=4),
    reward_head=dict(units=16),
    actor=dict(units=16),
    critic=dict(units=16),
    encoder=dict(cnn_depth=2),
    decoder=dict(cnn_depth=2),
    model_opt=dict(lr=1e-3, wd=1e-2),
    actor_opt=dict(lr=1e-3, wd=1e-2),
    critic_opt=dict(lr=1e-3, wd=1e-2),
)


# -- the reference ------------------------------------------------------------------------------
def reference_config(root: Path):
    """Their pixel pretraining config: configs/dreamer.yaml, then configs/dmc_pixels.yaml (both
    ``@package _global_``), then the fixture's sizes."""
    base = OmegaConf.load(root / "configs" / "dreamer.yaml")
    pixels = OmegaConf.load(root / "configs" / "dmc_pixels.yaml")
    pixels = OmegaConf.create({k: v for k, v in pixels.items() if "." not in k})  # replay.capacity
    return OmegaConf.merge(base, pixels, OVERRIDES)


def build_reference(root: Path):
    from agent.plan2explore import Plan2Explore

    agent_cfg = OmegaConf.load(root / "agent" / "plan2explore.yaml")
    kwargs = {k: agent_cfg[k] for k in ("grad_heads", "reward_norm", "actor_ent")}
    box = lambda *shape: SimpleNamespace(shape=shape)  # noqa: E731
    obs_space = {
        "observation": box(3, 64, 64),
        "reward": box(),
        "is_first": box(),
        "is_last": box(),
        "is_terminal": box(),
    }
    cfg = reference_config(root)
    return (
        cfg,
        kwargs,
        Plan2Explore(name=NAME, cfg=cfg, obs_space=obs_space, act_spec=box(ACTION_DIM), **kwargs),
    )


# -- recording randomness and the clipped steps --------------------------------------------------
@contextlib.contextmanager
def recording(draws: list[Draw]):
    """Record ``torch.multinomial`` (categorical latents), ``utils._standard_normal`` (the
    actor's TruncatedNormal) and ``torch.randint`` (the RSSM's ensemble member)."""
    ref_utils = sys.modules["utils"]
    standard_normal, multinomial, randint = ref_utils._standard_normal, torch.multinomial, torch.randint

    def recorded_standard_normal(shape, dtype, device):
        value = standard_normal(shape, dtype=dtype, device=device)
        redraw = lambda: standard_normal(shape, dtype=dtype, device=device)  # noqa: E731
        draws.append(Draw("standard_normal", value.clone(), reference_caller(AGENT_CODE), redraw))
        return value

    def recorded_multinomial(probs, *args, **kwargs):
        frozen = probs.detach().clone()
        value = multinomial(probs, *args, **kwargs)
        redraw = lambda: multinomial(frozen, *args, **kwargs)  # noqa: E731
        draws.append(Draw("multinomial", value.clone(), reference_caller(AGENT_CODE), redraw))
        return value

    def recorded_randint(*args, **kwargs):
        value = randint(*args, **kwargs)
        draws.append(
            Draw("randint", value.clone(), reference_caller(AGENT_CODE), lambda: randint(*args, **kwargs))
        )
        return value

    ref_utils._standard_normal = recorded_standard_normal
    torch.multinomial, torch.randint = recorded_multinomial, recorded_randint
    try:
        yield
    finally:
        ref_utils._standard_normal = standard_normal
        torch.multinomial, torch.randint = multinomial, randint


@contextlib.contextmanager
def recording_grad_norms(agent, norms: dict[str, float]):
    """The gradient norm each of the update's clipped steps saw (``Optimizer.__call__`` clips
    with ``clip_grad_norm_``), named by the parameters it was given; for the model also the
    norm without the reward head."""
    clip = torch.nn.utils.clip_grad_norm_
    owners = {
        "model": {id(p) for p in agent.wm.parameters()},
        "disagreement": {id(p) for p in agent.disagreement.parameters()},
        "actor": {id(p) for p in agent._task_behavior.actor.parameters()},
        "critic": {id(p) for p in agent._task_behavior.critic.parameters()},
    }
    reward_head = {id(p) for p in agent.wm.heads["reward"].parameters()}

    def norm(params) -> float:
        grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
        return float(torch.cat(grads).norm()) if grads else 0.0

    def recorded(params, max_norm, *args, **kwargs):
        params = list(params)
        ids = {id(p) for p in params}
        (name,) = [name for name, owned in owners.items() if owned == ids]
        norms[name] = norm(params)
        if name == "model":
            norms["model_without_reward_head"] = norm([p for p in params if id(p) not in reward_head])
        return clip(params, max_norm, *args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = recorded
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = clip


@contextlib.contextmanager
def recording_imagination(agent, out: dict[str, torch.Tensor]):
    """The imagined sequence the behaviour losses read (``ActorCritic.target``'s input, after
    the reward's normalisation) and the lambda-returns."""
    behaviour = agent._task_behavior
    target = behaviour.target

    def recorded(seq):
        value, metrics = target(seq)
        out.update({k: seq[k].detach().clone() for k in ("feat", "action", "reward", "weight")})
        out["target"] = value.detach().clone()
        return value, metrics

    behaviour.target = recorded
    try:
        yield
    finally:
        del behaviour.target


# -- batches ------------------------------------------------------------------------------------
def make_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One replay chunk as mastering-urlb's replay yields it: every chunk starts a sequence
    (``is_first[:, 0]``, its action zeros); smooth frames (8x8 blocks of random colour) keep
    the fixture small."""
    blocks = rng.integers(0, 256, (SEQUENCES, LENGTH, 3, 8, 8), dtype=np.uint8)
    frames = blocks.repeat(8, axis=3).repeat(8, axis=4)
    action = rng.uniform(-1.0, 1.0, (SEQUENCES, LENGTH, ACTION_DIM)).astype(np.float32)
    action[:, 0] = 0.0
    is_first = np.zeros((SEQUENCES, LENGTH), bool)
    is_first[:, 0] = True
    return dict(
        observation=frames,
        action=action,
        reward=rng.normal(size=(SEQUENCES, LENGTH, 1)).astype(np.float32),
        is_first=is_first,
        is_terminal=np.zeros((SEQUENCES, LENGTH), bool),
    )


def state_dict(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


def extra_state(agent) -> dict[str, torch.Tensor]:
    behaviour = agent._task_behavior
    return {"rewnorm.mag": behaviour.rewnorm.mag.clone(), "updates": torch.tensor(behaviour._updates)}


# -- recording ----------------------------------------------------------------------------------
def record(root: Path, command: str) -> None:
    torch.manual_seed(SEED)
    cfg, kwargs, agent = build_reference(root)
    rng = np.random.default_rng(SEED)
    arrays = {f"init/{k}": v for k, v in state_dict(agent).items()}
    updates = []
    for index in range(UPDATES):
        batch = make_batch(rng)
        arrays |= {f"batch{index}/{k}": v for k, v in batch.items()}
        data = {k: torch.as_tensor(v) for k, v in batch.items()}
        draws: list[Draw] = []
        norms: dict[str, float] = {}
        imagination: dict[str, torch.Tensor] = {}
        before = torch.get_rng_state()
        with recording(draws), recording_grad_norms(agent, norms), recording_imagination(agent, imagination):
            _, metrics = agent.update(data, index)
        audit_rng(before, draws)
        prefix = f"update{index}"
        arrays |= {f"{prefix}/metric/{k}": np.float64(scalar(torch.as_tensor(v))) for k, v in metrics.items()}
        arrays |= {f"{prefix}/grad_norm/{k}": np.float64(v) for k, v in norms.items()}
        arrays |= {f"{prefix}/imagination/{k}": v for k, v in imagination.items()}
        arrays |= {f"{prefix}/param/{k}": v for k, v in state_dict(agent).items()}
        arrays |= {f"{prefix}/state/{k}": v for k, v in extra_state(agent).items()}
        arrays |= {f"{prefix}/draw{j}": d.value for j, d in enumerate(draws)}
        updates.append(
            dict(
                step=index,
                metrics=sorted(metrics),
                draws=[
                    dict(key=f"{prefix}/draw{j}", kind=d.kind, shape=list(d.value.shape), caller=d.caller)
                    for j, d in enumerate(draws)
                ],
            )
        )
    arrays = {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in arrays.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{NAME}.npz", **arrays)
    manifest = dict(
        agent=NAME,
        repository=REFERENCE.url,
        commit=REFERENCE.commit,
        reference_class="agent.plan2explore.Plan2Explore",
        patch=None,
        patch_sha256=None,
        command=command,
        generator="scripts/reference/record_dreamer.py",
        seed=SEED,
        versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__),
        sizes=dict(
            frames=[3, 64, 64],
            action_dim=ACTION_DIM,
            sequences=SEQUENCES,
            length=LENGTH,
            embed_dim=int(agent.wm.embed_dim),
            feature_dim=int(agent.wm.inp_size),
            updates=UPDATES,
        ),
        hyperparameters=OmegaConf.to_container(cfg)
        | {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in kwargs.items()},
        reference_constants=dict(
            members=len(agent.disagreement.ensemble),
            disagreement_hidden=int(agent.hidden_dim),
            reward_norm=OmegaConf.to_container(kwargs["reward_norm"]),
        ),
        batch_fields=list(make_batch(np.random.default_rng(0))),
        parameters=sorted(k.removeprefix("init/") for k in arrays if k.startswith("init/")),
        updates=updates,
    )
    (OUT / f"{NAME}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = (OUT / f"{NAME}.npz").stat().st_size
    print(f"{NAME}: {UPDATES} updates, {len(manifest['parameters'])} tensors, {size / 1e3:.0f} kB")
    if size > 2e6:
        raise SystemExit(f"{NAME}.npz exceeds 2 MB: shrink sizes or updates")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mastering-urlb", type=Path, required=True, help="checkout of mazpie/mastering-urlb"
    )
    args = parser.parse_args()
    root = args.mastering_urlb.resolve()
    prepare(root, REFERENCE)
    sys.path.insert(0, str(root))
    torch.set_num_threads(1)
    record(root, "python scripts/reference/record_dreamer.py --mastering-urlb <checkout>")


if __name__ == "__main__":
    main()
