"""Record reference fixtures of FB's and HILP's updates on pixels from HILP's zero-shot code
(issue 20).

HILP's ``hilp_zsrl`` (seohongpark/HILP) runs both zero-shot agents on frames: its ``SFAgent``
with ``feature_learner=hilp`` (``agent/sf.py``) and its copy of FB (``agent/fb_ddpg.py``), each
with the random shift and encoder of ``agent/ddpg.py``'s ``make_aug_encoder``.
(controllable_agent's FB builds an encoder but its update never encodes, so it is no reference
for pixels.) This builds both with ``obs_type=pixels`` at small sizes: frame stacks of 3 RGB
frames, 10x10 (the encoder's branch below 48 pixels: a stride-2 then one stride-1 convolution,
32 * 2 * 2 features) with ``image_wh=64``, so the shift's pad is the 64x64 runs' 3; runs a few
updates on fixed uint8 batches and writes ``tests/reference/data/pixels/{hilp,fb}.npz`` (no
pickles) and their ``.json`` manifests. ``tests/reference/test_zero_shot_pixel_parity.py``
replays them against ``agents.hilp.HILPAgent`` and ``agents.fb.FBAgent``.

Recorded as ``record_fb.py`` records (its docstring lists the keys), with the encoder among the
networks and ``randint`` draws (each shift, ``(B, 1, 1, 2)``, x then y) among the draws. The
first row of each batch is one flat grey frame for s and its goal: any shift leaves it as it is,
so HILP's "goal reached" (on the shifted encodings) holds there.

Run by hand, never by CI, from the repository root with the project's venv::

    git clone https://github.com/seohongpark/HILP /work/ref/HILP
    git -C /work/ref/HILP checkout be2431bbb75e3b13cbdb1dec11776c42ef0f1593
    nice -n 10 python scripts/reference/record_zero_shot_pixels.py --root /work/ref/HILP

The checkout stays outside the project; the script applies ``hilp.patch`` there once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from record_fb import record_updates
from record_hilp import REFERENCE
from record_urlb import OUT as DATA
from record_urlb import prepare

OUT = DATA / "pixels"
FRAMES = (9, 10, 10)  # 3 stacked RGB frames
IMAGE_WH = 64  # the pad's side: 64 // 21 = 3
SIZES = dict(action_dim=3, z_dim=6, hidden_dim=16, feature_dim=8, batch_size=16)
SEED, LR, UPDATES, DISCOUNT = 0, 1e-3, 3, 0.98
HILP_SIZES = SIZES | dict(phi_hidden_dim=12)
HILP_SETTINGS = dict(
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
FB_SIZES = SIZES | dict(backward_hidden_dim=12)
FB_SETTINGS = dict(
    lr_coef=1.0, fb_target_tau=0.01, stddev_schedule="0.2", stddev_clip=0.3, mix_ratio=0.5, ortho_coef=1.0
)
NETWORKS = {
    "hilp": ("encoder", "actor", "successor_net", "successor_target_net", "feature_learner"),
    "fb": ("encoder", "actor", "forward_net", "backward_net", "forward_target_net", "backward_target_net"),
}


def make_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    size = SIZES["batch_size"]
    discount = np.full((size, 1), DISCOUNT, dtype=np.float32)
    discount[rng.choice(size, 2, replace=False)] = 0.0

    def frames() -> np.ndarray:
        return rng.integers(0, 256, (size, *FRAMES), dtype=np.uint8)

    obs, future = frames(), frames()
    obs[0] = future[0] = 128  # a flat frame: every shift of it is itself (goal reached)
    return dict(
        obs=obs,
        action=rng.uniform(-1.0, 1.0, (size, SIZES["action_dim"])).astype(np.float32),
        discount=discount,
        next_obs=frames(),
        future_obs=future,
    )


def state_of(networks: tuple[str, ...]):
    def state(agent) -> dict[str, torch.Tensor]:
        return {
            f"{n}.{k}": v.detach().clone()
            for n in networks
            for k, v in getattr(agent, n).state_dict().items()
        }

    return state


def common(sizes: dict) -> dict:
    return dict(
        obs_type="pixels",
        image_wh=IMAGE_WH,
        obs_shape=FRAMES,
        action_shape=(sizes["action_dim"],),
        device="cpu",
        lr=LR,
        hidden_dim=sizes["hidden_dim"],
        feature_dim=sizes["feature_dim"],
        z_dim=sizes["z_dim"],
        batch_size=sizes["batch_size"],
        use_tb=True,
        use_wandb=False,
        num_expl_steps=0,
        update_encoder=True,
    )


def manifest(agent: str, command: str, sizes: dict, settings: dict) -> dict:
    return dict(
        repository=REFERENCE.url,
        commit=REFERENCE.commit,
        patch=f"scripts/reference/{REFERENCE.patch}",
        command=command,
        agent=agent,
        sizes=sizes | dict(frames=list(FRAMES), image_wh=IMAGE_WH, aug_pad=IMAGE_WH // 21),
        hyperparameters=settings | dict(lr=LR, discount=DISCOUNT, seed=SEED),
    )


def record(root: Path, command: str) -> None:
    sys.path.insert(0, str(root / "hilp_zsrl"))
    from url_benchmark.agent.fb_ddpg import FBDDPGAgent
    from url_benchmark.agent.sf import SFAgent

    torch.manual_seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002  (the reference draws its mix mask from numpy's global generator)
    hilp = SFAgent(
        **common(HILP_SIZES),
        phi_hidden_dim=HILP_SIZES["phi_hidden_dim"],
        feature_learner="hilp",
        **HILP_SETTINGS,
    )
    record_updates(
        hilp,
        make_batch,
        state_of(NETWORKS["hilp"]),
        lambda index: index,
        OUT / "hilp",
        manifest(
            "url_benchmark.agent.sf.SFAgent (feature_learner=hilp, obs_type=pixels)",
            command,
            HILP_SIZES,
            HILP_SETTINGS,
        ),
        UPDATES,
        SEED,
    )
    torch.manual_seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002
    fb = FBDDPGAgent(**common(FB_SIZES), backward_hidden_dim=FB_SIZES["backward_hidden_dim"], **FB_SETTINGS)
    record_updates(
        fb,
        make_batch,
        state_of(NETWORKS["fb"]),
        lambda index: index,  # update_every_steps=1
        OUT / "fb",
        manifest("url_benchmark.agent.fb_ddpg.FBDDPGAgent (obs_type=pixels)", command, FB_SIZES, FB_SETTINGS),
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
        f"python scripts/reference/record_zero_shot_pixels.py --root <checkout at {REFERENCE.commit[:7]}>",
    )


if __name__ == "__main__":
    main()
