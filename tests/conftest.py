"""Test setup: headless rendering and a fixed Warp kernel cache, set before anything
imports MuJoCo's GL layer or Warp (tests may set process state; the library may not)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("URLB_WARP_CACHE", str(ROOT / ".cache" / "warp"))
# One torch thread, as the entry points use (``threads: 1``): OpenMP's spinning workers slow
# small ops (orthogonal inits, tiny updates) many times over when the cores are shared with
# MuJoCo's thread pool or another process.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    return DATA
