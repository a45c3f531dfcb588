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


def test_python_and_torch_ranges_hold_what_was_tested():
    python = SpecifierSet(PROJECT["requires-python"])
    assert all(v in python for v in ("3.10.0", "3.11.7", "3.12.3", "3.13.0"))
    torch = next(Requirement(r) for r in PROJECT["dependencies"] if r.startswith("torch"))
    assert all(torch.specifier.contains(v) for v in ("2.11.0", "2.13.0"))  # the GPU node's, setup.sh's
    names = {Requirement(r).name for r in PROJECT["dependencies"]}
    assert "dm-control" not in names  # envs/models/ holds the models without it


@pytest.mark.slow  # a fresh interpreter importing every module: about 20 s, more on a busy machine
def test_everything_imports_without_dev_or_gpu_only_modules():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_check.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count, loaded = done.stdout.split(" modules; dev-only or GPU-only loaded: ")
    assert int(count) > 50 and loaded.strip() == "[]"
