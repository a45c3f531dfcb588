#!/usr/bin/env bash
# Install checks of issue 23, each in a fresh venv under build/install_check (log: log.txt there):
#   1. Python 3.11, the README's path: the pinned CPU torch first, then pip install -e ".[dev]";
#   2. Python 3.11, pip install --no-deps -e . plus the runtime dependencies only (no torch
#      resolution: the torch wheel first), then scripts/import_check.py: every module imports
#      and an env steps with no dev-only or GPU-only package loaded;
#   3. Pythons 3.10, 3.12 and 3.13 (pyenv's, where present): what pip resolves for the package
#      (--dry-run --report), and on 3.12 the torch-free modules (envs.tasks, urlb.run.resolvers).
# Run by hand (minutes; installs from the local registries): bash scripts/check_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD WORK=build/install_check
rm -rf "$WORK" && mkdir -p "$WORK"
exec > >(tee "$WORK/log.txt") 2>&1
step() { echo; echo "== $(date -u +%T) $*"; }
quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
PY311=${PY311:-python3.11}

step "1. README path: $($PY311 -V), torch==2.13.0 (CPU wheel) then -e .[dev]"
$PY311 -m venv "$WORK/readme"
quiet "$WORK/readme/bin/pip" install -q torch==2.13.0
quiet "$WORK/readme/bin/pip" install -q -e ".[dev]"
"$WORK/readme/bin/pip" check && echo "pip check: consistent"
"$WORK/readme/bin/python" scripts/import_check.py

step "2. --no-deps -e . plus the runtime dependencies only"
$PY311 -m venv "$WORK/runtime"
quiet "$WORK/runtime/bin/pip" install -q torch==2.13.0
quiet "$WORK/runtime/bin/pip" install -q --no-deps -e .
"$WORK/runtime/bin/python" - > "$WORK/runtime_deps.txt" <<'PY'
import re, tomllib
for line in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower() != "torch":  # the CPU wheel, first
        print(line)
PY
cat "$WORK/runtime_deps.txt"
quiet "$WORK/runtime/bin/pip" install -q -r "$WORK/runtime_deps.txt"
"$WORK/runtime/bin/pip" check && echo "pip check: consistent"
"$WORK/runtime/bin/pip" list 2>/dev/null | grep -iE "^(dm.control|labmaze|pytest|ruff|minari|rliable|pandas|imageio) " \
  && { echo "dev-only packages installed by the runtime dependencies"; exit 1; } || echo "no dev-only package installed"
(cd /tmp && "$ROOT/$WORK/runtime/bin/python" "$ROOT/scripts/import_check.py")

step "3. other Pythons: what pip resolves"
for v in 3.10 3.12 3.13; do
  py=$(ls -d ~/.pyenv/versions/$v.*/bin/python 2>/dev/null | tail -1 || true)
  [ -n "$py" ] || { echo "python $v: not on this machine"; continue; }
  "$py" -m venv "$WORK/meta$v"
  quiet "$WORK/meta$v/bin/pip" install -q --upgrade pip
  quiet "$WORK/meta$v/bin/pip" install -q --dry-run --report "$WORK/meta$v.json" .
  "$WORK/meta$v/bin/python" - "$WORK/meta$v.json" <<'PY'
import json, sys
got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
keys = ["urlb", "torch", "mujoco", "mujoco-warp", "warp-lang", "tensordict", "torchrl", "hydra-core", "numpy"]
print(sys.version.split()[0], {k: got.get(k) for k in keys})
PY
done
py312=$(ls -d ~/.pyenv/versions/3.12.*/bin/python 2>/dev/null | tail -1 || true)
if [ -n "$py312" ]; then
  quiet "$WORK/meta3.12/bin/pip" install -q omegaconf
  (cd /tmp && PYTHONPATH="$ROOT" "$ROOT/$WORK/meta3.12/bin/python" -c "
import sys, envs.tasks, urlb.run.resolvers
print('python', sys.version.split()[0], 'imports envs.tasks and urlb.run.resolvers:', len(envs.tasks.TASKS), 'tasks,', 'torch loaded' if 'torch' in sys.modules else 'no torch')")
fi
step "done: $WORK/log.txt"
