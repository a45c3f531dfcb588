#!/usr/bin/env bash
# Rehearse a visit to the offline GPU node on a machine without a GPU (issue 23), so that the
# node's minutes go to measuring: check the ahead-of-time kernels, pack the bundle, deliver its
# parts one at a time into a "node" folder, install it with a Python like the node's, check that
# the CUBINs are where that Python's Warp looks, and run scripts/gpu_check.sh on the CPU.
#
#   python scripts/gpu/aot.py --out build/gpu/warp-cache          # once: record and compile
#   NODE_PYTHON=/path/to/python3.12 bash scripts/gpu/rehearse.sh   # log: build/gpu/rehearsal/log.txt
#
# NODE_PYTHON: Python 3.12 with torch and nothing of MuJoCo, Warp, tensordict, Hydra or
# dm-control, as the node has (numpy, matplotlib, tensorboard, PyYAML, absl-py, etils).
# The CPU objects of aot.py's recording (build/gpu/warp-cpu-cache) are copied into the installed
# kernel cache: the node compiles nothing for its CPU, and the rehearsal need not either.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODE_PYTHON=${NODE_PYTHON:?set NODE_PYTHON to a Python like the node\'s}
WORK=build/gpu/rehearsal CPU_CACHE=build/gpu/warp-cpu-cache
rm -rf "$WORK" && mkdir -p "$WORK/node/bundle"
exec > >(tee "$WORK/log.txt") 2>&1
step() { echo; echo "== $(date -u +%T) $*"; }

step "1. a fresh process finds every recorded module's sm_90 CUBIN (here: $(python -V 2>&1))"
python scripts/gpu/aot.py --out build/gpu/warp-cache --cpu-cache "$CPU_CACHE" --check

step "2. pack"
python scripts/gpu/pack.py --aot build/gpu/warp-cache --out build/gpu/bundle

step "3. deliver the parts one at a time; the node checks each as it arrives"
cp build/gpu/bundle/bundle.json build/gpu/bundle/SHA256SUMS "$WORK/node/bundle/"
for part in build/gpu/bundle/bundle.tar.xz.part-*; do
  cp "$part" "$WORK/node/bundle/"
  "$NODE_PYTHON" scripts/gpu/unpack.py "$WORK/node/bundle" || echo "(more parts to come)"
done

step "4. install into a target folder ($("$NODE_PYTHON" -V 2>&1), torch $("$NODE_PYTHON" -c 'import torch; print(torch.__version__)'))"
"$NODE_PYTHON" scripts/gpu/unpack.py "$WORK/node/bundle" --target "$WORK/node/installed"
mkdir -p "$WORK/node/installed/warp-cache"
cp -r "$CPU_CACHE"/. "$WORK/node/installed/warp-cache/"  # rehearsal only: CPU objects

step "5. under the node's Python, every module's CUBIN is where Warp will look"
PYTHONPATH="$PWD/$WORK/node/installed/site:$PWD" "$NODE_PYTHON" scripts/gpu/aot.py \
  --out "$WORK/node/installed/warp-cache" --cpu-cache "$WORK/node/installed/warp-cache" --check

step "6. the check, device forced to cpu, a few worlds"
PYTHON=$NODE_PYTHON bash scripts/gpu_check.sh --bundle "$WORK/node/bundle" --target "$WORK/node/installed" \
  --device cpu --quick --worlds "2 4" --pixel-worlds "2" --out "$WORK/node/out"
step "done: $WORK/log.txt, the check's folder $WORK/node/out"
