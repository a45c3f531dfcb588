#!/usr/bin/env bash
# The test command: set up .venv, lint, run the test suite (CPU only; GPU tests skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# Warp compiles its kernels once per machine into this folder (tens of seconds per model).
export URLB_WARP_CACHE="${URLB_WARP_CACHE:-$HOME/.cache/urlb/warp}"
ruff check .
ruff format --check .
# The layer rules of pyproject.toml ([tool.importlinter]): envs, agents, urlb.* import only downward.
lint-imports
# Two workers (pytest-xdist): the machine's two cores; URLB_TEST_WORKERS=0 runs serially.
python -m pytest -q -n "${URLB_TEST_WORKERS:-2}" --durations=12 "$@"
