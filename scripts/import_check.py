"""Import every module of urlb, agents and envs in this interpreter and list any dev-only or
GPU-only package that got loaded (issue 23): a GPU node or a user's venv with only the runtime
dependencies must be able to ``import urlb, agents, envs`` and build an env.

    python scripts/import_check.py     # prints "N modules; dev-only or GPU-only loaded: []"

Used by ``tests/test_install.py`` (slow) and ``scripts/check_install.sh`` (a venv with the runtime
dependencies only). Exits 1 when a dev-only or GPU-only package was loaded.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

DEV_ONLY = ("dm_control", "labmaze", "pytest", "minari", "rliable", "pandas", "imageio", "ruff")
GPU_ONLY = ("warp", "mujoco_warp")  # the warp backend imports them when it is built


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import agents
    import envs
    import urlb

    names = []
    for package in (urlb, agents, envs):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.startswith("envs.reference"):  # dm_control's tasks, URLB's rollouts: dev
                continue
            importlib.import_module(info.name)
            names.append(info.name)
    import envs.models

    envs.models.dm_control_available = lambda: False  # as where dm-control is not installed
    from envs import make_env

    make_env("jaco_reach_top_left", 2, backend="cpu").reset()
    loaded = sorted({name.split(".")[0] for name in sys.modules} & set(DEV_ONLY + GPU_ONLY))
    print(len(names), "modules; dev-only or GPU-only loaded:", loaded)
    return 1 if loaded else 0


if __name__ == "__main__":
    sys.exit(main())
