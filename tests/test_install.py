"""What installing the package needs (issue 23): the metadata's ranges, and nothing dev-only or
GPU-only imported when urlb, agents and envs load (a GPU node or a user's venv has neither)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEV_ONLY = ("dm_control", "labmaze", "pytest", "minari", "rliable", "pandas", "imageio", "ruff")
GPU_ONLY = ("warp", "mujoco_warp")  # the warp backend imports them when it is built


def test_python_and_torch_ranges_hold_what_was_tested():
    python = SpecifierSet(PROJECT["requires-python"])
    assert all(v in python for v in ("3.10.0", "3.11.7", "3.12.3", "3.13.0"))
    torch = next(Requirement(r) for r in PROJECT["dependencies"] if r.startswith("torch"))
    assert all(torch.specifier.contains(v) for v in ("2.11.0", "2.13.0"))  # the GPU node's, setup.sh's
    names = {Requirement(r).name for r in PROJECT["dependencies"]}
    assert "dm-control" not in names  # envs/models/ holds the models without it


IMPORT_ALL = f"""
import importlib, pkgutil, sys
import urlb, agents, envs
names = []
for package in (urlb, agents, envs):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.startswith("envs.reference"):  # dm_control's reference tasks and URLB's rollouts: dev
            continue
        importlib.import_module(info.name)
        names.append(info.name)
import envs.models
envs.models.dm_control_available = lambda: False  # as where dm-control is not installed
from envs import make_env
make_env("jaco_reach_top_left", 2, backend="cpu").reset()
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({DEV_ONLY + GPU_ONLY!r}))
print(len(names), "modules; dev-only or GPU-only loaded:", loaded)
"""


@pytest.mark.slow  # a fresh interpreter importing every module: about 20 s, more on a busy machine
def test_everything_imports_without_dev_or_gpu_only_modules():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count, loaded = done.stdout.split(" modules; dev-only or GPU-only loaded: ")
    assert int(count) > 50 and loaded.strip() == "[]"
