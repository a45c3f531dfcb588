"""Record reference fixtures of FB's update from its authors' code (issue 20).

Builds the reference's ``FBDDPGAgent`` (facebookresearch/controllable_agent,
``url_benchmark/agent/fb_ddpg.py`` with ``fb_modules.py``) on state observations at small
sizes with a fixed seed and its own defaults otherwise (``preprocess``, ``norm_z``,
``mix_ratio`` 0.5, no ``q_loss``, ``future_ratio`` 0), runs a few updates on fixed random
batches and writes ``tests/reference/data/fb/fb.npz`` (no pickles) and ``fb.json`` (the
manifest). ``tests/reference/test_fb_parity.py`` replays them against ``agents.fb.FBAgent``.

Recorded (npz keys):

* ``init/<name>``: every state_dict entry of the reference's networks (``actor``,
  ``forward_net``, ``backward_net``, ``forward_target_net``, ``backward_target_net``);
* ``batch<i>/<field>``: update ``i``'s batch (``obs``, ``action``, ``discount`` (B, 1), ``next_obs``);
* ``update<i>/draw<j>``: every random value drawn inside the update, in order, with its kind in
  the manifest: ``randn`` (z on the sphere), ``randperm`` (the permutation of the states B mixes
  in), ``uniform`` (numpy's mix mask draws), ``standard_normal`` (the policy's noise, through
  ``utils._standard_normal``), ``randint`` (on pixels, each random shift: ``(B, 1, 1, 2)``, x
  then y, as float); the recorder checks that torch's generator advanced by exactly
  these draws;
* ``update<i>/metric/<name>``: every scalar the update logged;
* ``update<i>/param/<name>``: every state_dict entry after the update.

Run by hand, never by CI, from the repository root with the project's venv (torch, numpy,
dm_env, dm_control, hydra, omegaconf: what the reference's imports need)::

    git clone https://github.com/facebookresearch/controllable_agent /work/ref/controllable_agent
    git -C /work/ref/controllable_agent checkout 5a9950b07f1edcb4bddd04f5819379541793d975
    nice -n 10 python scripts/reference/record_fb.py --root /work/ref/controllable_agent

The checkout stays outside the project; the script applies ``controllable_agent.patch`` there
once (one line: a dataclass default that Python 3.11 refuses at import, ``dmc.py``'s
``TimeStep.physics``, becomes a ``default_factory``; nothing the update runs changes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from record_urlb import OUT as DATA
from record_urlb import Reference, audit_rng, prepare, scalar

OUT = DATA / "fb"
REFERENCE = Reference(
    "https://github.com/facebookresearch/controllable_agent",
    "5a9950b07f1edcb4bddd04f5819379541793d975",
    "controllable_agent.patch",
)
# Small sizes; lr 1e-3 (theirs: 1e-4) so three Adam steps move every weight well clear of the
# test's 1e-5 relative tolerance.
SIZES = dict(
    obs_dim=8, action_dim=3, z_dim=6, hidden_dim=16, feature_dim=8, backward_hidden_dim=12, batch_size=16
)
SEED, LR, UPDATES, DISCOUNT = 0, 1e-3, 3, 0.98
SETTINGS = dict(
    lr_coef=1.0, fb_target_tau=0.01, stddev_schedule="0.2", stddev_clip=0.3, mix_ratio=0.5, ortho_coef=1.0
)


class Batch:
    """What the reference's replay yields: ``EpisodeBatch``'s fields the update reads (the
    others None)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.goal = self.next_goal = self.future_obs = self.future_goal = None
        for name, value in arrays.items():
            setattr(self, name, torch.as_tensor(value))

    def to(self, device):
        return self


class Loader:
    def __init__(self, batch: Batch):
        self.batch = batch

    def sample(self, batch_size: int) -> Batch:
        assert batch_size == len(self.batch.obs)
        return self.batch


def make_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    size, obs_dim = SIZES["batch_size"], SIZES["obs_dim"]
    discount = np.full((size, 1), DISCOUNT)
    discount[rng.choice(size, 2, replace=False)] = 0.0  # a few transitions end their episode
    batch = dict(
        obs=rng.normal(size=(size, obs_dim)),
        action=rng.uniform(-1.0, 1.0, (size, SIZES["action_dim"])),
        discount=discount,
        next_obs=rng.normal(size=(size, obs_dim)),
    )
    return {k: v.astype(np.float32) for k, v in batch.items()}


@contextlib.contextmanager
def recording(draws: list[dict]):
    """Record every random value the reference draws inside an update (module docstring)."""
    utils = sys.modules["url_benchmark.utils"]
    standard_normal, randn, randperm, randint, uniform = (
        utils._standard_normal,
        torch.randn,
        torch.randperm,
        torch.randint,
        np.random.uniform,
    )

    def wrap(kind, function, redraw=True):
        def recorded(*args, **kwargs):
            value = function(*args, **kwargs)
            again = (lambda: function(*args, **kwargs)) if redraw else (lambda: None)
            copy = (
                value.detach().numpy().copy()
                if isinstance(value, torch.Tensor)
                else np.array(value, copy=True)
            )
            draws.append({"kind": kind, "value": copy, "redraw": again})
            return value

        return recorded

    utils._standard_normal = wrap("standard_normal", standard_normal)
    torch.randn, torch.randperm = wrap("randn", randn), wrap("randperm", randperm)
    torch.randint = wrap("randint", randint)  # pixels: the random shifts (RandomShiftsAug)
    np.random.uniform = wrap("uniform", uniform, redraw=False)  # numpy's generator: not torch's
    try:
        yield
    finally:
        utils._standard_normal, torch.randn, torch.randperm, torch.randint, np.random.uniform = (
            standard_normal,
            randn,
            randperm,
            randint,
            uniform,
        )


def state(agent) -> dict[str, torch.Tensor]:
    names = ("actor", "forward_net", "backward_net", "forward_target_net", "backward_target_net")
    return {f"{n}.{k}": v.detach().clone() for n in names for k, v in getattr(agent, n).state_dict().items()}


def record(root: Path, command: str) -> None:
    sys.path.insert(0, str(root))
    from url_benchmark.agent.fb_ddpg import FBDDPGAgent

    torch.manual_seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002  (the reference draws its mix mask from numpy's global generator)
    agent = FBDDPGAgent(
        obs_type="states",
        obs_shape=(SIZES["obs_dim"],),
        action_shape=(SIZES["action_dim"],),
        device="cpu",
        lr=LR,
        hidden_dim=SIZES["hidden_dim"],
        feature_dim=SIZES["feature_dim"],
        backward_hidden_dim=SIZES["backward_hidden_dim"],
        z_dim=SIZES["z_dim"],
        batch_size=SIZES["batch_size"],
        use_tb=True,
        use_wandb=False,
        use_hiplog=False,
        num_expl_steps=0,
        update_encoder=False,
        goal_space=None,
        **SETTINGS,
    )
    record_updates(
        agent,
        make_batch,
        state,
        lambda index: 2 * index,  # update_every_steps=2
        OUT / "fb",
        dict(
            repository=REFERENCE.url,
            commit=REFERENCE.commit,
            patch=f"scripts/reference/{REFERENCE.patch}",
            command=command,
            agent="url_benchmark.agent.fb_ddpg.FBDDPGAgent",
            sizes=SIZES,
            hyperparameters=SETTINGS | dict(lr=LR, discount=DISCOUNT, seed=SEED),
        ),
    )


def record_updates(
    agent, make_batch, state, step, out: Path, manifest: dict, updates: int = UPDATES, seed: int = SEED
) -> None:
    """``updates`` reference updates on fixed batches (``make_batch(rng)``, ``rng`` seeded with
    ``seed``; ``step(index)``): the
    initial parameters, each batch, the draws inside each update, its metrics and the
    parameters after it, as ``out.npz``; ``manifest`` plus the draws' and metrics' names as
    ``out.json`` (FB's and HILP's generators)."""
    arrays = {f"init/{k}": v.numpy() for k, v in state(agent).items()}
    rng = np.random.default_rng(seed)
    recorded = []
    for index in range(updates):
        batch = make_batch(rng)
        arrays |= {f"batch{index}/{k}": v for k, v in batch.items()}
        draws: list[dict] = []
        before = torch.get_rng_state()
        with recording(draws):
            metrics = agent.update(Loader(Batch(batch)), step=step(index))
        audit_rng(before, [_Redraw(d) for d in draws])  # numpy's uniform draws redraw nothing
        keys = []
        for j, draw in enumerate(draws):
            key = f"update{index}/draw{j}"
            arrays[key] = draw["value"]
            keys.append({"key": key, "kind": draw["kind"], "shape": list(draw["value"].shape)})
        arrays |= {f"update{index}/metric/{k}": np.float64(scalar(v)) for k, v in metrics.items()}
        arrays |= {f"update{index}/param/{k}": v.numpy() for k, v in state(agent).items()}
        recorded.append({"draws": keys, "metrics": sorted(metrics)})
    out.parent.mkdir(parents=True, exist_ok=True)
    npz = out.with_suffix(".npz")
    np.savez_compressed(npz, **arrays)
    manifest |= dict(updates=recorded, torch=torch.__version__, python=platform.python_version())
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {npz} ({npz.stat().st_size} bytes) and {out.name}.json")


class _Redraw:
    """A recorded draw for :func:`record_urlb.audit_rng` (which calls ``redraw``)."""

    def __init__(self, draw: dict):
        self.redraw = draw["redraw"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="the controllable_agent checkout")
    args = parser.parse_args()
    prepare(args.root, REFERENCE)
    record(
        args.root.resolve(),
        f"python scripts/reference/record_fb.py --root <checkout at {REFERENCE.commit[:7]}>",
    )


if __name__ == "__main__":
    main()
