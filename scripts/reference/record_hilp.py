"""Record reference fixtures of HILP's zero-shot update from its authors' code (issue 20).

Builds the reference's ``SFAgent`` with ``feature_learner=hilp`` (seohongpark/HILP,
``hilp_zsrl/url_benchmark/agent/sf.py``, PyTorch, on controllable_agent's modules) on state
observations at small sizes with a fixed seed and the README's walker settings otherwise
(``hilp_expectile`` 0.5, ``hilp_discount`` 0.96, ``q_loss`` False, ``feature_type`` state,
``mix_ratio`` 0.5), runs a few updates on fixed random batches (with goals, two of them equal
to their state) and writes ``tests/reference/data/hilp/hilp.npz`` (no pickles) and
``hilp.json``. ``tests/reference/test_hilp_parity.py`` replays them against
``agents.hilp.HILPAgent``.

Recorded as ``record_fb.py`` records FB's (its docstring lists the keys), with the batches'
``future_obs`` (the goals) and the feature learner's state (``feature_learner``: both phis,
their targets and the running mean) among the weights.

Run by hand, never by CI, from the repository root with the project's venv::

    git clone https://github.com/seohongpark/HILP /work/ref/HILP
    git -C /work/ref/HILP checkout be2431bbb75e3b13cbdb1dec11776c42ef0f1593
    nice -n 10 python scripts/reference/record_hilp.py --root /work/ref/HILP

The checkout stays outside the project; the script applies ``hilp.patch`` there once (the same
one-line ``dmc.py`` dataclass default as ``controllable_agent.patch``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from record_fb import record_updates
from record_urlb import OUT as DATA
from record_urlb import Reference, prepare

OUT = DATA / "hilp"
REFERENCE = Reference(
    "https://github.com/seohongpark/HILP", "be2431bbb75e3b13cbdb1dec11776c42ef0f1593", "hilp.patch"
)
SIZES = dict(obs_dim=8, action_dim=3, z_dim=6, hidden_dim=16, feature_dim=8, phi_hidden_dim=12, batch_size=16)
SEED, LR, UPDATES, DISCOUNT = 0, 1e-3, 3, 0.98
SETTINGS = dict(
    lr_coef=5.0,
    sf_target_tau=0.01,
    stddev_schedule="0.2",
    stddev_clip=0.3,
    mix_ratio=0.5,
    hilp_discount=0.96,
    hilp_expectile=0.5,
    q_loss=False,
    feature_type="state",
)
NETWORKS = ("actor", "successor_net", "successor_target_net", "feature_learner")


def make_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    size, obs_dim = SIZES["batch_size"], SIZES["obs_dim"]
    discount = np.full((size, 1), DISCOUNT)
    discount[rng.choice(size, 2, replace=False)] = 0.0
    obs = rng.normal(size=(size, obs_dim))
    future = rng.normal(size=(size, obs_dim))
    future[:2] = obs[:2]  # goals reached: reward 0, no bootstrap
    batch = dict(
        obs=obs,
        action=rng.uniform(-1.0, 1.0, (size, SIZES["action_dim"])),
        discount=discount,
        next_obs=rng.normal(size=(size, obs_dim)),
        future_obs=future,
    )
    return {k: v.astype(np.float32) for k, v in batch.items()}


def state(agent) -> dict[str, torch.Tensor]:
    return {
        f"{n}.{k}": v.detach().clone() for n in NETWORKS for k, v in getattr(agent, n).state_dict().items()
    }


def record(root: Path, command: str) -> None:
    sys.path.insert(0, str(root / "hilp_zsrl"))
    from url_benchmark.agent.sf import SFAgent

    torch.manual_seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002  (the reference draws its mix mask from numpy's global generator)
    agent = SFAgent(
        obs_type="states",
        image_wh=64,
        obs_shape=(SIZES["obs_dim"],),
        action_shape=(SIZES["action_dim"],),
        device="cpu",
        lr=LR,
        hidden_dim=SIZES["hidden_dim"],
        phi_hidden_dim=SIZES["phi_hidden_dim"],
        feature_dim=SIZES["feature_dim"],
        z_dim=SIZES["z_dim"],
        batch_size=SIZES["batch_size"],
        use_tb=True,
        use_wandb=False,
        num_expl_steps=0,
        update_encoder=False,
        feature_learner="hilp",
        **SETTINGS,
    )
    record_updates(
        agent,
        make_batch,
        state,
        lambda index: index,
        OUT / "hilp",
        dict(
            repository=REFERENCE.url,
            commit=REFERENCE.commit,
            patch=f"scripts/reference/{REFERENCE.patch}",
            command=command,
            agent="url_benchmark.agent.sf.SFAgent (feature_learner=hilp)",
            sizes=SIZES,
            hyperparameters=SETTINGS | dict(lr=LR, discount=DISCOUNT, seed=SEED),
        ),
        UPDATES,
        SEED,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, required=True, help="the HILP checkout")
    args = parser.parse_args()
    prepare(args.root, REFERENCE)
    record(
        args.root.resolve(),
        f"python scripts/reference/record_hilp.py --root <checkout at {REFERENCE.commit[:7]}>",
    )


if __name__ == "__main__":
    main()
