"""Record the SUPE reference fixture from its authors' code (issue 19).

SUPE's code is JAX (rail-berkeley/supe). This builds, at small sizes with fixed seeds:

* the OPAL VAE (``supe/pretraining/opal.py``, ``OPAL.create`` as ``run_opal.py`` calls it) and
  runs 3 of its ``update_vae`` steps on fixed random segments: the VAE loss (reconstruction,
  KL to the state prior) and one Adam step each;
* the relabelling of prior data (``supe/data/chunk_dataset.py``: ``ChunkDataset.create`` with
  ``label_skills=True`` on a small dataset of two trajectories): each segment's skill
  ``u = to_tanh(encode(...))`` and its discounted return and mask; and the reward model's
  (``supe/agents/rm.py``) prediction ``r_hat(s, u)`` on those segments, the prior data's reward
  in the README's ``offline_relabel_type=pred`` runs;
* the high-level RLPD critic (``supe/agents/sac/sac_learner.py``, ``configs/rlpd_config.py``
  with the README's kitchen flags ``num_min_qs=2, backup_entropy=False, init_temperature=1``)
  and runs 3 of its ``update_critic`` steps: the next actions its actor sampled, the target
  heads it drew, the target ``r + g m min Q'``, the loss, the critic and target weights after.

Writes ``tests/reference/data/supe/supe.npz`` (no pickles) and ``supe.json`` (the manifest);
``tests/reference/test_supe_parity.py`` replays them. The randomness of each step (the VAE's
posterior noise, the critic's next-action noise and head draw) is recomputed here from the
keys the step splits off its own ``rng``, exactly as the step does, and recorded.

Which code: rail-berkeley/supe could not be fetched into this workplace (no stored snapshot).
The fixture is recorded from ``aarontrinh02/MoSAUD`` at its first commit, whose tree is SUPE's
as published (its README is SUPE's; the later MoSAUD commits build on it); the manifest names
that repository and commit. Set up by hand, never by CI, from the repository root::

    git clone https://github.com/aarontrinh02/MoSAUD /work/ref/supe
    git -C /work/ref/supe checkout 290ab0762e5f9080e167f592a952606a7bae1cba
    python3.11 -m venv /work/ref/jaxvenv   # never the project's venv: jax stays out of it
    /work/ref/jaxvenv/bin/pip install jax==0.4.35 jaxlib==0.4.35 flax==0.10.0 optax==0.2.4 \
        distrax==0.1.5 tensorflow-probability==0.25.0 gym==0.23.1 ml_collections matplotlib
    nice -n 10 /work/ref/jaxvenv/bin/python scripts/reference/record_supe.py --supe /work/ref/supe

No patch: the modules used run unmodified on CPU JAX 0.4.35. Only their ``d4rl`` and ``wandb``
imports (visualisation and video logging, never called here) are satisfied with empty
modules. This script imports numpy, not torch: the fixture holds numpy arrays only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import types
from pathlib import Path

import numpy as np
from common import prepare

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = ROOT / "tests" / "reference" / "data" / "supe"
REPOSITORY = "https://github.com/aarontrinh02/MoSAUD"
COMMIT = "290ab0762e5f9080e167f592a952606a7bae1cba"
UPSTREAM = "https://github.com/rail-berkeley/supe"

OBS_DIM, ACTION_DIM, SKILL_DIM, HIDDEN, HORIZON, BATCH, SEED = 6, 3, 4, 16, 4, 8, 0
# lr 1e-3 rather than the reference's 3e-4: three Adam steps then move the weights by a few
# 1e-3, well clear of the tests' 1e-5 relative tolerance (as the URLB fixtures do).
LR = 1e-3
DISCOUNT = 0.99
UPDATES = 3


def flat(params, prefix: str) -> dict[str, np.ndarray]:
    from flax import traverse_util
    from flax.core import unfreeze

    tree = traverse_util.flatten_dict(unfreeze(params), sep="/")
    return {f"{prefix}/{k}": np.asarray(v, dtype=np.float32) for k, v in tree.items()}


def record(root: Path) -> None:
    prepare(root, COMMIT)
    for name in ("d4rl", "wandb"):  # imported by visualisation and video modules only
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, str(root))
    import gym
    import jax
    import jax.numpy as jnp
    from supe.agents.rm import RM
    from supe.agents.sac.sac_learner import SACLearner
    from supe.data.chunk_dataset import ChunkDataset
    from supe.pretraining.opal import OPAL
    from supe.wrappers.tanh_converter import TanhConverter

    from configs import opal_config, rlpd_config, rm_config

    rng = np.random.default_rng(SEED)
    arrays: dict[str, np.ndarray] = {}

    # -- the OPAL VAE ------------------------------------------------------------------------
    config = opal_config.get_config()
    config.lr, config.skill_dim = LR, SKILL_DIM
    config.vae_hidden_dims, config.vae_encoder_hidden_size = (HIDDEN, HIDDEN), HIDDEN
    config.iql.hidden_dims = (HIDDEN, HIDDEN)  # built by OPAL.create, unused here
    opal = OPAL.create(
        config,
        jax.random.PRNGKey(SEED),
        np.zeros(OBS_DIM, np.float32),
        np.zeros(ACTION_DIM, np.float32),
        chunk_size=HORIZON,
    )
    arrays |= flat(opal.train_state.params, "vae/init")
    vae_metrics = []
    for step in range(UPDATES):
        batch = {
            "seq_observations": rng.normal(size=(BATCH, HORIZON, OBS_DIM)).astype(np.float32),
            "seq_actions": rng.uniform(-1, 1, (BATCH, HORIZON, ACTION_DIM)).astype(np.float32),
        }
        _, z_key = jax.random.split(opal.rng)  # update_vae's own split
        noise = jax.random.normal(z_key, (BATCH, SKILL_DIM))
        opal, info = opal.update_vae(batch, aux=True)
        prefix = f"vae/update{step}"
        arrays |= {f"{prefix}/batch/{k}": v for k, v in batch.items()}
        arrays[f"{prefix}/noise"] = np.asarray(noise, np.float32)
        arrays |= {f"{prefix}/metric/{k}": np.float64(v) for k, v in info.items()}
        arrays |= flat(opal.train_state.params, f"{prefix}/param")
        vae_metrics = sorted(info)

    # -- relabelling the prior data ----------------------------------------------------------
    lengths = (13, 11)  # two trajectories; the first ends in a terminal, the second times out
    rows = sum(lengths)
    ends = np.zeros(rows, bool)
    ends[np.cumsum(lengths) - 1] = True
    masks = np.ones(rows, np.float32)
    masks[lengths[0] - 1] = 0.0
    observations = rng.normal(size=(rows + 1, OBS_DIM)).astype(np.float32)
    dataset_dict = {
        "observations": observations[:-1],
        "next_observations": observations[1:],
        "actions": rng.uniform(-1, 1, (rows, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=rows).astype(np.float32),
        "masks": masks,
        "dones": ends.astype(np.float32),
        "traj_ends": ends.astype(np.float32),
    }
    arrays |= {f"relabel/data/{k}": v for k, v in dataset_dict.items()}
    source = types.SimpleNamespace(dataset_dict={k: v.copy() for k, v in dataset_dict.items()})
    chunks = ChunkDataset.create(
        source,
        chunk_size=HORIZON,
        agent=opal,
        tanh_converter=TanhConverter(),
        label_skills=True,
        discount=DISCOUNT,
        batch_size=5,
        skill_dim=SKILL_DIM,
    )
    starts = chunks._allowed_indx
    labelled = chunks.dataset_dict
    arrays["relabel/starts"] = np.asarray(starts, np.int64)
    for key in ("observations", "actions", "rewards", "masks", "next_observations"):
        arrays[f"relabel/{key}"] = np.asarray(labelled[key][starts], np.float32)
    rm_kwargs = dict(rm_config.get_config())
    rm_kwargs.pop("model_cls")
    rm_kwargs |= dict(lr=LR, hidden_dims=(HIDDEN, HIDDEN, HIDDEN))
    skill_space = gym.spaces.Box(-1, 1, (SKILL_DIM,), np.float32)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    rm = RM.create(SEED + 123, obs_space, skill_space, **rm_kwargs)
    arrays |= flat(rm.r_net.params, "relabel/rm")
    arrays["relabel/r_hat"] = np.asarray(
        rm.get_reward(labelled["observations"][starts], labelled["actions"][starts]), np.float32
    )

    # -- the RLPD critic ---------------------------------------------------------------------
    sac_kwargs = dict(rlpd_config.get_config())
    sac_kwargs.pop("model_cls")
    sac_kwargs |= dict(
        actor_lr=LR,
        critic_lr=LR,
        temp_lr=LR,
        hidden_dims=(HIDDEN, HIDDEN, HIDDEN),
        num_min_qs=2,
        backup_entropy=False,
        init_temperature=1.0,
    )
    sac = SACLearner.create(SEED, obs_space, skill_space, **sac_kwargs)
    arrays |= flat(sac.critic.params, "critic/init/critic")
    arrays |= flat(sac.target_critic.params, "critic/init/target")
    for step in range(UPDATES):
        masks = np.ones(BATCH, np.float32)
        masks[rng.choice(BATCH, 2, replace=False)] = 0.0
        batch = {
            "observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (BATCH, SKILL_DIM)).astype(np.float32),
            "rewards": rng.normal(size=BATCH).astype(np.float32),
            "masks": masks,
            "next_observations": rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        }
        # update_critic's own draws, from the same keys it splits off sac.rng
        key, key_rng = jax.random.split(sac.rng)
        dist = sac.actor.apply_fn({"params": sac.actor.params}, batch["next_observations"])
        next_actions = dist.sample(seed=key)
        heads_key, _ = jax.random.split(key_rng)
        heads = jax.random.choice(heads_key, jnp.arange(sac.num_qs), shape=(sac.num_min_qs,), replace=False)
        from supe.networks import subsample_ensemble

        target_params = subsample_ensemble(heads_key, sac.target_critic.params, sac.num_min_qs, sac.num_qs)
        next_q = sac.target_critic.apply_fn(
            {"params": target_params}, batch["next_observations"], next_actions
        )
        target = batch["rewards"] + sac.discount * batch["masks"] * next_q.min(axis=0)
        sac, info = sac.update_critic(batch)
        prefix = f"critic/update{step}"
        arrays |= {f"{prefix}/batch/{k}": v for k, v in batch.items()}
        arrays[f"{prefix}/next_actions"] = np.asarray(next_actions, np.float32)
        arrays[f"{prefix}/heads"] = np.asarray(heads, np.int64)
        arrays[f"{prefix}/target"] = np.asarray(target, np.float32)
        arrays |= {f"{prefix}/metric/{k}": np.float64(v) for k, v in info.items()}
        arrays |= flat(sac.critic.params, f"{prefix}/param/critic")
        arrays |= flat(sac.target_critic.params, f"{prefix}/param/target")

    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "supe.npz", **arrays)
    import flax
    import optax

    manifest = dict(
        agent="supe",
        repository=REPOSITORY,
        commit=COMMIT,
        upstream=UPSTREAM,
        upstream_note=(
            "rail-berkeley/supe could not be fetched here; recorded from the first commit of "
            "aarontrinh02/MoSAUD, whose tree is SUPE's as published (README and code)"
        ),
        reference_classes=[
            "supe.pretraining.opal.OPAL",
            "supe.data.chunk_dataset.ChunkDataset",
            "supe.agents.rm.RM",
            "supe.agents.sac.sac_learner.SACLearner",
        ],
        patch=None,
        command="python scripts/reference/record_supe.py --supe <checkout>",
        generator="scripts/reference/record_supe.py",
        seed=SEED,
        versions=dict(
            python=platform.python_version(),
            jax=jax.__version__,
            flax=flax.__version__,
            optax=optax.__version__,
            numpy=np.__version__,
        ),
        sizes=dict(
            obs_dim=OBS_DIM,
            action_dim=ACTION_DIM,
            skill_dim=SKILL_DIM,
            hidden=HIDDEN,
            horizon=HORIZON,
            batch=BATCH,
        ),
        vae=dict(
            config={k: v for k, v in config.to_dict().items() if k != "iql"},
            updates=UPDATES,
            metrics=vae_metrics,
        ),
        relabel=dict(discount=DISCOUNT, trajectory_lengths=list(lengths), to_tanh_epsilon=1e-5),
        critic=dict(
            config={k: list(v) if isinstance(v, tuple) else v for k, v in sac_kwargs.items()}, updates=UPDATES
        ),
    )
    (OUT / "supe.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    size = (OUT / "supe.npz").stat().st_size
    print(f"supe: {len(arrays)} arrays, {size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--supe", type=Path, required=True, help="checkout of SUPE's code (see the docstring)"
    )
    args = parser.parse_args()
    record(args.supe.resolve())


if __name__ == "__main__":
    main()
