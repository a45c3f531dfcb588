"""Record reference fixtures of METRA's update from its authors' code (issue 18).

Builds the reference's METRA (seohongpark/METRA, ``iod/metra.py`` on garage's SAC) on state
observations, and on pixels (``metra_pixels``: ``--encoder 1``, where the policy, phi and each
Q function are wrapped in ``WithEncoder`` with an ``Encoder`` of their own), at small sizes with
a fixed seed, exactly as its ``tests/main.py`` builds it (the same module classes,
initialisers and optimisers; only the sizes are shrunk: on pixels one 46x46 RGB frame and
``CNN(cnn_depth=2)`` in each ``Encoder``, theirs 64x64 x 3 frames and depth 48), runs a
few updates on fixed random batches and writes ``tests/reference/data/metra/<name>.npz`` (no
pickles) and ``<name>.json`` (the manifest). ``tests/reference/test_metra_parity.py``
replays them against ``agents.sac.SACAgent`` with ``agents.metra.METRA``.

One update is the body of ``METRA._train_components``: ``_optimize_te`` (the representation
loss with the dual constraint, then the dual lambda step), ``_update_rewards`` (the reward
with the updated phi) and ``_optimize_op`` (SAC's critic, actor and temperature steps and the
target networks). Recorded per fixture (npz keys):

* ``init/<name>``: every state_dict entry of the reference's modules (``option_policy``,
  ``traj_encoder``, ``qf1``, ``qf2``, ``target_qf1``, ``target_qf2``, ``log_alpha``,
  ``dual_lam``) under the reference's names;
* ``batch<i>/<field>``: update ``i``'s batch as the reference's replay yields it (``obs``,
  ``next_obs``, ``actions``, ``dones`` (B,), ``options``, ``next_options``);
* ``update<i>/draw<j>``: every random tensor drawn inside the update, in order (the policy's
  standard normal noise, through ``torch.distributions.normal._standard_normal``; the
  recorder checks that the global generator advanced by exactly these draws);
* ``update<i>/metric/<name>``: every scalar the update logged (``tensors``);
* ``update<i>/reward``: the reward the critic trained on (recomputed with the updated phi);
* ``update<i>/param/<name>``: every state_dict entry after the update.

Run by hand, never by CI, from the repository root with the project's venv (torch 2.13,
numpy, scipy)::

    git clone https://github.com/seohongpark/METRA /work/ref/METRA
    git -C /work/ref/METRA checkout e08e76290ca7db7ecd0b4a0752383a17a7a536e4
    nice -n 10 python scripts/reference/record_metra.py --metra /work/ref/METRA

(A partial checkout is enough: ``git checkout <commit> -- iod garagei garaged/src dowel
dowel_wrapper.py global_context.py``; the repository's large assets are never read.)
The checkout stays outside the project and runs unmodified (no patch): METRA's update
imports garage, garagei, dowel and plotting libraries it never calls during an update;
:func:`stub_unused_imports` puts empty modules in their place (listed there) and lets the
real garage modules the update runs load from the checkout (``garage.torch`` modules and
distributions, garagei's policy, Q function, optimiser wrapper and parameter module).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.machinery
import json
import platform
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from common import git, reference_caller
from record_urlb import OUT as DATA
from record_urlb import Draw, Reference, audit_rng, parameters, scalar
from torch import nn

METRA_CODE = "/iod/"  # where the reference's own code lives (reference_caller)

# Beside the URLB family's fixtures, in a folder of their own.
OUT = DATA / "metra"
REFERENCE = Reference(
    "https://github.com/seohongpark/METRA", "e08e76290ca7db7ecd0b4a0752383a17a7a536e4", None
)

# Small sizes; lr 1e-3 (theirs: 1e-4) so four Adam steps move every weight well clear of the
# tests' 1e-5 relative tolerance.
OBS_DIM, ACTION_DIM, HIDDEN_DIM, BATCH_SIZE = 12, 4, 16, 32
SEED, LR, UPDATES = 0, 1e-3, 4
# The reference's own values (tests/main.py defaults).
SETTINGS = dict(
    alpha=0.01,
    sac_tau=5e-3,
    sac_discount=0.99,
    sac_scale_reward=1.0,
    sac_target_coef=1.0,
    dual_lam=30.0,
    dual_slack=1e-3,
    dual_dist="one",
    dual_reg=1,
    inner=1,
    unit_length=1,
    max_std=float(np.exp(2.0)),
    init_std=1.0,
)


# Fixture name -> the reference's skill settings (--discrete, --dim_option, --encoder).
SPECS = {
    "metra": dict(discrete=0, dim_option=3, encoder=0),
    "metra_discrete": dict(discrete=1, dim_option=4, encoder=0),
    "metra_pixels": dict(discrete=0, dim_option=3, encoder=1),
}
# Pixels: METRA's Encoder reads flat observations of (H, W, C) frames (pixel values in [0, 255]).
PIXEL_SHAPE, CNN_DEPTH, PIXEL_BATCH_SIZE, PIXEL_UPDATES = (46, 46, 3), 2, 8, 3


# -- the reference checkout ---------------------------------------------------------------------
# What the update imports from the checkout: these must be the commit's, unmodified.
UPDATE_SOURCES = ("iod", "garagei", "garaged/src/garage/torch", "global_context.py")


def check_checkout(root: Path) -> None:
    """The checkout is at the fixtures' commit and the files the update runs are unmodified
    (the repository's large assets may be left out of the work tree: they are never read)."""
    head = git(root, "rev-parse", "HEAD").stdout.strip()
    if head != REFERENCE.commit:
        raise SystemExit(f"{root} is at {head}; the fixtures are recorded from {REFERENCE.commit}")
    changed = git(root, "diff", "--name-only", "--diff-filter=MA", "HEAD", "--", *UPDATE_SOURCES).stdout
    if changed.strip():
        raise SystemExit(f"{root} has local changes in what the update runs:\n{changed}")
    missing = [path for path in UPDATE_SOURCES if not (root / path).exists()]
    if missing:
        raise SystemExit(f"{root} lacks {missing}: check them out")


class _Anything:
    """Stands in for loggers the update never writes to."""

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *args, **kwargs):
        return _Anything()


def stub_unused_imports(root: Path) -> None:
    """Empty modules for what METRA's update imports but never runs: ``akro`` (gym spaces),
    ``moviepy``/``sklearn`` (videos, PCA plots), ``dowel``/``dowel_wrapper`` (logging),
    garage's and garagei's package ``__init__`` files (experiment runners, samplers) and
    ``garage.np``; the packages keep their real paths, so every submodule the update does
    run is the checkout's own file."""

    def stub(name, path=None, **attributes):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=path is not None)
        if path is not None:
            module.__path__ = [str(path)]
        module.__dict__.update(attributes)
        sys.modules[name] = module
        return module

    for name in ("akro", "moviepy", "moviepy.editor", "sklearn", "sklearn.decomposition"):
        stub(name)
    sys.modules["moviepy"].editor = sys.modules["moviepy.editor"]
    sys.modules["sklearn"].decomposition = sys.modules["sklearn.decomposition"]
    stub("dowel", tabular=_Anything(), logger=_Anything(), Histogram=object)
    stub("dowel_wrapper", get_tabular=lambda *args: _Anything())
    stub("garage", root / "garaged/src/garage", TrajectoryBatch=object)
    stub("garage.np", root / "garaged/src/garage/np")
    stub("garage.np.algos", root / "garaged/src/garage/np/algos")
    stub("garagei", root / "garagei", log_performance_ex=None)
    sys.path.insert(0, str(root))


# -- building the reference as tests/main.py does -----------------------------------------------
def build_reference(spec: dict):
    from garage.torch.distributions import TanhNormal
    from garagei.torch.modules.gaussian_mlp_module_ex import (
        GaussianMLPIndependentStdModuleEx,
        GaussianMLPTwoHeadedModuleEx,
    )
    from garagei.torch.modules.parameter_module import ParameterModule
    from garagei.torch.optimizers.optimizer_group_wrapper import OptimizerGroupWrapper
    from garagei.torch.policies.policy_ex import PolicyEx
    from garagei.torch.q_functions.continuous_mlp_q_function_ex import ContinuousMLPQFunctionEx
    from garagei.torch.utils import xavier_normal_ex
    from iod.metra import METRA

    dims, skill = [HIDDEN_DIM, HIDDEN_DIM], spec["dim_option"]
    module_obs_dim, with_encoder = OBS_DIM, lambda module: module
    if spec["encoder"]:
        from garagei.torch.modules.with_encoder import CNN, Encoder, WithEncoder

        def make_encoder():  # tests/main.py's make_encoder, its CNN at a smaller depth
            encoder = Encoder(pixel_shape=PIXEL_SHAPE)
            encoder.encoder = CNN(PIXEL_SHAPE[-1], cnn_depth=CNN_DEPTH)
            return encoder

        def with_encoder(module):
            return WithEncoder(encoder=make_encoder(), module=module)

        example = torch.zeros(1, int(np.prod(PIXEL_SHAPE)))
        module_obs_dim = make_encoder()(example).shape[-1]
    policy_q_input_dim = module_obs_dim + skill
    option_policy = PolicyEx(
        name="option_policy",
        option_info={"dim_option": skill},
        module=with_encoder(
            GaussianMLPTwoHeadedModuleEx(
                input_dim=policy_q_input_dim,
                output_dim=ACTION_DIM,
                hidden_sizes=dims,
                layer_normalization=False,
                max_std=SETTINGS["max_std"],
                normal_distribution_cls=TanhNormal,
                output_w_init=functools.partial(xavier_normal_ex, gain=1.0),
                init_std=SETTINGS["init_std"],
            )
        ),
    )
    w_init = nn.init.xavier_uniform_  # get_gaussian_module_construction(const_std=False)
    traj_encoder = GaussianMLPIndependentStdModuleEx(
        input_dim=module_obs_dim,
        output_dim=skill,
        hidden_sizes=dims,
        hidden_nonlinearity=torch.relu,
        hidden_w_init=w_init,
        output_w_init=w_init,
        std_hidden_sizes=dims,
        std_hidden_nonlinearity=torch.relu,
        std_hidden_w_init=w_init,
        std_output_w_init=w_init,
        init_std=1.0,
        min_std=1e-6,
        max_std=None,
        std_parameterization="exp",
        bias=True,
        spectral_normalization=0,
    )
    traj_encoder = with_encoder(traj_encoder)  # --spectral_normalization 0: a plain Encoder
    dual_lam = ParameterModule(torch.Tensor([np.log(SETTINGS["dual_lam"])]))
    qf1, qf2 = (
        with_encoder(
            ContinuousMLPQFunctionEx(
                obs_dim=policy_q_input_dim,
                action_dim=ACTION_DIM,
                hidden_sizes=dims,
                hidden_nonlinearity=torch.relu,
            )
        )
        for _ in range(2)
    )
    log_alpha = ParameterModule(torch.Tensor([np.log(SETTINGS["alpha"])]))
    adam = lambda params: torch.optim.Adam([{"params": params, "lr": LR}])  # noqa: E731
    optimizer = OptimizerGroupWrapper(
        optimizers={
            "option_policy": adam(option_policy.parameters()),
            "traj_encoder": adam(traj_encoder.parameters()),
            "dual_lam": adam(dual_lam.parameters()),
            "qf": adam(list(qf1.parameters()) + list(qf2.parameters())),
            "log_alpha": adam(log_alpha.parameters()),
        },
        max_optimization_epochs=None,
    )
    action_space = SimpleNamespace(
        shape=(ACTION_DIM,), low=-np.ones(ACTION_DIM, np.float32), high=np.ones(ACTION_DIM, np.float32)
    )
    algo = METRA(
        env_name="stub",
        algo="metra",
        env_spec=SimpleNamespace(action_space=action_space),
        option_policy=option_policy,
        traj_encoder=traj_encoder,
        skill_dynamics=None,
        dist_predictor=None,
        dual_lam=dual_lam,
        optimizer=optimizer,
        alpha=SETTINGS["alpha"],
        max_path_length=200,
        n_epochs_per_eval=0,
        n_epochs_per_log=1,
        n_epochs_per_tb=1,
        n_epochs_per_save=0,
        n_epochs_per_pt_save=0,
        n_epochs_per_pkl_update=0,
        dim_option=skill,
        num_random_trajectories=0,
        num_video_repeats=0,
        eval_record_video=0,
        video_skip_frames=1,
        eval_plot_axis=None,
        name="METRA",
        device=torch.device("cpu"),
        sample_cpu=1,
        num_train_per_epoch=1,
        sd_batch_norm=0,
        skill_dynamics_obs_dim=OBS_DIM,
        trans_minibatch_size=batch_size(spec),
        trans_optimization_epochs=1,
        discount=SETTINGS["sac_discount"],
        discrete=spec["discrete"],
        unit_length=SETTINGS["unit_length"],
        qf1=qf1,
        qf2=qf2,
        log_alpha=log_alpha,
        tau=SETTINGS["sac_tau"],
        scale_reward=SETTINGS["sac_scale_reward"],
        target_coef=SETTINGS["sac_target_coef"],
        replay_buffer=None,
        min_buffer_size=0,
        inner=SETTINGS["inner"],
        num_alt_samples=100,
        split_group=65536,
        dual_reg=SETTINGS["dual_reg"],
        dual_slack=SETTINGS["dual_slack"],
        dual_dist=SETTINGS["dual_dist"],
        pixel_shape=PIXEL_SHAPE if spec["encoder"] else None,
    )
    return algo


def batch_size(spec: dict) -> int:
    return PIXEL_BATCH_SIZE if spec["encoder"] else BATCH_SIZE


def policy_module(algo):
    """The policy's Gaussian module (inside ``WithEncoder`` on pixels)."""
    module = algo.option_policy._module
    return module.module if hasattr(module, "encoder") else module


def modules(algo) -> dict[str, nn.Module]:
    names = (
        "option_policy",
        "traj_encoder",
        "qf1",
        "qf2",
        "target_qf1",
        "target_qf2",
        "log_alpha",
        "dual_lam",
    )
    return {name: getattr(algo, name) for name in names}


# -- recording randomness -----------------------------------------------------------------------
@contextlib.contextmanager
def recording(draws: list[Draw]):
    """Record every standard normal that ``torch.distributions.Normal.rsample`` draws (the
    TanhNormal policy's noise: the critic's next actions, then the actor's actions)."""
    normal_module = sys.modules["torch.distributions.normal"]
    standard_normal = normal_module._standard_normal

    def recorded(shape, dtype, device):
        value = standard_normal(shape, dtype=dtype, device=device)
        caller = reference_caller(METRA_CODE)
        draws.append(
            Draw("standard_normal", value.clone(), caller, lambda: standard_normal(shape, dtype, device))
        )
        return value

    normal_module._standard_normal = recorded
    try:
        yield
    finally:
        normal_module._standard_normal = standard_normal


# -- batches ------------------------------------------------------------------------------------
def pixel_observations(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat (H, W, C) frames, pixel values 0..255, of 8x8-pixel blocks (so the fixture
    compresses), and next frames that differ from them in a few blocks."""
    height, width, channels = PIXEL_SHAPE
    blocks = rng.integers(0, 256, (size, height // 8 + 1, width // 8 + 1, channels))
    following = blocks.copy()
    moved = rng.random(blocks.shape[:3]) < 0.1
    following[moved] = rng.integers(0, 256, (int(moved.sum()), channels))
    frames = [b.repeat(8, axis=1).repeat(8, axis=2)[:, :height, :width] for b in (blocks, following)]
    return tuple(f.reshape(size, -1) for f in frames)


def make_batch(rng: np.random.Generator, spec: dict) -> dict[str, np.ndarray]:
    """One batch as METRA's ``_sample_replay_buffer`` yields it (float32; ``dones`` (B,);
    ``next_options`` equal to ``options``: one skill per path)."""
    skill, size = spec["dim_option"], batch_size(spec)
    dones = np.zeros(size)
    dones[rng.choice(size, 3, replace=False)] = 1.0  # a few transitions end their path
    if spec["discrete"]:
        options = np.eye(skill)[rng.integers(skill, size=size)]
    else:
        options = rng.normal(size=(size, skill))
        options /= np.linalg.norm(options, axis=1, keepdims=True)
    if spec["encoder"]:
        obs, next_obs = pixel_observations(rng, size)
    else:
        obs = rng.normal(size=(size, OBS_DIM))
        next_obs = obs + 0.1 * rng.normal(size=obs.shape)  # consecutive states: short steps
    batch = dict(
        obs=obs,
        next_obs=next_obs,
        actions=rng.uniform(-1.0, 1.0, (size, ACTION_DIM)),
        dones=dones,
        options=options,
        next_options=options,
    )
    return {k: v.astype(np.float32) for k, v in batch.items()}


# -- recording ----------------------------------------------------------------------------------
def record(name: str, spec: dict, root: Path, command: str) -> None:
    torch.manual_seed(SEED)
    algo = build_reference(spec)
    rng = np.random.default_rng(SEED)
    arrays = {f"init/{k}": v for k, v in parameters(SimpleNamespace(**modules(algo))).items()}
    updates, count = [], PIXEL_UPDATES if spec["encoder"] else UPDATES
    for index in range(count):
        batch = make_batch(rng, spec)
        stored = {
            k: v.astype(np.uint8) if k in ("obs", "next_obs") and spec["encoder"] else v
            for k, v in batch.items()
        }
        arrays |= {f"batch{index}/{k}": v for k, v in stored.items()}
        v = {k: torch.from_numpy(value) for k, value in batch.items()}
        tensors: dict[str, torch.Tensor] = {}
        draws: list[Draw] = []
        before = torch.get_rng_state()
        with recording(draws):
            # METRA._train_components, one epoch on this batch
            algo._optimize_te(tensors, v)
            algo._update_rewards(tensors, v)
            algo._optimize_op(tensors, v)
        audit_rng(before, draws)
        prefix = f"update{index}"
        arrays[f"{prefix}/reward"] = v["rewards"].detach().clone()
        metrics = {k: t for k, t in tensors.items() if t.numel() == 1}
        arrays |= {f"{prefix}/metric/{k}": np.float64(scalar(t.reshape(()))) for k, t in metrics.items()}
        arrays |= {f"{prefix}/param/{k}": t for k, t in parameters(SimpleNamespace(**modules(algo))).items()}
        arrays |= {f"{prefix}/draw{j}": d.value for j, d in enumerate(draws)}
        updates.append(
            dict(
                metrics=sorted(metrics),
                draws=[
                    dict(key=f"{prefix}/draw{j}", kind=d.kind, shape=list(d.value.shape), caller=d.caller)
                    for j, d in enumerate(draws)
                ],
            )
        )
    arrays = {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in arrays.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    manifest = dict(
        agent=name,
        repository=REFERENCE.url,
        commit=REFERENCE.commit,
        reference_class="iod.metra.METRA",
        patch=None,
        patch_sha256=None,
        stubbed_imports=sorted(n for n in sys.modules if n in STUBBED),
        command=command,
        generator="scripts/reference/record_metra.py",
        seed=SEED,
        versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__),
        sizes=dict(
            obs_dim=OBS_DIM if not spec["encoder"] else int(np.prod(PIXEL_SHAPE)),
            action_dim=ACTION_DIM,
            hidden_dim=HIDDEN_DIM,
            batch_size=batch_size(spec),
            skill_dim=spec["dim_option"],
            updates=count,
            **(dict(pixel_shape=list(PIXEL_SHAPE), cnn_depth=CNN_DEPTH) if spec["encoder"] else {}),
        ),
        hyperparameters=dict(
            lr=LR,
            discrete=spec["discrete"],
            dim_option=spec["dim_option"],
            encoder=spec["encoder"],
            **SETTINGS,
        ),
        reference_constants=dict(
            target_entropy=algo._target_entropy,
            log_std_min=float(policy_module(algo)._min_std_param),
            log_std_max=float(policy_module(algo)._max_std_param),
        ),
        batch_fields=list(make_batch(np.random.default_rng(0), spec)),
        parameters=sorted(k.removeprefix("init/") for k in arrays if k.startswith("init/")),
        updates=updates,
    )
    (OUT / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = (OUT / f"{name}.npz").stat().st_size
    print(f"{name}: {count} updates, {len(manifest['parameters'])} tensors, {size / 1e3:.0f} kB")


STUBBED = ("akro", "moviepy", "moviepy.editor", "sklearn", "sklearn.decomposition", "dowel", "dowel_wrapper")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metra", type=Path, required=True, help="checkout of seohongpark/METRA")
    parser.add_argument("fixtures", nargs="*", default=list(SPECS), help=f"default: all of {list(SPECS)}")
    args = parser.parse_args()
    root = args.metra.resolve()
    check_checkout(root)
    stub_unused_imports(root)
    torch.set_num_threads(1)
    command = "python scripts/reference/record_metra.py --metra <checkout> " + " ".join(args.fixtures)
    for name in args.fixtures:
        record(name, SPECS[name], root, command)
    for name in args.fixtures:
        if (OUT / f"{name}.npz").stat().st_size > 2e6:
            raise SystemExit(f"{name}.npz exceeds 2 MB: shrink sizes or updates")


if __name__ == "__main__":
    main()
